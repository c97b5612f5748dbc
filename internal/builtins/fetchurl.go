package builtins

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
)

// FetchOptions are the daemon settings builtin:fetchurl uses.
type FetchOptions struct {
	// HashedMirrors are tried first for flat fixed-output fetches, as
	// <mirror>/<algo>/<base16 hash> (hashed-mirrors).
	HashedMirrors []string
	// Netrc is the contents of netrc-file (credentials for HTTP hosts).
	Netrc string
	// ConnectTimeout bounds connecting (connect-timeout; 0 = 30s).
	ConnectTimeout time.Duration
}

// Fetchurl is builtin:fetchurl: download "url" (http, https or file) to
// "out", restoring it as a NAR when "unpack" is "1" (xz-decompressed if
// the URL ends in .xz) and making it executable when "executable" is "1".
// TLS certificates are not verified, as in Nix: the caller checks the
// fixed-output hash of the result.
func Fetchurl(ctx context.Context, env map[string]string, o FetchOptions) error {
	out, err := attr(env, "out")
	if err != nil {
		return err
	}
	mainURL, err := attr(env, "url")
	if err != nil {
		return err
	}
	unpack := env["unpack"] == "1"
	fetch := func(u string) error {
		body, err := open(ctx, u, o)
		if err != nil {
			return err
		}
		defer body.Close()
		var r io.Reader = body
		if unpack && strings.HasSuffix(mainURL, ".xz") {
			xr, err := compress.NewReader(compress.XZ, body)
			if err != nil {
				return err
			}
			defer xr.Close()
			r = xr
		}
		if unpack {
			if err := nar.Restore(ctx, r, out); err != nil {
				return fmt.Errorf("unpacking '%s': %w", u, err)
			}
		} else {
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				os.Remove(out)
				return fmt.Errorf("unable to download '%s': %w", u, err)
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
		if env["executable"] == "1" {
			if err := os.Chmod(out, 0o755); err != nil {
				return fmt.Errorf("making '%s' executable: %w", out, err)
			}
		}
		return nil
	}
	if mode, _ := attr(env, "outputHashMode"); mode == "flat" && len(o.HashedMirrors) > 0 {
		if h, err := parseOutputHash(env); err == nil {
			for _, m := range o.HashedMirrors {
				if !strings.HasSuffix(m, "/") {
					m += "/"
				}
				if err := fetch(m + h.Algo().String() + "/" + h.Base16()); err == nil {
					return nil
				}
				os.RemoveAll(out) // a partial attempt
			}
		}
	}
	return fetch(mainURL)
}

func parseOutputHash(env map[string]string) (hash.Hash, error) {
	hs, err := attr(env, "outputHash")
	if err != nil {
		return hash.Hash{}, err
	}
	if a, ok := env["outputHashAlgo"]; ok && a != "" {
		algo, err := hash.ParseAlgo(a)
		if err != nil {
			return hash.Hash{}, err
		}
		return hash.ParseAs(hs, algo)
	}
	return hash.Parse(hs)
}

// open returns the body of a URL.
func open(ctx context.Context, raw string, o FetchOptions) (io.ReadCloser, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("unable to download '%s': %w", raw, err)
	}
	switch u.Scheme {
	case "file":
		f, err := os.Open(u.Path)
		if err != nil {
			return nil, fmt.Errorf("unable to download '%s': %w", raw, err)
		}
		return f, nil
	case "http", "https":
	default:
		return nil, fmt.Errorf("unable to download '%s': unsupported URL scheme", raw)
	}
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // the hash is checked afterwards, as in Nix
	tr.TLSHandshakeTimeout = timeout
	tr.ResponseHeaderTimeout = 5 * time.Minute
	tr.DisableCompression = true // Nix: request.decompress = false
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, err
	}
	if user, pass, ok := netrcLookup(o.Netrc, u.Hostname()); ok {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unable to download '%s': %w", raw, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("unable to download '%s': HTTP error %d", raw, resp.StatusCode)
	}
	return resp.Body, nil
}

// netrcLookup finds the login and password for host in netrc text
// (machine/default entries, as curl reads them).
func netrcLookup(netrc, host string) (string, string, bool) {
	var fields []string
	sc := bufio.NewScanner(strings.NewReader(netrc))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		fields = append(fields, strings.Fields(line)...)
	}
	var user, pass string
	matched, found := false, false
	for i := 0; i < len(fields); i++ {
		switch fields[i] {
		case "machine":
			if found {
				return user, pass, true
			}
			matched = i+1 < len(fields) && fields[i+1] == host
			i++
		case "default":
			if found {
				return user, pass, true
			}
			matched = true
		case "login":
			if matched && i+1 < len(fields) {
				user, found = fields[i+1], true
			}
			i++
		case "password":
			if matched && i+1 < len(fields) {
				pass, found = fields[i+1], true
			}
			i++
		}
	}
	return user, pass, found
}
