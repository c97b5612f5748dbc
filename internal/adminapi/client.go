package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/auth"
)

// Client calls the API of the silo server at a base URL.
type Client struct {
	base  string // without trailing slash
	token string
	http  *http.Client
}

// NewClient returns a client for the server at base (http://HOST:PORT,
// or with the path prefix a reverse proxy adds) sending token, if not empty.
func NewClient(base, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://HOST:PORT or https://HOST", base)
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token,
		http: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// String returns the server's URL.
func (c *Client) String() string { return c.base }

func (c *Client) do(ctx context.Context, method, rel string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + Prefix + rel
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("reach silo server %s: %v (is it running, and is the URL right?)", c.base, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("%s %s: read answer: %v", method, u, err)}
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		} else if resp.StatusCode == http.StatusNotFound {
			return &Error{Kind: ErrNoAPI, Msg: fmt.Sprintf("%s has no silo admin API (%s %s: %s; is it a silo server, and the URL its root, without a cache name?)", c.base, method, u, resp.Status)}
		}
		kind := ErrUnavailable
		switch resp.StatusCode {
		case http.StatusBadRequest:
			kind = ErrInvalid
		case http.StatusUnauthorized:
			kind = ErrUnauthorized
			msg += " (give an admin token with --token-file, or the name of a silo login entry with --server)"
		case http.StatusForbidden:
			kind = ErrForbidden
		case http.StatusNotFound:
			kind = ErrNotFound
		case http.StatusConflict:
			kind = ErrExists
		}
		return &Error{Kind: kind, Msg: fmt.Sprintf("%s: %s", c.base, msg)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("%s %s: bad answer: %v", method, u, err)}
		}
	}
	return nil
}

func (c *Client) CreateCache(ctx context.Context, spec CacheSpec) (CacheInfo, error) {
	var out CacheInfo
	return out, c.do(ctx, http.MethodPost, "caches", spec, &out)
}

func (c *Client) Caches(ctx context.Context) ([]CacheInfo, error) {
	var out []CacheInfo
	return out, c.do(ctx, http.MethodGet, "caches", nil, &out)
}

func (c *Client) Cache(ctx context.Context, name string) (CacheInfo, error) {
	var out CacheInfo
	return out, c.do(ctx, http.MethodGet, "caches/"+url.PathEscape(name), nil, &out)
}

func (c *Client) DeleteCache(ctx context.Context, name string, dryRun bool) (DeleteResult, error) {
	var out DeleteResult
	rel := "caches/" + url.PathEscape(name)
	if dryRun {
		rel += "?dry_run=1"
	}
	return out, c.do(ctx, http.MethodDelete, rel, nil, &out)
}

func (c *Client) CreateToken(ctx context.Context, spec TokenSpec) (NewToken, error) {
	var out NewToken
	return out, c.do(ctx, http.MethodPost, "tokens", spec, &out)
}

func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out []TokenInfo
	return out, c.do(ctx, http.MethodGet, "tokens", nil, &out)
}

func (c *Client) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
	if full, err := auth.ID(id); err == nil {
		id = full // never send a token's secret in a URL
	}
	var out TokenInfo
	return out, c.do(ctx, http.MethodDelete, "tokens/"+url.PathEscape(id), nil, &out)
}

func (c *Client) Whoami(ctx context.Context) (Whoami, error) {
	var out Whoami
	return out, c.do(ctx, http.MethodGet, "whoami", nil, &out)
}
