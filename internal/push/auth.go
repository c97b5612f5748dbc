package push

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// ClientConfig is silo's client configuration: caches saved by silo login.
// It lives in client.toml under $XDG_CONFIG_HOME/silo (or ~/.config/silo),
// mode 0600 because it holds tokens.
type ClientConfig struct {
	Caches map[string]CacheEntry `toml:"cache"`
}

// CacheEntry is one saved cache.
type CacheEntry struct {
	URL   string `toml:"url"`
	Token string `toml:"token,omitempty"`
}

// ClientConfigPath returns where the client config lives for an
// environment (getenv is os.Getenv or a test's substitute).
func ClientConfigPath(getenv func(string) string) (string, error) {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "silo", "client.toml"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "silo", "client.toml"), nil
	}
	return "", errors.New("neither $XDG_CONFIG_HOME nor $HOME is set: cannot locate silo's client config")
}

// LoadClientConfig reads the client config at path; a missing file is an
// empty config. A file others may read is refused: it holds tokens.
func LoadClientConfig(path string) (*ClientConfig, error) {
	cfg := &ClientConfig{Caches: map[string]CacheEntry{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("client config %s holds tokens but has mode %v (run: chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("client config %s: unknown key %s", path, und[0])
	}
	if cfg.Caches == nil {
		cfg.Caches = map[string]CacheEntry{}
	}
	return cfg, nil
}

// Save writes the config to path atomically with mode 0600, creating its
// directory (mode 0700) if needed.
func (c *ClientConfig) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString("# silo client config: caches saved by `silo login NAME URL TOKEN`.\n")
	names := make([]string, 0, len(c.Caches))
	for n := range c.Caches {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&buf, "\n[cache.%s]\n", tomlKey(n))
		if err := toml.NewEncoder(&buf).Encode(c.Caches[n]); err != nil {
			return fmt.Errorf("save client config: %w", err)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".client.toml-*")
	if err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save client config: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("save client config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save client config: %w", err)
	}
	return nil
}

func tomlKey(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}

// ValidateCacheName checks a name for silo login: letters, digits, '-',
// '_' and '.', not looking like a URL.
func ValidateCacheName(name string) error {
	if name == "" {
		return errors.New("empty cache name")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("cache name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// Resolve turns a --to value into a URL and token: a URL is used as is
// (with the token of a saved cache of the same URL, if any); anything else
// must be a saved cache name.
func (c *ClientConfig) Resolve(nameOrURL string) (url, token string, err error) {
	if strings.Contains(nameOrURL, "://") {
		for _, e := range c.Caches {
			if strings.TrimRight(e.URL, "/") == strings.TrimRight(nameOrURL, "/") {
				return nameOrURL, e.Token, nil
			}
		}
		return nameOrURL, "", nil
	}
	e, ok := c.Caches[nameOrURL]
	if !ok {
		return "", "", fmt.Errorf("no cache named %q (save one with: silo login %s URL TOKEN, or give a URL)", nameOrURL, nameOrURL)
	}
	return e.URL, e.Token, nil
}

// netrcLookup finds the login and password for host in a netrc file, as
// Nix's netrc-file setting uses them. file "" means $NETRC, else ~/.netrc;
// only an explicitly named file must exist.
func netrcLookup(file, host string) (login, password string, ok bool, err error) {
	explicit := file != ""
	if !explicit {
		file = os.Getenv("NETRC")
		if file == "" {
			home, _ := os.UserHomeDir()
			if home == "" {
				return "", "", false, nil
			}
			file = filepath.Join(home, ".netrc")
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("read netrc file: %w", err)
	}
	login, password, ok = parseNetrc(string(data), host)
	return login, password, ok, nil
}

// parseNetrc returns the entry for host, else the default entry.
func parseNetrc(data, host string) (login, password string, ok bool) {
	type entry struct {
		login, password string
		set             bool
	}
	var match, def entry
	var cur *entry
	var scratch entry
	lines := strings.Split(data, "\n")
	for li := 0; li < len(lines); li++ {
		f := strings.Fields(lines[li])
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "machine":
				cur = &scratch
				if i+1 < len(f) {
					i++
					if f[i] == host && !match.set {
						cur = &match
						match.set = true
					}
				}
				if cur == &scratch {
					scratch = entry{}
				}
			case "default":
				cur = &scratch
				if !def.set {
					cur = &def
					def.set = true
				}
			case "login", "password", "account":
				if i+1 < len(f) && cur != nil {
					i++
					switch f[i-1] {
					case "login":
						cur.login = f[i]
					case "password":
						cur.password = f[i]
					}
				}
			case "macdef":
				// A macro runs to the next empty line.
				for li+1 < len(lines) && strings.TrimSpace(lines[li+1]) != "" {
					li++
				}
				i = len(f)
			}
		}
	}
	if match.set {
		return match.login, match.password, true
	}
	if def.set {
		return def.login, def.password, true
	}
	return "", "", false
}

// ResolveTarget opens the target named by a --to value: a URL, or the name
// of a cache saved by silo login, whose token it sends.
func ResolveTarget(nameOrURL string, getenv func(string) string, opts TargetOptions) (Target, error) {
	u, token := nameOrURL, ""
	path, err := ClientConfigPath(getenv)
	if err != nil && !strings.Contains(nameOrURL, "://") {
		return nil, err
	}
	if err == nil {
		cfg, err := LoadClientConfig(path)
		if err != nil {
			return nil, err
		}
		if u, token, err = cfg.Resolve(nameOrURL); err != nil {
			return nil, fmt.Errorf("%w (client config: %s)", err, path)
		}
	}
	fixed := opts.Token
	if opts.Token == "" {
		opts.Token = token
	}
	t, err := OpenTarget(u, &opts)
	if err != nil || !opts.Reload {
		return t, err
	}
	if ht, ok := t.(*httpTarget); ok {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		copts := opts
		copts.Token = fixed
		c := &credentials{nameOrURL: nameOrURL, getenv: getenv, opts: copts, url: parsed}
		if err := c.reload(true); err != nil {
			return nil, err
		}
		c.reported = c.ident
		ht.creds = c
	}
	return t, nil
}
