package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// pushFlags are the settings shared by silo push and silo queue.
type pushFlags struct {
	to           *string
	storeDir     *string
	signingKey   *string
	skipSignedBy *string
	jobs         *int
	netrcFile    *string
	tmpDir       *string
	compression  *string
	level        *int
}

func addPushFlags(fs *flag.FlagSet) *pushFlags {
	fs.String("config", "", "TOML config `FILE` setting any of these flags (keys are the flag names)")
	return &pushFlags{
		to:           fs.String("to", "", "the cache: a `URL` (http://, https://, file:///DIR) or a NAME saved by silo login (required)"),
		storeDir:     fs.String("store-dir", string(storepath.DefaultDir), "the local Nix store `DIR`"),
		signingKey:   fs.String("signing-key-file", "", "sign each narinfo with the secret key in `FILE` (from silo key generate or nix-store --generate-binary-cache-key)"),
		skipSignedBy: fs.String("skip-signed-by", push.DefaultUpstreamKeys, "do not push paths validly signed by one of these public `KEYS` (space-separated; \"none\" pushes everything)"),
		jobs:         fs.Int("jobs", push.DefaultJobs, "upload at most `N` paths at once"),
		netrcFile:    fs.String("netrc-file", "", "netrc `FILE` with credentials for HTTP caches (default $NETRC or ~/.netrc); a token saved by silo login wins"),
		tmpDir:       fs.String("tmp-dir", "", "`DIR` for NARs too big to buffer in memory while they upload (default $TMPDIR or /tmp)"),
		compression:  fs.String("compression", "zstd", "how NARs are compressed for upload: zstd or none"),
		level:        fs.Int("compression-level", push.DefaultLevel, "zstd `LEVEL`, 1 (fastest) to 22 (smallest); Nix's own default is 3"),
	}
}

// setup validates the flags and returns the uploader, the store directory
// and the upstream keys. A long-running command (reload) re-reads
// credentials whenever their files change.
func (f *pushFlags) setup(cmd string, env *Env, reload bool) (*push.Uploader, storepath.Dir, *signature.KeySet, error) {
	if *f.to == "" {
		return nil, "", nil, Usagef("%s: --to URL|NAME is required", cmd)
	}
	if *f.jobs < 1 {
		return nil, "", nil, Usagef("%s: --jobs must be at least 1, got %d", cmd, *f.jobs)
	}
	dir, err := storepath.NewDir(*f.storeDir)
	if err != nil {
		return nil, "", nil, Usagef("%s: --store-dir: %v", cmd, err)
	}
	var skip *signature.KeySet
	if s := strings.TrimSpace(*f.skipSignedBy); s != "" && s != "none" {
		if skip, err = signature.ParseKeySet(s); err != nil {
			return nil, "", nil, Usagef("%s: --skip-signed-by: %v", cmd, err)
		}
	}
	if *f.compression != "zstd" && *f.compression != "none" {
		return nil, "", nil, Usagef("%s: --compression must be zstd or none, got %q", cmd, *f.compression)
	}
	if *f.level < 1 || *f.level > 22 {
		return nil, "", nil, Usagef("%s: --compression-level must be 1 to 22, got %d", cmd, *f.level)
	}
	u := &push.Uploader{TempDir: *f.tmpDir, Compression: *f.compression, CompressionLevel: *f.level}
	if *f.signingKey != "" {
		k, err := signature.LoadSecretKeyFile(*f.signingKey)
		if err != nil {
			return nil, "", nil, fmt.Errorf("%s: %w", cmd, err)
		}
		u.SigningKey = &k
	}
	u.Target, err = push.ResolveTarget(*f.to, env.Getenv, push.TargetOptions{NetrcFile: *f.netrcFile, Reload: reload})
	if err != nil {
		return nil, "", nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return u, dir, skip, nil
}

// parseStorePaths accepts store paths and symlinks to them (./result).
func parseStorePaths(dir storepath.Dir, args []string) ([]storepath.Path, error) {
	var paths []storepath.Path
	for _, a := range args {
		p, err := dir.Parse(strings.TrimRight(a, "/"))
		if err != nil {
			resolved, rerr := filepath.EvalSymlinks(a)
			if rerr != nil {
				return nil, fmt.Errorf("%s is not a store path: %w", a, err)
			}
			if p, err = dir.Parse(resolved); err != nil {
				return nil, fmt.Errorf("%s (%s) is not a store path: %w", a, resolved, err)
			}
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func init() {
	Register(&Command{
		Name:  "push",
		Args:  "PATH...",
		Short: "upload store paths and their closure to a binary cache",
		Long: `Uploads each PATH (a store path, or a symlink to one such as ./result)
and everything it references to the cache given by --to: a silo server, any
Nix binary cache that accepts HTTP PUT, or a file:///DIR directory that Nix
reads with --substituters file:///DIR.

Paths the cache already has are skipped (asked in one request from a silo
server, by narinfo HEAD requests elsewhere), and so are paths validly signed
by an upstream key (--skip-signed-by; cache.nixos.org by default): clients
fetch those from upstream. The rest upload in dependency order, --jobs at a
time, each NAR streamed from the store through zstd, its narinfo last: an
interrupted push (Ctrl-C) leaves no half-uploaded path behind, and running it
again resumes.

Path metadata comes from Nix's database when silo runs as root, else from
nix-daemon (NIX_DAEMON_SOCKET_PATH, NIX_REMOTE=daemon as for Nix).
Credentials: a token saved with 'silo login NAME URL TOKEN' (sent as
Authorization: Bearer), or a netrc entry for the host (sent as HTTP Basic,
like Nix).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			pf := addPushFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) == 0 {
					return Usagef("push: want at least one store PATH")
				}
				u, dir, skip, err := pf.setup("push", env, false)
				if err != nil {
					return err
				}
				roots, err := parseStorePaths(dir, args)
				if err != nil {
					return fmt.Errorf("push: %w", err)
				}
				store, err := localstore.Open(ctx, dir)
				if err != nil {
					return fmt.Errorf("push: %w", err)
				}
				defer store.Close()
				display := push.NewDisplay(env.Stderr, isTerminal(env.Stderr))
				res, err := push.Push(ctx, roots, push.Options{
					Store: store, Uploader: u, Jobs: *pf.jobs, SkipSignedBy: skip, Progress: display,
				})
				display.Finish(res, err)
				if err != nil {
					return fmt.Errorf("push to %s: %w", u.Target, err)
				}
				return nil
			}
		},
	})
}
