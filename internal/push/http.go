package push

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silo-cache/silo/internal/storepath"
)

// missingBatch bounds the hash parts sent in one POST to the silo server's
// batch endpoint.
const missingBatch = 2000

// headJobs bounds concurrent narinfo HEADs against caches without the
// batch endpoint.
const headJobs = 16

// httpTarget is a cache reached over HTTP: a silo server (which also
// answers POST _silo/missing) or any Nix binary cache accepting PUT.
type httpTarget struct {
	base      *url.URL // without trailing slash, without credentials
	client    *http.Client
	auth      func(*http.Request)
	creds     *credentials // when set, re-read credentials instead of auth
	userAgent string
	noBatch   atomic.Bool // the server answered 404 to _silo/missing
	silo      atomic.Bool // the server answered _silo/missing: a silo server
}

// StreamsNARs is true once the server answered the batch endpoint only a
// silo server has; silo serve verifies every NAR it receives (NarHash and
// NarSize against the narinfo that later names it) and accepts chunked
// uploads under any nar/ name.
func (t *httpTarget) StreamsNARs() bool { return t.silo.Load() }

func newHTTPTarget(u *url.URL, opts *TargetOptions) (*httpTarget, error) {
	base := *u
	base.User = nil
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = ""
	t := &httpTarget{
		base: &base,
		client: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}},
		userAgent: opts.UserAgent,
	}
	if t.userAgent == "" {
		t.userAgent = "silo"
	}
	var err error
	t.auth, _, err = authFor(u, opts)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// authFor returns how requests to u authenticate, and a string that
// changes when the credentials do: the Bearer token of opts, else the
// URL's user info, else the host's netrc entry, else nothing.
func authFor(u *url.URL, opts *TargetOptions) (apply func(*http.Request), ident string, err error) {
	switch {
	case opts.Token != "":
		tok := opts.Token
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, "bearer " + tok, nil
	case u.User != nil:
		user := u.User.Username()
		pass, _ := u.User.Password()
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }, "basic " + user + ":" + pass, nil
	}
	login, pass, ok, err := netrcLookup(opts.NetrcFile, u.Hostname())
	if err != nil {
		return nil, "", err
	}
	if ok {
		return func(r *http.Request) { r.SetBasicAuth(login, pass) }, "netrc " + login + ":" + pass, nil
	}
	return func(*http.Request) {}, "", nil
}

func (t *httpTarget) String() string { return t.base.String() }

func (t *httpTarget) url(rel string) string { return t.base.String() + "/" + rel }

func (t *httpTarget) do(ctx context.Context, method, rel string, body io.Reader, size int64, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.url(rel), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, t.url(rel), err)
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", t.userAgent)
	if t.creds != nil {
		apply, err := t.creds.current()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, t.url(rel), err)
		}
		apply(req)
	} else {
		t.auth(req)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, t.url(rel), err)
	}
	return resp, nil
}

// statusError describes an unexpected response, with the start of its body.
func statusError(method, u string, resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	text := strings.TrimSpace(string(msg))
	if text != "" {
		text = ": " + oneLine(text)
	}
	err := fmt.Errorf("%s %s: %s%s", method, u, resp.Status, text)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w (%w; check the token saved by silo login, or the netrc file)", err, ErrUnauthorized)
	}
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func (t *httpTarget) Init(ctx context.Context, dir storepath.Dir) error {
	resp, err := t.do(ctx, http.MethodGet, "nix-cache-info", nil, 0, "")
	if err != nil {
		return fmt.Errorf("reach cache: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", t.url("nix-cache-info"), err)
		}
		return checkCacheInfo(t.url("nix-cache-info"), string(body), dir)
	case http.StatusNotFound:
		drain(resp)
		info := cacheInfo(dir)
		return t.PutFile(ctx, "nix-cache-info", typeCacheInfo, int64(len(info)),
			func() (io.Reader, error) { return strings.NewReader(info), nil })
	}
	defer drain(resp)
	return statusError(http.MethodGet, t.url("nix-cache-info"), resp)
}

func (t *httpTarget) Missing(ctx context.Context, hashParts []string) ([]string, error) {
	if !t.noBatch.Load() {
		var missing []string
		for start := 0; start < len(hashParts); start += missingBatch {
			chunk := hashParts[start:min(start+missingBatch, len(hashParts))]
			m, ok, err := t.missingBatch(ctx, chunk)
			if err != nil {
				return nil, err
			}
			if !ok {
				t.noBatch.Store(true)
				return t.missingByHead(ctx, hashParts)
			}
			missing = append(missing, m...)
		}
		t.silo.Store(len(hashParts) > 0)
		return missing, nil
	}
	return t.missingByHead(ctx, hashParts)
}

// missingBatch asks a silo server's batch endpoint; ok is false if the
// server does not have one.
func (t *httpTarget) missingBatch(ctx context.Context, hashParts []string) (missing []string, ok bool, err error) {
	body := strings.Join(hashParts, "\n") + "\n"
	resp, err := t.do(ctx, http.MethodPost, "_silo/missing", strings.NewReader(body), int64(len(body)), "text/plain")
	if err != nil {
		return nil, false, fmt.Errorf("ask cache for missing paths: %w", err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return nil, false, nil
	default:
		return nil, false, statusError(http.MethodPost, t.url("_silo/missing"), resp)
	}
	asked := make(map[string]bool, len(hashParts))
	for _, h := range hashParts {
		asked[h] = true
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		h := strings.TrimSpace(sc.Text())
		if h == "" {
			continue
		}
		if !asked[h] {
			return nil, false, fmt.Errorf("POST %s: answered %q, which was not asked", t.url("_silo/missing"), h)
		}
		missing = append(missing, h)
	}
	if err := sc.Err(); err != nil {
		return nil, false, fmt.Errorf("POST %s: read answer: %w", t.url("_silo/missing"), err)
	}
	return missing, true, nil
}

func (t *httpTarget) missingByHead(ctx context.Context, hashParts []string) ([]string, error) {
	present := make([]bool, len(hashParts))
	errs := make([]error, len(hashParts))
	sem := make(chan struct{}, headJobs)
	var wg sync.WaitGroup
	for i, h := range hashParts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			present[i], errs[i] = t.HasFile(ctx, h+".narinfo")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var missing []string
	for i, h := range hashParts {
		if !present[i] {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

func (t *httpTarget) HasFile(ctx context.Context, rel string) (bool, error) {
	resp, err := t.do(ctx, http.MethodHead, rel, nil, 0, "")
	if err != nil {
		return false, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound, http.StatusGone:
		return false, nil
	}
	return false, statusError(http.MethodHead, t.url(rel), resp)
}

// PutFile uploads with a known Content-Length, so a server never takes a
// truncated body for a whole one, and retries transient failures. A size
// of -1 sends the body chunked; only for silo servers, which check what
// they receive is a whole compressed NAR (a truncated zstd frame fails).
func (t *httpTarget) PutFile(ctx context.Context, rel, contentType string, size int64, open func() (io.Reader, error)) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("upload %s: %w (after: %w)", t.url(rel), ctx.Err(), err)
			case <-time.After(time.Duration(attempt*attempt) * 300 * time.Millisecond):
			}
		}
		var retry bool
		retry, err = t.putOnce(ctx, rel, contentType, size, open)
		if err == nil || !retry || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (t *httpTarget) putOnce(ctx context.Context, rel, contentType string, size int64, open func() (io.Reader, error)) (retry bool, err error) {
	body, err := open()
	if err != nil {
		return false, fmt.Errorf("upload %s: %w", t.url(rel), err)
	}
	resp, err := t.do(ctx, http.MethodPut, rel, body, size, contentType)
	if err != nil {
		return true, fmt.Errorf("upload: %w", err)
	}
	defer drain(resp)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return true, statusError(http.MethodPut, t.url(rel), resp)
	}
	return false, statusError(http.MethodPut, t.url(rel), resp)
}
