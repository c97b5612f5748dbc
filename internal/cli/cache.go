package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/silo-cache/silo/internal/adminapi"
	"github.com/silo-cache/silo/internal/storepath"
)

const adminLong = `
Works on silo serve's --data-dir (also while the server runs), or with
--server URL|NAME on a running server through its admin API, with an admin
token (--token-file, or one saved by silo login NAME).`

func init() {
	Register(&Command{
		Name:        "cache create",
		Args:        "NAME",
		Short:       "create a binary cache with its own signing key",
		ServeConfig: true,
		Long: `Creates the cache NAME, served at /NAME/ by silo serve (also while it runs),
with a fresh ed25519 signing key named <host>-NAME-1 (--key-name to choose).
Caches are private (readers need a pull token) unless --public. Prints what
a Nix client needs, as silo cache info does.` + adminLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, true)
			public := fs.Bool("public", false, "anyone may read the cache without a token")
			priority := fs.Int("priority", 40, "priority in nix-cache-info: lower is preferred by clients")
			keyName := fs.String("key-name", "", "name of the signing key (default <host>-NAME-1)")
			storeDir := fs.String("store-dir", string(storepath.DefaultDir), "Nix store directory of the paths the cache holds")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache create: want one NAME, got %d arguments", len(args))
				}
				if *priority < 0 {
					return Usagef("cache create: --priority %d: want 0 or more", *priority)
				}
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("cache create", err)
				}
				defer a.close()
				ci, err := a.CreateCache(ctx, adminapi.CacheSpec{Name: args[0], Public: *public, Priority: *priority, KeyName: *keyName, StoreDir: *storeDir})
				if err != nil {
					return adminError("cache create", err)
				}
				fmt.Fprintf(env.Stdout, "Created cache %s.\n\n", ci.Name)
				printCacheInfo(env.Stdout, ci, a.urlNote)
				return nil
			}
		},
	})
	Register(&Command{
		Name:        "cache list",
		Short:       "list the caches with their size",
		Long:        strings.TrimSpace(adminLong),
		ServeConfig: true,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, false)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("cache list: takes no arguments")
				}
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("cache list", err)
				}
				defer a.close()
				caches, err := a.Caches(ctx)
				if err != nil {
					return adminError("cache list", err)
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tACCESS\tPRIORITY\tPATHS\tSTORED\tPUBLIC KEY")
				for _, c := range caches {
					access := "private"
					if c.Public {
						access = "public"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", c.Name, access, c.Priority, c.Paths, humanBytes(c.StoredBytes), c.PublicKey)
				}
				if len(caches) == 0 {
					fmt.Fprintf(env.Stderr, "no caches in %s yet: create one with silo cache create NAME\n", a.where)
				}
				return tw.Flush()
			}
		},
	})
	Register(&Command{
		Name:        "cache info",
		Args:        "NAME",
		Short:       "print a cache's URL, public key and the nix.conf lines clients need",
		ServeConfig: true,
		Long: `Prints the substituter URL (the one silo serve recorded in the data
directory: its --url, or what it listens on), the public key, and the
nix.conf and netrc lines a client needs (silo use NAME|URL writes them).` + adminLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, true)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache info: want one NAME, got %d arguments", len(args))
				}
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("cache info", err)
				}
				defer a.close()
				ci, err := a.Cache(ctx, args[0])
				if err != nil {
					return adminError("cache info", err)
				}
				printCacheInfo(env.Stdout, ci, a.urlNote)
				return nil
			}
		},
	})
	Register(&Command{
		Name:        "cache delete",
		Args:        "NAME",
		Short:       "delete a cache and everything it serves (asks first, or --yes)",
		ServeConfig: true,
		Long: `Deletes the cache NAME, also while silo serve runs: its paths, logs and
pending uploads. The server's garbage collector then frees the NAR files no
other cache uses (within silo serve's gc-interval).

It first shows what it will delete and asks for confirmation on stdin;
--yes skips the question (scripts must pass it). Tokens bound to exactly
NAME are revoked with the cache, so a new cache of the same name starts
with none; tokens whose pattern matches NAME (team-*, *) are kept and
listed, since they would grant access to a new cache of that name.` + adminLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineAdminFlags(fs, false)
			yes := fs.Bool("yes", false, "delete without asking")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache delete: want one NAME, got %d arguments", len(args))
				}
				name := args[0]
				a, err := f.open(ctx, env)
				if err != nil {
					return adminError("cache delete", err)
				}
				defer a.close()
				if !*yes {
					plan, err := a.DeleteCache(ctx, name, true)
					if err != nil {
						return adminError("cache delete", err)
					}
					fmt.Fprintf(env.Stderr, "Cache %s in %s holds %d paths (%s stored).\n", name, a.where, plan.Cache.Paths, humanBytes(plan.Cache.StoredBytes))
					printTokenLists(env.Stderr, name, plan, "will be revoked")
					fmt.Fprintf(env.Stderr, "Delete cache %s and everything it serves? [y/N] ", name)
					answer, _ := bufio.NewReader(io.LimitReader(env.Stdin, 1024)).ReadString('\n')
					switch strings.ToLower(strings.TrimSpace(answer)) {
					case "y", "yes":
					default:
						fmt.Fprintln(env.Stderr)
						return fmt.Errorf("cache delete: cache %s not deleted (answer y to confirm, or pass --yes)", name)
					}
				}
				res, err := a.DeleteCache(ctx, name, false)
				if err != nil {
					return adminError("cache delete", err)
				}
				fmt.Fprintf(env.Stdout, "Deleted cache %s (%d paths).\n", name, res.Cache.Paths)
				printTokenLists(env.Stdout, name, res, "revoked")
				return nil
			}
		},
	})
}

func printTokenLists(w io.Writer, name string, res adminapi.DeleteResult, verb string) {
	if len(res.Revoked) > 0 {
		fmt.Fprintf(w, "Tokens bound to exactly %s (%s):\n", name, verb)
		for _, t := range res.Revoked {
			fmt.Fprintf(w, "  %s  %s%s\n", t.ID, strings.Join(t.Perms, ","), noteSuffix(t.Note))
		}
	}
	if len(res.Matching) > 0 {
		fmt.Fprintf(w, "Tokens kept whose pattern matches %s: they would grant access to a new cache named %s (silo token revoke ID):\n", name, name)
		for _, t := range res.Matching {
			fmt.Fprintf(w, "  %s  %s on %q%s\n", t.ID, strings.Join(t.Perms, ","), t.Cache, noteSuffix(t.Note))
		}
	}
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return " (" + note + ")"
}

func printCacheInfo(w io.Writer, c adminapi.CacheInfo, urlNote string) {
	cacheURL := c.URL
	if cacheURL == "" {
		cacheURL = "http://HOST:PORT/" + c.Name
	}
	host := "HOST"
	if u, err := url.Parse(cacheURL); err == nil && u.Host != "" {
		host = u.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	access := "private (readers need a pull token)"
	if c.Public {
		access = "public"
	}
	fmt.Fprintf(w, "Cache:       %s, %s, priority %d\n", c.Name, access, c.Priority)
	fmt.Fprintf(w, "Substituter: %s\n", cacheURL)
	fmt.Fprintf(w, "Public key:  %s\n", c.PublicKey)
	if urlNote != "" {
		fmt.Fprintf(w, "(%s)\n", urlNote)
	}
	fmt.Fprintf(w, "\nOn a client, silo use %s writes these; or by hand, nix.conf lines:\n", cacheURL)
	fmt.Fprintf(w, "  extra-substituters = %s\n", cacheURL)
	fmt.Fprintf(w, "  extra-trusted-public-keys = %s\n", c.PublicKey)
	if !c.Public {
		fmt.Fprintf(w, "  netrc-file = /etc/nix/netrc\n")
		fmt.Fprintf(w, "and in /etc/nix/netrc (token from: silo token create --cache %s --pull):\n", c.Name)
		fmt.Fprintf(w, "  machine %s password <TOKEN>\n", host)
	}
	fmt.Fprintf(w, "\nPush (token from: silo token create --cache %s --push):\n", c.Name)
	fmt.Fprintf(w, "  silo login %s %s; silo push --to %s PATH...\n", c.Name, cacheURL, c.Name)
	fmt.Fprintf(w, "  or: nix copy --to '%s?compression=zstd' --option netrc-file NETRC PATH...\n", cacheURL)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
