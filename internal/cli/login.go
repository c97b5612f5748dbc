package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/adminapi"
	"github.com/silo-cache/silo/internal/push"
)

func init() {
	Register(&Command{
		Name:  "login",
		Args:  "NAME URL [TOKEN]",
		Short: "check a cache's token against the server and save it with the URL under a short name",
		Long: `Saves the cache at URL under NAME in silo's client config
($XDG_CONFIG_HOME/silo/client.toml, or ~/.config/silo/client.toml; mode 0600),
so that 'silo push --to NAME', 'silo queue --to NAME', 'silo use NAME' and
the admin commands' '--server NAME' find it and send TOKEN as
"Authorization: Bearer TOKEN". Give TOKEN as '-' (or leave it out) to read it
from stdin, which keeps it out of the shell history and process list:
  silo token create --cache main --push | silo login main http://HOST:8080/main

The token is first checked against the server, which says what it grants;
a token the server refuses is not saved (--no-verify saves it unchecked).
URL may also be a silo server's root (http://HOST:8080), for --server NAME.
Logging in again under the same NAME replaces the entry; a running silo
queue picks the new token up within seconds.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			noVerify := fs.Bool("no-verify", false, "save the token without checking it against the server")
			fs.String("config", "", "TOML config `FILE` setting any of these flags (keys are the flag names)")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) < 2 || len(args) > 3 {
					return Usagef("login: want NAME URL [TOKEN], got %d arguments", len(args))
				}
				name, cacheURL := args[0], strings.TrimRight(args[1], "/")
				if err := push.ValidateCacheName(name); err != nil {
					return Usagef("login: %v", err)
				}
				if _, err := push.OpenTarget(cacheURL, nil); err != nil {
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
				if token == "" {
					return Usagef("login: no token given (as the TOKEN argument, or on stdin)")
				}
				if strings.ContainsAny(token, " \t\r\n") {
					return Usagef("login: the token contains whitespace")
				}
				if !*noVerify && !strings.HasPrefix(cacheURL, "file:") {
					grants, err := verifyLogin(ctx, cacheURL, token)
					if err != nil {
						return fmt.Errorf("login: %w", err)
					}
					fmt.Fprint(env.Stderr, grants)
				}
				path, err := push.ClientConfigPath(env.Getenv)
				if err != nil {
					return fmt.Errorf("login: %w", err)
				}
				cfg, err := push.LoadClientConfig(path)
				if err != nil {
					return fmt.Errorf("login: %w", err)
				}
				cfg.Caches[name] = push.CacheEntry{URL: cacheURL, Token: token}
				if err := cfg.Save(path); err != nil {
					return fmt.Errorf("login: %w", err)
				}
				fmt.Fprintf(env.Stderr, "saved cache %s (%s) in %s\n", name, cacheURL, path)
				return nil
			}
		},
	})
}

// verifyLogin asks the server what token grants and returns a description;
// an error if the server refuses it or it grants nothing on the cache.
func verifyLogin(ctx context.Context, cacheURL, token string) (string, error) {
	root := serverRoot(cacheURL)
	cacheName := ""
	if root != strings.TrimRight(cacheURL, "/") {
		cacheName = cacheURL[strings.LastIndexByte(cacheURL, '/')+1:]
	}
	c, err := adminapi.NewClient(root, token)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w, err := c.Whoami(ctx)
	switch {
	case errors.Is(err, adminapi.ErrUnauthorized):
		return "", fmt.Errorf("%s refused the token: %v (check it, or create one with silo token create; --no-verify saves it unchecked)", root, err)
	case errors.Is(err, adminapi.ErrNoAPI):
		return verifyByCacheInfo(ctx, cacheURL, token)
	case err != nil:
		return "", fmt.Errorf("cannot check the token: %w (start the server, check the URL, or save it unchecked with --no-verify)", err)
	}
	perms := strings.Join(w.Token.Perms, ",")
	var b strings.Builder
	fmt.Fprintf(&b, "token %s grants %s on caches matching %q", w.Token.ID, perms, w.Token.Cache)
	if w.Token.Expires.IsZero() {
		b.WriteString(", never expires\n")
	} else {
		fmt.Fprintf(&b, ", expires %s\n", w.Token.Expires.UTC().Format(time.RFC3339))
	}
	var names []string
	for _, ci := range w.Caches {
		access := "private"
		if ci.Public {
			access = "public"
		}
		names = append(names, ci.Name+" ("+access+")")
	}
	if len(names) > 0 {
		fmt.Fprintf(&b, "  existing caches it covers: %s\n", strings.Join(names, ", "))
	} else {
		fmt.Fprintf(&b, "  no existing cache matches %q yet\n", w.Token.Cache)
	}
	if cacheName != "" {
		if ok, _ := path.Match(w.Token.Cache, cacheName); !ok {
			return "", fmt.Errorf("token %s is for caches matching %q, not %s: create one with silo token create --cache %s --push (or --no-verify to save it anyway)",
				w.Token.ID, w.Token.Cache, cacheName, cacheName)
		}
		if !slices.Contains(w.Token.Perms, "push") && !slices.Contains(w.Token.Perms, "admin") {
			fmt.Fprintf(&b, "  note: it only reads; silo push --to NAME needs a token with --push\n")
		}
	}
	return b.String(), nil
}

// verifyByCacheInfo checks a token against a binary cache that is not a
// silo server (no admin API): the cache must answer nix-cache-info.
func verifyByCacheInfo(ctx context.Context, cacheURL, token string) (string, error) {
	u, err := url.JoinPath(cacheURL, "nix-cache-info")
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("cannot check the token: %w (start the server, check the URL, or save it unchecked with --no-verify)", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("%s refused the token (%s): check it, or save it unchecked with --no-verify", u, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%s answered %s: is %s a binary cache? (--no-verify saves the token unchecked)", u, resp.Status, cacheURL)
	}
	return fmt.Sprintf("%s is not a silo server: it answers with this token, but what the token grants is unknown\n", cacheURL), nil
}
