package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/silo-cache/silo/internal/adminapi"
	"github.com/silo-cache/silo/internal/push"
)

// adminFlags are the settings of the admin commands (silo cache, silo
// token): where the server's data is, locally or through the admin API.
type adminFlags struct {
	dataDir   string
	server    string
	tokenFile string
	url       string // cache create/info/list only
}

func defineAdminFlags(fs *flag.FlagSet, withURL bool) *adminFlags {
	f := &adminFlags{}
	fs.StringVar(&f.dataDir, "data-dir", "silo-data", "silo serve's data `DIR` to administer (only silo init and silo serve create one)")
	fs.StringVar(&f.server, "server", "", "administer a running silo serve through its admin API instead of a data directory: its `URL` (http://HOST:PORT) or the NAME of a silo login entry")
	fs.StringVar(&f.tokenFile, "token-file", "", "with --server: `FILE` holding an admin token (default: the token saved by silo login)")
	if withURL {
		fs.StringVar(&f.url, "url", "", "public base `URL` of the server, for the substituter lines (default: the URL silo serve recorded in the data directory)")
	}
	fs.String("config", "", "silo serve's TOML config `FILE`: its data-dir and url apply, its other keys are ignored")
	return f
}

// admin is what the admin commands need of a server's data: a local data
// directory (adminapi.Local) or a remote server (adminapi.Client).
type admin interface {
	CreateCache(ctx context.Context, spec adminapi.CacheSpec) (adminapi.CacheInfo, error)
	Caches(ctx context.Context) ([]adminapi.CacheInfo, error)
	Cache(ctx context.Context, name string) (adminapi.CacheInfo, error)
	DeleteCache(ctx context.Context, name string, dryRun bool) (adminapi.DeleteResult, error)
	CreateToken(ctx context.Context, spec adminapi.TokenSpec) (adminapi.NewToken, error)
	Tokens(ctx context.Context) ([]adminapi.TokenInfo, error)
	RevokeToken(ctx context.Context, id string) (adminapi.TokenInfo, error)
}

var (
	_ admin = adminapi.Local{}
	_ admin = (*adminapi.Client)(nil)
)

// adminConn is an open admin backend.
type adminConn struct {
	admin
	where string // "data directory DIR" or "server URL", for messages
	// urlNote explains a guessed substituter URL; "" when it is known.
	urlNote string
	close   func()
}

// noDataError is the error for a data directory that does not exist.
func noDataError(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return fmt.Errorf("no silo data in %s (wrong directory? use --data-dir DIR or $SILO_DATA_DIR, or --server URL for a running server; silo init creates a data directory)", abs)
}

// requireDataDir checks that dir holds silo's data: admin commands never
// create one, so that a command run in the wrong directory cannot act on
// data no server uses.
func requireDataDir(dir string) error {
	db, _ := dataPaths(dir)
	if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) {
		return noDataError(dir)
	} else if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	return nil
}

// open returns the backend the flags name.
func (f *adminFlags) open(ctx context.Context, env *Env) (*adminConn, error) {
	if f.server != "" {
		return f.openRemote(env)
	}
	if f.tokenFile != "" {
		return nil, Usagef("--token-file is for --server: a local data directory needs no token")
	}
	if err := requireDataDir(f.dataDir); err != nil {
		return nil, err
	}
	m, err := openMeta(ctx, f.dataDir)
	if err != nil {
		return nil, err
	}
	base, note := f.url, ""
	if base == "" {
		info, ok := readServerInfo(f.dataDir)
		switch {
		case ok && info.URL != "":
			base = info.URL
		case ok:
			note = fmt.Sprintf("silo serve listens on %s, which Nix cannot use: pass --url with the address clients use", info.Listen)
		default:
			base = "http://127.0.0.1:8080"
			note = fmt.Sprintf("silo serve has not run with %s yet, so its URL is a guess: pass --url with the address clients use", f.dataDir)
		}
	}
	svc := &adminapi.Service{Meta: m, BaseURL: func() string { return base }}
	return &adminConn{admin: adminapi.Local{S: svc}, where: "data directory " + f.dataDir, urlNote: note,
		close: func() { m.Close() }}, nil
}

func (f *adminFlags) openRemote(env *Env) (*adminConn, error) {
	base, token := f.server, ""
	path, cerr := push.ClientConfigPath(env.Getenv)
	var cfg *push.ClientConfig
	if cerr == nil {
		var err error
		if cfg, err = push.LoadClientConfig(path); err != nil {
			return nil, err
		}
	}
	if strings.Contains(f.server, "://") {
		if cfg != nil {
			for _, e := range cfg.Caches {
				if serverRoot(e.URL) == strings.TrimRight(f.server, "/") && e.Token != "" {
					token = e.Token
					break
				}
			}
		}
	} else {
		if cfg == nil {
			return nil, fmt.Errorf("--server %s: %w", f.server, cerr)
		}
		e, ok := cfg.Caches[f.server]
		if !ok {
			return nil, fmt.Errorf("--server %s: neither a URL nor a name saved by silo login (client config: %s)", f.server, path)
		}
		base, token = serverRoot(e.URL), e.Token
	}
	if f.tokenFile != "" {
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(data))
		if token == "" {
			return nil, fmt.Errorf("--token-file %s is empty (it should hold a token from silo token create --admin)", f.tokenFile)
		}
	}
	if token == "" {
		return nil, fmt.Errorf("--server %s: no token: give --token-file FILE with an admin token, or save one with silo login NAME URL", f.server)
	}
	c, err := adminapi.NewClient(base, token)
	if err != nil {
		return nil, Usagef("--server: %v", err)
	}
	return &adminConn{admin: c, where: "server " + base, close: func() {}}, nil
}

// serverRoot is the root of the silo server serving the cache at
// cacheURL: caches live at <root>/<name>, so the URL without its last
// path element (itself, if it has no path).
func serverRoot(cacheURL string) string {
	u, err := url.Parse(strings.TrimRight(cacheURL, "/"))
	if err != nil {
		return strings.TrimRight(cacheURL, "/")
	}
	if i := strings.LastIndexByte(u.Path, '/'); i >= 0 {
		u.Path = u.Path[:i]
	}
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return strings.TrimRight(u.String(), "/")
}

// adminError turns a backend error into the command's error.
func adminError(cmd string, err error) error {
	if errors.Is(err, adminapi.ErrInvalid) {
		return Usagef("%s: %v", cmd, err)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}
