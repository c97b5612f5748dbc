package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/silo-cache/silo/internal/listen"
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

The store database is read directly when this process may (root), else through
nix-daemon. The server never writes to the store. Socket activation by systemd
works as for silo serve; --listen unix:/path listens on a unix socket.

A store that must not be public takes --token-data-dir: clients then need a
token made with silo token create --cache publish --pull (in a netrc file as
the password, as for silo serve).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			storeDir := fs.String("store-dir", string(storepath.DefaultDir), "the Nix store directory to serve")
			addr := fs.String("listen", ":5000", "address to listen on: host:port or unix:/path")
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
				logger := slog.New(slog.NewTextHandler(env.Stderr, nil))
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
				l, err := listen.Listen(ctx, *addr)
				if err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				hs := &http.Server{
					Handler:           srv,
					ReadHeaderTimeout: 30 * time.Second,
					IdleTimeout:       5 * time.Minute,
					ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
				}
				if len(keys) == 0 {
					logger.Warn("publish: no --signing-key-file: narinfos carry only the signatures already in the store")
				}
				fmt.Fprintf(env.Stderr, "silo publish: serving %s at %s\n", dir, listen.URL(l))
				errc := make(chan error, 1)
				go func() { errc <- hs.Serve(l) }()
				select {
				case err := <-errc:
					return fmt.Errorf("publish: serving on %s: %w", listen.URL(l), err)
				case <-ctx.Done():
				}
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("publish: shutting down: %w", err)
				}
				return nil
			}
		},
	})
}
