package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/silo-cache/silo/internal/push"
)

func init() {
	Register(&Command{
		Name:  "login",
		Args:  "NAME URL [TOKEN]",
		Short: "save a cache's URL and upload token under a short name",
		Long: `Saves the cache at URL under NAME in silo's client config
($XDG_CONFIG_HOME/silo/client.toml, or ~/.config/silo/client.toml; mode 0600),
so that 'silo push --to NAME' and 'silo queue --to NAME' find it and send
TOKEN as "Authorization: Bearer TOKEN". Give TOKEN as '-' (or leave it out)
to read it from stdin, which keeps it out of the shell history and process
list. Logging in again under the same NAME replaces the entry.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) < 2 || len(args) > 3 {
					return Usagef("login: want NAME URL [TOKEN], got %d arguments", len(args))
				}
				name, url := args[0], strings.TrimRight(args[1], "/")
				if err := push.ValidateCacheName(name); err != nil {
					return Usagef("login: %v", err)
				}
				if _, err := push.OpenTarget(url, nil); err != nil {
					return Usagef("login: %v", err)
				}
				token := "-"
				if len(args) == 3 {
					token = args[2]
				}
				if token == "-" {
					b, err := io.ReadAll(io.LimitReader(env.Stdin, 64<<10))
					if err != nil {
						return fmt.Errorf("login: read token from stdin: %w", err)
					}
					token = strings.TrimSpace(string(b))
				}
				if strings.ContainsAny(token, " \t\r\n") {
					return Usagef("login: the token contains whitespace")
				}
				path, err := push.ClientConfigPath(env.Getenv)
				if err != nil {
					return fmt.Errorf("login: %w", err)
				}
				cfg, err := push.LoadClientConfig(path)
				if err != nil {
					return fmt.Errorf("login: %w", err)
				}
				cfg.Caches[name] = push.CacheEntry{URL: url, Token: token}
				if err := cfg.Save(path); err != nil {
					return fmt.Errorf("login: %w", err)
				}
				fmt.Fprintf(env.Stderr, "saved cache %s (%s) in %s\n", name, url, path)
				return nil
			}
		},
	})
}
