package cli

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/silo-cache/silo/internal/blob/disk"
)

func init() {
	Register(&Command{
		Name:        "init",
		Short:       "create a data directory for silo serve (the admin commands never create one)",
		ServeConfig: true,
		Long: `Creates --data-dir (default ./silo-data) with an empty metadata database
(silo.db) and blob directory (blobs/), so that silo cache create and silo
token create can run before the server first starts. silo serve creates the
directory too. Running it on an existing data directory changes nothing.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			dataDir := fs.String("data-dir", "silo-data", "the data `DIR` to create")
			fs.String("config", "", "silo serve's TOML config `FILE`: its data-dir applies, its other keys are ignored")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("init: takes no arguments (the directory is --data-dir)")
				}
				if requireDataDir(*dataDir) == nil {
					fmt.Fprintf(env.Stderr, "%s already holds silo data; nothing to do\n", *dataDir)
					return nil
				}
				if err := os.MkdirAll(*dataDir, 0o700); err != nil {
					return fmt.Errorf("init: %w", err)
				}
				m, err := openMeta(ctx, *dataDir)
				if err != nil {
					return fmt.Errorf("init: %w", err)
				}
				if err := m.Close(); err != nil {
					return fmt.Errorf("init: %w", err)
				}
				_, blobDir := dataPaths(*dataDir)
				if _, err := disk.Open(blobDir); err != nil {
					return fmt.Errorf("init: %w", err)
				}
				next := "silo serve, and silo cache create NAME (both from this directory)"
				if *dataDir != "silo-data" {
					next = fmt.Sprintf("silo serve --data-dir %s, and silo cache create NAME --data-dir %s", *dataDir, *dataDir)
				}
				fmt.Fprintf(env.Stdout, "Created silo data directory %s.\nNext: %s.\n", *dataDir, next)
				return nil
			}
		},
	})
}
