package push

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Reloader is a Target whose credentials come from files (the client
// config written by silo login, a netrc file) and are re-read when those
// files change, so that a long-running queue uses a new token at once.
type Reloader interface {
	// ReloadCredentials re-reads the credentials now and reports whether
	// they changed since they were last read.
	ReloadCredentials() (changed bool, err error)
}

var _ Reloader = (*httpTarget)(nil)

// ReloadCredentials implements Reloader: changed reports a change since
// the previous call (or since the target was opened), whether this call
// or a request saw it first. Without TargetOptions.Reload it does nothing.
func (t *httpTarget) ReloadCredentials() (changed bool, err error) {
	c := t.creds
	if c == nil {
		return false, nil
	}
	err = c.reload(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = c.ident != c.reported
	c.reported = c.ident
	return changed, err
}

// credentials are re-read from the client config and netrc file whenever
// either file changes (checked before every request), or when forced.
type credentials struct {
	nameOrURL string
	getenv    func(string) string
	opts      TargetOptions // Token, if set, is fixed
	url       *url.URL      // resolved at start; the target is bound to it

	mu       sync.Mutex
	stamp    string // identity of the files when last read
	ident    string // identity of the credentials when last read
	reported string // ident at the last ReloadCredentials
	apply    func(*http.Request)
	err      error
}

// files returns the client config and netrc file the credentials come from.
func (c *credentials) files() []string {
	var files []string
	if p, err := ClientConfigPath(c.getenv); err == nil {
		files = append(files, p)
	}
	netrc := c.opts.NetrcFile
	if netrc == "" {
		netrc = os.Getenv("NETRC")
	}
	if netrc == "" {
		if home, _ := os.UserHomeDir(); home != "" {
			netrc = filepath.Join(home, ".netrc")
		}
	}
	if netrc != "" {
		files = append(files, netrc)
	}
	return files
}

// stampOf identifies the current versions of files: a change of size,
// modification time or inode (an atomic rename) shows.
func stampOf(files []string) string {
	var b strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "%s:none;", f)
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%s:%d:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	return b.String()
}

// current returns how to authenticate a request now.
func (c *credentials) current() (func(*http.Request), error) {
	if err := c.reload(false); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.apply, nil
}

// reload re-reads the credentials if forced or a file changed. When they
// cannot be read, the last good ones stay in use and the error is kept.
func (c *credentials) reload(force bool) error {
	files := c.files()
	stamp := stampOf(files)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && stamp == c.stamp && c.apply != nil {
		return c.err
	}
	apply, ident, err := c.read()
	c.stamp = stamp
	if err != nil {
		c.err = err
		if c.apply == nil {
			c.apply = func(*http.Request) {}
		}
		return err
	}
	c.apply, c.ident, c.err = apply, ident, nil
	return nil
}

func (c *credentials) read() (func(*http.Request), string, error) {
	opts := c.opts
	if opts.Token == "" && !strings.Contains(c.nameOrURL, "://") {
		path, err := ClientConfigPath(c.getenv)
		if err != nil {
			return nil, "", err
		}
		cfg, err := LoadClientConfig(path)
		if err != nil {
			return nil, "", err
		}
		u, token, err := cfg.Resolve(c.nameOrURL)
		if err != nil {
			return nil, "", fmt.Errorf("%w (client config: %s)", err, path)
		}
		if strings.TrimRight(u, "/") != strings.TrimRight(c.url.String(), "/") {
			return nil, "", fmt.Errorf("silo login changed the URL of %s from %s to %s: restart to push there", c.nameOrURL, c.url, u)
		}
		opts.Token = token
	} else if opts.Token == "" {
		if path, err := ClientConfigPath(c.getenv); err == nil {
			if cfg, err := LoadClientConfig(path); err == nil {
				_, opts.Token, _ = cfg.Resolve(c.nameOrURL)
			}
		}
	}
	return authFor(c.url, &opts)
}
