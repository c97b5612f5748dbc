package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/silo-cache/silo/internal/signature"
)

func init() {
	Register(&Command{
		Name:  "key generate",
		Args:  "NAME",
		Short: "make a signing key pair, like nix-store --generate-binary-cache-key",
		Long: `Generates an ed25519 key pair named NAME (conventionally the cache's host
name and a generation number: cache.example.org-1) and writes the secret key
to --secret (mode 0600) and the public key to --public (mode 0644), or to
stdout without --public. The files are in Nix's format: nix store sign
--key-file reads the secret one, trusted-public-keys takes the public one.
Existing files are never overwritten unless --force is given.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			secret := fs.String("secret", "", "write the secret key to `FILE` (required)")
			public := fs.String("public", "", "write the public key to `FILE` (default: stdout)")
			force := fs.Bool("force", false, "overwrite existing key files")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("key generate: want exactly one NAME (e.g. cache.example.org-1), got %d arguments", len(args))
				}
				if *secret == "" {
					return Usagef("key generate: --secret FILE is required")
				}
				if *secret == *public {
					return Usagef("key generate: --secret and --public name the same file %s", *secret)
				}
				if err := signature.ValidateKeyName(args[0]); err != nil {
					return Usagef("key generate: %v", err)
				}
				// Refuse before writing anything, so no half pair is left.
				if !*force {
					for _, f := range []string{*secret, *public} {
						if f == "" {
							continue
						}
						if _, err := os.Lstat(f); err == nil {
							return fmt.Errorf("key generate: %s already exists (use --force to overwrite it)", f)
						}
					}
				}
				k, err := signature.GenerateKey(args[0], rand.Reader)
				if err != nil {
					return fmt.Errorf("key generate: %w", err)
				}
				if err := writeKeyFile(*secret, k.String(), 0o600, *force); err != nil {
					return err
				}
				if *public == "" {
					_, err := fmt.Fprintln(env.Stdout, k.Public().String())
					return err
				}
				return writeKeyFile(*public, k.Public().String(), 0o644, *force)
			}
		},
	})
	Register(&Command{
		Name:  "key public",
		Short: "print the public key of a secret key",
		Long: `Reads a secret key (from --secret, or stdin) and prints its public key
line, the form trusted-public-keys and silo's --trusted-public-keys take.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			secret := fs.String("secret", "", "read the secret key from `FILE` (default: stdin)")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("key public: takes no arguments (give the key with --secret FILE or on stdin)")
				}
				var k signature.SecretKey
				if *secret != "" {
					var err error
					if k, err = signature.LoadSecretKeyFile(*secret); err != nil {
						return fmt.Errorf("key public: %w", err)
					}
				} else {
					data, err := io.ReadAll(io.LimitReader(env.Stdin, 64<<10))
					if err != nil {
						return fmt.Errorf("key public: read stdin: %w", err)
					}
					if k, err = signature.ParseSecretKey(string(data)); err != nil {
						return fmt.Errorf("key public: secret key on stdin: %w (want NAME:BASE64 as written by silo key generate)", err)
					}
				}
				_, err := fmt.Fprintln(env.Stdout, k.Public().String())
				return err
			}
		},
	})
}

// writeKeyFile writes one key line to path with mode perm, creating it
// exclusively unless force. A partly written file is removed.
func writeKeyFile(path, key string, perm os.FileMode, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("key generate: %s already exists (use --force to overwrite it)", path)
	}
	if err != nil {
		return fmt.Errorf("key generate: %w", err)
	}
	err = f.Chmod(perm) // the umask or an overwritten file's mode must not loosen it
	if err == nil {
		_, err = io.WriteString(f, strings.TrimSpace(key)+"\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("key generate: write %s: %w", path, err)
	}
	return nil
}
