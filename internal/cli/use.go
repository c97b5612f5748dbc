package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/adminapi"
	"github.com/silo-cache/silo/internal/confedit"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/signature"
)

func init() {
	Register(&Command{
		Name:  "use",
		Args:  "NAME|URL",
		Short: "configure Nix to substitute from a cache: substituter, trusted key, netrc token",
		Long: `Writes what Nix needs to substitute from a cache into its configuration:
the substituter (extra-substituters), the cache's public key
(extra-trusted-public-keys) and, for a private cache, the token as the host's
password in the netrc file Nix reads (netrc-file). NAME is a cache saved with
silo login (its URL and token); a URL may be given instead, with the token of
a silo login entry for that URL or --token-file. A silo server tells the
public key; for other caches (silo publish, nix-serve, ...) pass --public-key.

By default it edits your own Nix configuration ($NIX_USER_CONF_FILES, else
$XDG_CONFIG_HOME/nix/nix.conf or ~/.config/nix/nix.conf, and a netrc beside
it); --system edits the machine's ($NIX_CONF_DIR/nix.conf, default
/etc/nix/nix.conf, and its netrc-file), which nix-daemon uses: restart the
daemon after (systemctl restart nix-daemon). Running it again changes
nothing; it says what it changed. A netrc holds one password per host: an
entry for the cache's host with another token is replaced, and said so.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			system := fs.Bool("system", false, "edit the machine's Nix configuration ($NIX_CONF_DIR, default /etc/nix) instead of yours")
			publicKey := fs.String("public-key", "", "the cache's public `KEY` (name:base64); default: asked from the silo server")
			tokenFile := fs.String("token-file", "", "`FILE` holding a pull token for a private cache (default: the token saved by silo login)")
			fs.String("config", "", "TOML config `FILE` setting any of these flags (keys are the flag names)")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("use: want one cache NAME (saved by silo login) or URL, got %d arguments", len(args))
				}
				return runUse(ctx, env, args[0], *system, *publicKey, *tokenFile)
			}
		},
	})
}

// nixConfPaths returns the nix.conf a scope edits and the netrc Nix reads
// by default for it.
func nixConfPaths(env *Env, system bool) (conf, netrc string, err error) {
	if system {
		dir := env.Getenv("NIX_CONF_DIR")
		if dir == "" {
			dir = "/etc/nix"
		}
		return filepath.Join(dir, "nix.conf"), filepath.Join(dir, "netrc"), nil
	}
	if files := env.Getenv("NIX_USER_CONF_FILES"); files != "" {
		first := strings.Split(files, ":")[0]
		return first, filepath.Join(filepath.Dir(first), "netrc"), nil
	}
	dir := env.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := env.Getenv("HOME")
		if home == "" {
			return "", "", errors.New("neither $XDG_CONFIG_HOME nor $HOME is set: cannot find your nix.conf (or use --system)")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "nix", "nix.conf"), filepath.Join(dir, "nix", "netrc"), nil
}

func runUse(ctx context.Context, env *Env, nameOrURL string, system bool, publicKey, tokenFile string) error {
	cacheURL, token := nameOrURL, ""
	if path, err := push.ClientConfigPath(env.Getenv); err == nil {
		cfg, err := push.LoadClientConfig(path)
		if err != nil {
			return fmt.Errorf("use: %w", err)
		}
		if cacheURL, token, err = cfg.Resolve(nameOrURL); err != nil {
			return fmt.Errorf("use: %w (client config: %s)", err, path)
		}
	} else if !strings.Contains(nameOrURL, "://") {
		return fmt.Errorf("use: %w", err)
	}
	cacheURL = strings.TrimRight(cacheURL, "/")
	u, err := url.Parse(cacheURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Usagef("use: %q is not an http:// or https:// cache URL", cacheURL)
	}
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("use: --token-file: %w", err)
		}
		if token = strings.TrimSpace(string(data)); token == "" {
			return fmt.Errorf("use: --token-file %s is empty", tokenFile)
		}
	}

	public := true
	if publicKey == "" {
		ci, err := cacheInfoFromServer(ctx, cacheURL, token)
		if err != nil {
			return fmt.Errorf("use: %w", err)
		}
		publicKey, public = ci.PublicKey, ci.Public
	} else if _, err := signature.ParsePublicKey(publicKey); err != nil {
		return Usagef("use: --public-key: %v", err)
	} else {
		public = token == "" // a cache we cannot ask: use the token we have
	}
	if !public && token == "" {
		return fmt.Errorf("use: cache %s is private: save a pull token first with silo login NAME %s (or pass --token-file)", cacheURL, cacheURL)
	}

	confPath, netrcPath, err := nixConfPaths(env, system)
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	conf, err := confedit.Open(confPath, 0o644)
	if err != nil {
		return fmt.Errorf("use: %w", err)
	}
	var msgs []string
	msgs = append(msgs, conf.AddWord("extra-substituters", cacheURL, "substituters"))
	msgs = append(msgs, conf.AddWord("extra-trusted-public-keys", publicKey, "trusted-public-keys"))
	var netrc *confedit.File
	if !public {
		if v, ok := conf.Get("netrc-file"); ok {
			netrcPath = v
		} else if !system {
			// Nix's default netrc-file is the machine's; yours needs a line.
			msgs = append(msgs, conf.Set("netrc-file", netrcPath))
		}
		if netrc, err = confedit.Open(netrcPath, 0o600); err != nil {
			return fmt.Errorf("use: %w", err)
		}
		host := u.Hostname()
		msg, replaced := netrc.SetNetrcPassword(host, token)
		if replaced {
			msg += fmt.Sprintf(" (netrc holds one password per host: other caches on %s now get this token too)", host)
		}
		msgs = append(msgs, msg)
	}
	changed := conf.Changed() || netrc != nil && netrc.Changed()
	if err := conf.Save(); err != nil {
		return fmt.Errorf("use: %w", err)
	}
	if netrc != nil {
		if err := netrc.Save(); err != nil {
			return fmt.Errorf("use: %w", err)
		}
	}
	for _, m := range msgs {
		fmt.Fprintln(env.Stdout, m)
	}
	switch {
	case !changed:
		fmt.Fprintf(env.Stdout, "Nothing changed: Nix already uses %s.\n", cacheURL)
	case system:
		fmt.Fprintln(env.Stdout, "Restart nix-daemon so that it reads the new settings: systemctl restart nix-daemon")
	case os.Geteuid() != 0:
		fmt.Fprintln(env.Stdout, "Note: with nix-daemon (multi-user Nix) your substituters count only if you are in trusted-users or the URL is in trusted-substituters; as root, silo use --system sets them up for every user.")
	}
	return nil
}

// cacheInfoFromServer asks the silo server serving cacheURL for the cache's
// public key and whether it is public.
func cacheInfoFromServer(ctx context.Context, cacheURL, token string) (adminapi.CacheInfo, error) {
	root := serverRoot(cacheURL)
	name := cacheURL[strings.LastIndexByte(cacheURL, '/')+1:]
	if root == cacheURL {
		return adminapi.CacheInfo{}, fmt.Errorf("%s names no cache (want http://HOST:PORT/NAME, or pass --public-key)", cacheURL)
	}
	c, err := adminapi.NewClient(root, token)
	if err != nil {
		return adminapi.CacheInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ci, err := c.Cache(ctx, name)
	switch {
	case err == nil:
		return ci, nil
	case errors.Is(err, adminapi.ErrUnauthorized) && token == "":
		return ci, fmt.Errorf("cache %s is private (or does not exist): save a pull token with silo login NAME %s, or pass --token-file", cacheURL, cacheURL)
	case errors.Is(err, adminapi.ErrNoAPI):
		return ci, fmt.Errorf("%s is not a silo server, so it cannot tell the cache's key: pass --public-key NAME:KEY", root)
	}
	return ci, err
}
