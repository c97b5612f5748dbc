package daemon

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/silo-cache/silo/internal/nixconf"
	"golang.org/x/sys/unix"
)

// StoreURI is the store the daemon serves, from Nix's `store` setting:
// a local store (Nix's LocalStore: "auto", "local", a path, or
// local?root=...) or, for `--stdio`, another daemon to relay to
// ("daemon", unix://PATH).
type StoreURI struct {
	URI string
	// Socket is set for a daemon to relay to.
	Socket string
	// The local store's directories.
	StoreDir, RealStoreDir, StateDir, LogDir string
}

// LocalStoreURI is the local store in dirs.
func LocalStoreURI(dirs *nixconf.Dirs) *StoreURI {
	return &StoreURI{URI: "local", StoreDir: dirs.Store, RealStoreDir: dirs.Store, StateDir: dirs.State, LogDir: dirs.Log}
}

// ParseStoreURI resolves a store URI as Nix's openStore does for the
// stores a daemon can serve. With listening (not --stdio), "auto" is the
// local store: a daemon does not relay to the socket it serves.
func ParseStoreURI(uri string, dirs *nixconf.Dirs, listening bool) (*StoreURI, error) {
	base, query, _ := strings.Cut(uri, "?")
	params, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("store URI '%s': %w", uri, err)
	}
	local := func(root string) (*StoreURI, error) {
		s := LocalStoreURI(dirs)
		s.URI = uri
		if root == "" {
			root = params.Get("root")
		}
		if root != "" {
			root = filepath.Clean(root)
			s.StateDir, s.LogDir, s.RealStoreDir = root+"/nix/var/nix", root+"/nix/var/log/nix", root+"/nix/store"
		}
		for name, dst := range map[string]*string{"store": &s.StoreDir, "state": &s.StateDir, "log": &s.LogDir, "real": &s.RealStoreDir} {
			if v := params.Get(name); v != "" {
				if !filepath.IsAbs(v) {
					return nil, fmt.Errorf("store URI '%s': %s=%s is not an absolute path", uri, name, v)
				}
				*dst = filepath.Clean(v)
			}
		}
		if params.Get("store") != "" && params.Get("real") == "" && root == "" {
			s.RealStoreDir = s.StoreDir
		}
		return s, nil
	}
	remote := func(sock string) *StoreURI { return &StoreURI{URI: uri, Socket: sock} }
	switch {
	case (base == "" || base == "auto") && listening:
		return local("")
	case base == "" || base == "auto":
		state := dirs.State
		if v := params.Get("state"); v != "" {
			state = v
		}
		if unix.Access(state, unix.R_OK|unix.W_OK) == nil {
			return local("")
		}
		if _, err := os.Stat(dirs.Socket); err == nil {
			return remote(dirs.Socket), nil
		}
		return local("")
	case base == "local":
		return local("")
	case base == "daemon":
		return remote(dirs.Socket), nil
	case strings.HasPrefix(base, "unix://"):
		p := strings.TrimPrefix(base, "unix://")
		if p == "" {
			p = dirs.Socket
		}
		return remote(p), nil
	case !strings.Contains(base, "://") && strings.Contains(base, "/"):
		root, err := filepath.Abs(base)
		if err != nil {
			return nil, err
		}
		return local(root)
	}
	return nil, fmt.Errorf("don't know how to serve the Nix store '%s' (silo daemon serves a local store: auto, local, a path or local?root=DIR)", uri)
}
