package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/publish"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

func init() {
	Register(&Command{
		Name:  "publish",
		Short: "serve this machine's Nix store as a read-only binary cache (like nix-serve)",
		Long: `Serves the local Nix store to other machines as a binary cache: nix-cache-info,
<hash>.narinfo for every valid path (signed with each --signing-key-file, keeping
the signatures the store already holds), NARs dumped on the fly at
nar/<hash>-<narhash>.nar (nix-serve's URLs, so its clients keep working), .ls
listings, build logs at log/<drv>, /metrics and /healthz.

Clients use it as a substituter:
  nix copy --from http://HOST:5000 --to ... PATH
  --option substituters http://HOST:5000 --option trusted-public-keys NAME:KEY
At start it prints its public keys and the nix.conf lines clients need.

It listens on 127.0.0.1:5000 by default: --listen 0.0.0.0:5000 serves other
machines. The store database is read directly when this process may (root),
else through nix-daemon. The server never writes to the store. Socket
activation by systemd works as for silo serve; --listen unix:/path listens on
a unix socket (--socket-mode, --socket-group). HTTPS with --tls-cert-file and
--tls-key-file, read again on SIGHUP. Requests are logged as silo serve logs
them; connections are bounded and held to a minimum rate as for silo serve.

A store that must not be public takes --token-data-dir: clients then need a
token made with silo token create --cache publish --pull (in a netrc file as
the password, as for silo serve), for /metrics too.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			storeDir := fs.String("store-dir", string(storepath.DefaultDir), "the Nix store directory to serve")
			addr := fs.String("listen", "127.0.0.1:5000", "address to listen on: host:port (0.0.0.0:5000 for other machines) or unix:/path")
			var keyFiles StringList
			fs.Var(&keyFiles, "signing-key-file", "secret key file to sign narinfos with (repeatable; made by nix-store --generate-binary-cache-key)")
			compression := fs.String("compression", "none", "NARs advertised in narinfos: none (plain) or zstd (compressed on the fly)")
			priority := fs.Int("priority", 30, "priority advertised in nix-cache-info (lower is preferred by clients)")
			logDir := fs.String("log-dir", "/nix/var/log/nix", "Nix's log directory (NIX_LOG_DIR), for build logs")
			db := fs.String("db", "", "read this Nix database file directly (default: Nix's own, or nix-daemon when not root)")
			maxStreams := fs.Int("max-streams", 64, "NARs dumped at once at most; more requests wait")
			tokenDir := fs.String("token-data-dir", "", "make the store private: require a silo token, checked against the tokens in silo serve's data `DIR` (silo token create --cache NAME --pull)")
			tokenDB := fs.String("token-db", "", "make the store private with the tokens in silo serve's PostgreSQL `URL` (its --db)")
			tokenCache := fs.String("token-cache", "publish", "with --token-data-dir or --token-db: the cache `NAME` tokens must grant pull on")
			var nf netFlags
			defineNetFlags(fs, &nf)
			fs.String("config", "", "TOML config file setting any of these flags")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("publish: takes no arguments, got %q", args)
				}
				dir, err := storepath.NewDir(*storeDir)
				if err != nil {
					return Usagef("publish: --store-dir: %v", err)
				}
				if *compression != "none" && *compression != "zstd" {
					return Usagef("publish: --compression %q: want none or zstd", *compression)
				}
				if *priority < 1 {
					return Usagef("publish: --priority %d: want a positive number", *priority)
				}
				if *maxStreams < 1 {
					return Usagef("publish: --max-streams %d: want a positive number", *maxStreams)
				}
				if err := nf.check("publish"); err != nil {
					return err
				}
				logger, err := newLogger(env, nf.logLevel, nf.logFormat)
				if err != nil {
					return err
				}
				var keys []signature.SecretKey
				for _, f := range keyFiles {
					k, err := signature.LoadSecretKeyFile(f)
					if err != nil {
						return fmt.Errorf("publish: %w", err)
					}
					keys = append(keys, k)
				}
				var authorize func(*http.Request) error
				if *tokenDir != "" && *tokenDB != "" {
					return Usagef("publish: --token-data-dir and --token-db both name token stores; give one")
				}
				if *tokenDir != "" || *tokenDB != "" {
					if db, _ := dataPaths(*tokenDir); *tokenDB == "" {
						if _, err := os.Stat(db); err != nil {
							return fmt.Errorf("publish: --token-data-dir %s: %w (point it at silo serve's --data-dir)", *tokenDir, err)
						}
					}
					tokens, err := openMeta(ctx, &serveFlags{dataDir: *tokenDir, store: storageFlags{db: *tokenDB}})
					if err != nil {
						return fmt.Errorf("publish: tokens: %w", err)
					}
					defer tokens.Close()
					authorize = publish.TokenAuthorizer(tokens, *tokenCache)
				}
				var store localstore.Store
				if *db != "" {
					store, err = localstore.OpenDB(dir, *db)
				} else {
					store, err = localstore.Open(ctx, dir)
				}
				if err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				defer store.Close()
				srv, err := publish.New(store, publish.Options{
					StoreDir:    dir,
					LogDir:      *logDir,
					Keys:        keys,
					Priority:    *priority,
					Compression: *compression,
					MaxStreams:  *maxStreams,
					Authorize:   authorize,
					Logger:      logger,
				})
				if err != nil {
					return err
				}
				hs, err := nf.open(ctx, logger, *addr)
				if err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				if len(keys) == 0 {
					logger.Warn("publish: no --signing-key-file: narinfos carry only the signatures already in the store")
				}
				printPublishInfo(env.Stderr, dir, hs.url, keys, *tokenDir, *tokenCache)
				if err := hs.run(ctx, logger, &nf, srv, srv.MetricsHandler(), nil); err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				return nil
			}
		},
	})
}

// printPublishInfo says where the store is served and what clients put in
// their nix.conf (and netrc) to use it.
func printPublishInfo(w io.Writer, dir storepath.Dir, url string, keys []signature.SecretKey, tokenDir, tokenCache string) {
	fmt.Fprintf(w, "silo publish: serving %s at %s\n", dir, url)
	clientURL := url
	if u, err := neturl.Parse(url); err == nil && u.Host != "" {
		host, port, _ := net.SplitHostPort(u.Host)
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			name, err := os.Hostname()
			if err != nil {
				name = "HOST"
			}
			clientURL = u.Scheme + "://" + net.JoinHostPort(name, port)
		} else if ip != nil && ip.IsLoopback() {
			fmt.Fprintf(w, "silo publish: listening on loopback only; --listen 0.0.0.0:%s serves other machines\n", port)
		}
	}
	var pubs []string
	for _, k := range keys {
		pubs = append(pubs, k.Public().String())
		fmt.Fprintf(w, "silo publish: public key %s\n", k.Public())
	}
	fmt.Fprintf(w, "silo publish: clients' nix.conf:\n  substituters = %s\n", clientURL)
	if len(pubs) > 0 {
		fmt.Fprintf(w, "  trusted-public-keys = %s\n", strings.Join(pubs, " "))
	} else {
		fmt.Fprintf(w, "  trusted-public-keys = (the keys that signed the store's paths; or give --signing-key-file)\n")
	}
	if tokenDir != "" {
		host := "HOST"
		if u, err := neturl.Parse(clientURL); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
		fmt.Fprintf(w, "silo publish: private: clients need a token (silo token create --data-dir %s --cache %s --pull) in their netrc:\n  machine %s password TOKEN\n", tokenDir, tokenCache, host)
	}
}
