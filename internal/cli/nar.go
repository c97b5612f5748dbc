package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
)

// growPipe enlarges the pipe w writes to, if it is one, to 1 MiB (Linux
// pipes hold 64 KiB by default): the reader then wakes up 16 times less
// often. It is only an optimisation; errors are ignored.
func growPipe(w io.Writer) {
	f, ok := w.(*os.File)
	if !ok {
		return
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
}

func init() {
	Register(&Command{
		Name:  "nar dump",
		Args:  "PATH",
		Short: "write the NAR of a file system tree to stdout, like nix-store --dump",
		Long: `Serialises PATH (a directory, regular file or symlink) as a Nix ARchive,
byte for byte what 'nix-store --dump PATH' writes.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("nar dump: want exactly one PATH, got %d arguments", len(args))
				}
				// Dump already writes in 128 KiB chunks: a bufio.Writer
				// would only add a copy.
				growPipe(env.Stdout)
				return nar.Dump(ctx, env.Stdout, args[0])
			}
		},
	})
	Register(&Command{
		Name:  "nar restore",
		Args:  "DIR",
		Short: "create DIR from the NAR on stdin, like nix-store --restore",
		Long: `Reads a NAR from stdin and creates DIR (which must not exist) from it.
The NAR is checked strictly; on any error nothing is left behind.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return Usagef("nar restore: want exactly one DIR, got %d arguments", len(args))
				}
				return nar.Restore(ctx, bufio.NewReaderSize(env.Stdin, 256<<10), args[0])
			}
		},
	})
	Register(&Command{
		Name:  "nar ls",
		Args:  "[FILE]",
		Short: "print the .ls JSON listing of a NAR",
		Long: `Prints the listing of the NAR in FILE (or stdin, or '-'), exactly as Nix
writes it to <hashpart>.ls in a binary cache with write-nar-listing=true
(no newline at the end).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) > 1 {
					return Usagef("nar ls: want at most one FILE, got %d arguments", len(args))
				}
				in, name := env.Stdin, "stdin"
				if len(args) == 1 && args[0] != "-" {
					f, err := os.Open(args[0])
					if err != nil {
						return fmt.Errorf("nar ls: %w", err)
					}
					defer f.Close()
					in, name = f, args[0]
				}
				out := bufio.NewWriterSize(env.Stdout, 64<<10)
				if err := nar.WriteListing(out, bufio.NewReaderSize(in, 256<<10)); err != nil {
					return fmt.Errorf("nar ls %s: %w", name, err)
				}
				return out.Flush()
			}
		},
	})
	Register(&Command{
		Name:  "hash path",
		Args:  "PATH",
		Short: "print the SHA-256 of the NAR of PATH, like nix hash path",
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			format := fs.String("format", "sri", "how to print the hash: sri, nix32, base16 or base64")
			return func(ctx context.Context, env *Env, args []string) error {
				f, err := hash.ParseFormat(*format)
				if err != nil {
					return Usagef("hash path: --format: %v", err)
				}
				if len(args) != 1 {
					return Usagef("hash path: want exactly one PATH, got %d arguments", len(args))
				}
				h, _, err := nar.HashPath(ctx, args[0])
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(env.Stdout, h.Format(f))
				return err
			}
		},
	})
}
