package cli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/silo-cache/silo/internal/adminapi"
)

func init() {
	Register(&Command{
		Name:        "token create",
		Short:       "create an access token for caches (printed once)",
		ServeConfig: true,
		Long: `Creates a token granting --pull, --push and/or --admin on the caches whose
names match --cache (a glob: main, team-*, *). Push implies pull; admin implies
both. The token is printed once on stdout; only its SHA-256 is stored. Clients
use it as the password in a netrc file (machine HOST password TOKEN) or as
"Authorization: Bearer TOKEN". Works while silo serve runs. A pattern that
matches no cache yet gets a warning (the token works once one exists).` + adminLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, false)
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
				var perms []string
				for _, p := range []struct {
					set  bool
					name string
				}{{*pull, "pull"}, {*push, "push"}, {*admin, "admin"}} {
					if p.set {
						perms = append(perms, p.name)
					}
				}
				if len(perms) == 0 {
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
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("token create", err)
				}
				defer a.close()
				nt, err := a.CreateToken(ctx, adminapi.TokenSpec{Cache: *pattern, Perms: perms, Expires: exp, Note: *note})
				if err != nil {
					return adminError("token create", err)
				}
				fmt.Fprintln(env.Stdout, nt.Token)
				for _, w := range nt.Warnings {
					fmt.Fprintf(env.Stderr, "warning: %s\n", w)
				}
				fmt.Fprintf(env.Stderr, "Created token %s (%s on caches matching %q%s). It is shown only this once.\n",
					nt.Info.ID, strings.Join(nt.Info.Perms, ","), nt.Info.Cache, expiryNote(nt.Info.Expires))
				return nil
			}
		},
	})
	Register(&Command{
		Name:        "token list",
		Short:       "list access tokens (IDs and rights, never the secrets)",
		Long:        strings.TrimSpace(adminLong),
		ServeConfig: true,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, false)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("token list: takes no arguments")
				}
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("token list", err)
				}
				defer a.close()
				toks, err := a.Tokens(ctx)
				if err != nil {
					return adminError("token list", err)
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
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Cache, strings.Join(t.Perms, ","),
						t.Created.UTC().Format(time.RFC3339), exp, t.Note)
				}
				return tw.Flush()
			}
		},
	})
	Register(&Command{
		Name:        "token revoke",
		Args:        "ID",
		Short:       "revoke a token at once (also while silo serve runs)",
		Long:        strings.TrimSpace(adminLong),
		ServeConfig: true,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, false)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("token revoke: want one token ID (see silo token list), got %d arguments", len(args))
				}
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("token revoke", err)
				}
				defer a.close()
				t, err := a.RevokeToken(ctx, args[0])
				if err != nil {
					return adminError("token revoke", err)
				}
				fmt.Fprintf(env.Stdout, "Revoked token %s (%s on %q).\n", t.ID, strings.Join(t.Perms, ","), t.Cache)
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
