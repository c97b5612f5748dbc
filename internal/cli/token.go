package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/meta"
)

func init() {
	Register(&Command{
		Name:  "token create",
		Short: "create an access token for caches (printed once)",
		Long: `Creates a token granting --pull, --push and/or --admin on the caches whose
names match --cache (a glob: main, team-*, *). Push implies pull; admin implies
both. The token is printed once on stdout; only its SHA-256 is stored. Clients
use it as the password in a netrc file (machine HOST password TOKEN) or as
"Authorization: Bearer TOKEN". Works while silo serve runs.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			pattern := fs.String("cache", "", "caches the token is for: a name or glob pattern (required)")
			pull := fs.Bool("pull", false, "may read private caches")
			push := fs.Bool("push", false, "may upload (implies --pull)")
			admin := fs.Bool("admin", false, "may administer (implies --push)")
			expires := fs.String("expires", "", "lifetime, e.g. 90d or 12h (default: never expires)")
			note := fs.String("note", "", "free text shown by silo token list")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("token create: takes no arguments (use --cache, --pull, --push, --admin)")
				}
				if *pattern == "" {
					return Usagef("token create: --cache PATTERN is required (a cache name, or * for all)")
				}
				var perms meta.Perm
				if *pull {
					perms |= meta.PermPull
				}
				if *push {
					perms |= meta.PermPush
				}
				if *admin {
					perms |= meta.PermAdmin
				}
				if perms == 0 {
					return Usagef("token create: say what the token may do: --pull, --push and/or --admin")
				}
				var exp time.Time
				if *expires != "" {
					d, err := parseLifetime(*expires)
					if err != nil {
						return Usagef("token create: --expires: %v", err)
					}
					exp = time.Now().Add(d)
				}
				text, rec, err := auth.NewRandom(*pattern, perms, exp, *note)
				if err != nil {
					return Usagef("token create: %v", err)
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("token create: %w", err)
				}
				defer m.Close()
				if err := m.CreateToken(ctx, rec); err != nil {
					return fmt.Errorf("token create: %w", err)
				}
				fmt.Fprintln(env.Stdout, text)
				fmt.Fprintf(env.Stderr, "Created token %s (%s on caches matching %q%s). It is shown only this once.\n",
					rec.ID, auth.PermString(perms), *pattern, expiryNote(exp))
				return nil
			}
		},
	})
	Register(&Command{
		Name:  "token list",
		Short: "list access tokens (IDs and rights, never the secrets)",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("token list: takes no arguments")
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("token list: %w", err)
				}
				defer m.Close()
				toks, err := m.Tokens(ctx)
				if err != nil {
					return fmt.Errorf("token list: %w", err)
				}
				now := time.Now()
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCACHES\tRIGHTS\tCREATED\tEXPIRES\tNOTE")
				for _, t := range toks {
					exp := "never"
					if !t.Expires.IsZero() {
						exp = t.Expires.UTC().Format(time.RFC3339)
						if !now.Before(t.Expires) {
							exp += " (expired)"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.CachePattern, auth.PermString(t.Perms),
						t.Created.UTC().Format(time.RFC3339), exp, t.Note)
				}
				return tw.Flush()
			}
		},
	})
	Register(&Command{
		Name:  "token revoke",
		Args:  "ID",
		Short: "revoke a token at once (also while silo serve runs)",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("token revoke: want one token ID (see silo token list), got %d arguments", len(args))
				}
				id := args[0]
				if full, err := auth.ID(id); err == nil {
					id = full // a whole token given: revoke it by its ID
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("token revoke: %w", err)
				}
				defer m.Close()
				err = m.DeleteToken(ctx, id)
				if errors.Is(err, meta.ErrNotFound) {
					return fmt.Errorf("token revoke: no token %s in %s (see silo token list)", id, f.dataDir)
				}
				if err != nil {
					return fmt.Errorf("token revoke: %w", err)
				}
				fmt.Fprintf(env.Stdout, "Revoked token %s.\n", id)
				return nil
			}
		},
	})
}

// parseLifetime parses a Go duration, also accepting days ("90d").
func parseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration (want e.g. 90d, 12h or 30m)", s)
	}
	return d, nil
}

func expiryNote(t time.Time) string {
	if t.IsZero() {
		return ", never expires"
	}
	return ", expires " + t.UTC().Format(time.RFC3339)
}
