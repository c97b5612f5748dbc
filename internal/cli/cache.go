package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

func init() {
	Register(&Command{
		Name:  "cache create",
		Args:  "NAME",
		Short: "create a binary cache with its own signing key",
		Long: `Creates the cache NAME, served at /NAME/ by silo serve (also while it runs),
with a fresh ed25519 signing key named <host>-NAME-1 (--key-name to choose).
Caches are private (readers need a pull token) unless --public. Prints what
a Nix client needs, as silo cache info does.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			public := fs.Bool("public", false, "anyone may read the cache without a token")
			priority := fs.Int("priority", 40, "priority in nix-cache-info: lower is preferred by clients")
			keyName := fs.String("key-name", "", "name of the signing key (default <host>-NAME-1)")
			storeDir := fs.String("store-dir", string(storepath.DefaultDir), "Nix store directory of the paths the cache holds")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache create: want one NAME, got %d arguments", len(args))
				}
				name := args[0]
				if err := cache.ValidCacheName(name); err != nil {
					return Usagef("cache create: %v", err)
				}
				if _, err := storepath.NewDir(*storeDir); err != nil {
					return Usagef("cache create: --store-dir: %v", err)
				}
				if *priority < 0 {
					return Usagef("cache create: --priority %d: want 0 or more", *priority)
				}
				kn := *keyName
				if kn == "" {
					kn = defaultKeyName(name)
				}
				if err := signature.ValidateKeyName(kn); err != nil {
					return Usagef("cache create: key name: %v (choose one with --key-name)", err)
				}
				key, err := signature.GenerateKey(kn, rand.Reader)
				if err != nil {
					return fmt.Errorf("cache create: %w", err)
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("cache create: %w", err)
				}
				defer m.Close()
				c, err := m.CreateCache(ctx, meta.Cache{Name: name, Public: *public, Priority: *priority, SecretKey: key.String(), StoreDir: *storeDir})
				if errors.Is(err, meta.ErrExists) {
					return fmt.Errorf("cache create: a cache named %s exists already (see silo cache info %s)", name, name)
				}
				if err != nil {
					return fmt.Errorf("cache create: %w", err)
				}
				fmt.Fprintf(env.Stdout, "Created cache %s.\n\n", name)
				return printCacheInfo(env.Stdout, c, f)
			}
		},
	})
	Register(&Command{
		Name:  "cache list",
		Short: "list the caches with their size",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("cache list: takes no arguments")
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("cache list: %w", err)
				}
				defer m.Close()
				caches, err := m.Caches(ctx)
				if err != nil {
					return fmt.Errorf("cache list: %w", err)
				}
				usage, err := m.Usage(ctx)
				if err != nil {
					return fmt.Errorf("cache list: %w", err)
				}
				byName := map[string]meta.Usage{}
				for _, u := range usage {
					byName[u.Cache] = u
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tACCESS\tPRIORITY\tPATHS\tSTORED\tPUBLIC KEY")
				for _, c := range caches {
					access := "private"
					if c.Public {
						access = "public"
					}
					u := byName[c.Name]
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", c.Name, access, c.Priority, u.Paths, humanBytes(u.StoredBytes), publicKey(c))
				}
				return tw.Flush()
			}
		},
	})
	Register(&Command{
		Name:  "cache info",
		Args:  "NAME",
		Short: "print a cache's URL, public key and the nix.conf lines clients need",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache info: want one NAME, got %d arguments", len(args))
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("cache info: %w", err)
				}
				defer m.Close()
				c, err := m.Cache(ctx, args[0])
				if errors.Is(err, meta.ErrNotFound) {
					return fmt.Errorf("cache info: no cache named %s in %s (see silo cache list)", args[0], f.dataDir)
				}
				if err != nil {
					return fmt.Errorf("cache info: %w", err)
				}
				return printCacheInfo(env.Stdout, c, f)
			}
		},
	})
	Register(&Command{
		Name:  "cache delete",
		Args:  "NAME",
		Short: "delete a cache and everything it serves",
		Long: `Deletes the cache NAME at once, also while silo serve runs: its paths, logs
and pending uploads. The server's garbage collector then frees the NAR files
no other cache uses (within --gc-interval).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("cache delete: want one NAME, got %d arguments", len(args))
				}
				m, err := openMeta(ctx, f)
				if err != nil {
					return fmt.Errorf("cache delete: %w", err)
				}
				defer m.Close()
				err = m.DeleteCache(ctx, args[0])
				if errors.Is(err, meta.ErrNotFound) {
					return fmt.Errorf("cache delete: no cache named %s in %s (see silo cache list)", args[0], f.dataDir)
				}
				if err != nil {
					return fmt.Errorf("cache delete: %w", err)
				}
				fmt.Fprintf(env.Stdout, "Deleted cache %s.\n", args[0])
				return nil
			}
		},
	})
}

func defaultKeyName(cacheName string) string {
	host, err := os.Hostname()
	if err != nil || host == "" || signature.ValidateKeyName(host+"-"+cacheName+"-1") != nil {
		return cacheName + "-1"
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	return host + "-" + cacheName + "-1"
}

func publicKey(c meta.Cache) string {
	k, err := signature.ParseSecretKey(c.SecretKey)
	if err != nil {
		return "(unreadable key: " + err.Error() + ")"
	}
	return k.Public().String()
}

// serverURL is the base URL clients reach the server at.
func serverURL(f *serveFlags) (string, bool) {
	if f.url != "" {
		return strings.TrimSuffix(f.url, "/"), true
	}
	if strings.HasPrefix(f.listen, "unix:") {
		return "", false
	}
	host, port, err := net.SplitHostPort(f.listen)
	if err != nil {
		return "http://" + f.listen, true
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port), true
}

func printCacheInfo(w io.Writer, c meta.Cache, f *serveFlags) error {
	base, ok := serverURL(f)
	if !ok {
		base = "http://HOST:PORT"
	}
	url := base + "/" + c.Name
	host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	access := "private (readers need a pull token)"
	if c.Public {
		access = "public"
	}
	fmt.Fprintf(w, "Cache:       %s, %s, priority %d\n", c.Name, access, c.Priority)
	fmt.Fprintf(w, "Substituter: %s\n", url)
	fmt.Fprintf(w, "Public key:  %s\n", publicKey(c))
	if !ok {
		fmt.Fprintf(w, "(the server listens on %s; Nix needs HTTP: pass --url with the address clients use)\n", f.listen)
	}
	fmt.Fprintf(w, "\nnix.conf lines for clients:\n")
	fmt.Fprintf(w, "  extra-substituters = %s\n", url)
	fmt.Fprintf(w, "  extra-trusted-public-keys = %s\n", publicKey(c))
	if !c.Public {
		fmt.Fprintf(w, "  netrc-file = /etc/nix/netrc\n")
		fmt.Fprintf(w, "and in /etc/nix/netrc (token from: silo token create --cache %s --pull):\n", c.Name)
		fmt.Fprintf(w, "  machine %s password <TOKEN>\n", host)
	}
	fmt.Fprintf(w, "\nPush (token from: silo token create --cache %s --push, in a netrc file):\n", c.Name)
	fmt.Fprintf(w, "  nix copy --to '%s?compression=zstd' --option netrc-file NETRC PATH...\n", url)
	return nil
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
