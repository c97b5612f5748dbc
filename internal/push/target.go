package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/silo-cache/silo/internal/storepath"
)

// Target is a binary cache that paths are pushed to.
type Target interface {
	// Init checks that the cache serves store directory dir, creating its
	// nix-cache-info if it has none (as Nix does).
	Init(ctx context.Context, dir storepath.Dir) error
	// Missing returns those of hashParts whose narinfo the cache lacks, in
	// the order given.
	Missing(ctx context.Context, hashParts []string) ([]string, error)
	// HasFile reports whether the cache holds the file at rel ("nar/...").
	HasFile(ctx context.Context, rel string) (bool, error)
	// PutFile stores size bytes read from body at rel, all or nothing:
	// after an error or cancellation the cache does not serve a partial
	// file at rel. body is read from the start on each attempt (open
	// returns a fresh reader). size is -1 when unknown, which only a
	// target whose StreamsNARs is true is asked to take.
	PutFile(ctx context.Context, rel, contentType string, size int64, open func() (io.Reader, error)) error
	// String returns the target's URL without credentials.
	String() string
}

// narStreamer is a Target that takes a NAR of unknown length under any
// nar/ name and verifies it itself before any narinfo may name it (a silo
// server): push streams NARs to it as they are compressed, with no
// temporary file and no FileHash, which would need the whole file first.
type narStreamer interface {
	// StreamsNARs reports whether the target is known to be such a
	// cache; it is decided by Missing.
	StreamsNARs() bool
}

// Content types Nix uses for uploads.
const (
	typeNarInfo   = "text/x-nix-narinfo"
	typeNAR       = "application/x-nix-nar"
	typeCacheInfo = "text/x-nix-cache-info"
)

// ErrUnauthorized is wrapped by errors about a cache refusing our
// credentials (HTTP 401 or 403).
var ErrUnauthorized = errors.New("the cache refused the credentials")

// TargetOptions configures OpenTarget. The zero value is ready to use.
type TargetOptions struct {
	// Token is sent as "Authorization: Bearer TOKEN" to HTTP caches.
	// Empty: look the host up in NetrcFile.
	Token string
	// NetrcFile is a netrc file whose "machine HOST ... password P" entry
	// supplies HTTP Basic credentials, as Nix's netrc-file does. Empty:
	// $NETRC, else ~/.netrc; a missing file means no credentials.
	NetrcFile string
	// UserAgent is sent to HTTP caches; empty means "silo".
	UserAgent string
	// Reload (for ResolveTarget) re-reads the token saved by silo login
	// and the netrc file whenever they change, before each request, so
	// that a long-running process uses new credentials at once.
	Reload bool
}

// OpenTarget returns the target for a cache URL: http:// or https:// (a
// silo server or any Nix binary cache that accepts PUT) or file:///DIR (a
// directory Nix reads as a binary cache).
func OpenTarget(rawURL string, opts *TargetOptions) (Target, error) {
	if opts == nil {
		opts = &TargetOptions{}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cache URL %q: %w", rawURL, err)
	}
	if len(u.Query()) > 0 {
		return nil, fmt.Errorf("cache URL %q: query parameters are not supported (silo always uploads zstd-compressed NARs)", rawURL)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("cache URL %q has no host", rawURL)
		}
		t, err := newHTTPTarget(u, opts)
		if err != nil {
			return nil, err
		}
		return t, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("cache URL %q: file URLs name a local directory, file:///DIR", rawURL)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("cache URL %q: want an absolute directory, file:///DIR", rawURL)
		}
		return &fileTarget{dir: u.Path}, nil
	case "":
		return nil, fmt.Errorf("cache %q is neither a URL (http://, https://, file:///) nor a name saved with silo login", rawURL)
	}
	return nil, fmt.Errorf("cache URL %q: unsupported scheme %q (want http, https or file)", rawURL, u.Scheme)
}

// cacheInfo is the nix-cache-info silo writes for a new cache.
func cacheInfo(dir storepath.Dir) string {
	return "StoreDir: " + string(dir) + "\n"
}

// checkCacheInfo checks an existing nix-cache-info's StoreDir.
func checkCacheInfo(where string, body string, dir storepath.Dir) error {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "StoreDir:"); ok {
			if got := strings.TrimSpace(v); got != string(dir) {
				return fmt.Errorf("%s serves store directory %s, but the paths pushed are in %s", where, got, dir)
			}
		}
	}
	return nil
}
