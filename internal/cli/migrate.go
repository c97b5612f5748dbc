package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/blob/s3"
	"github.com/silo-cache/silo/internal/blob/tombstone"
	"github.com/silo-cache/silo/internal/datamove"
	"github.com/silo-cache/silo/internal/meta/postgres"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

func init() {
	Register(&Command{
		Name:  "migrate",
		Short: "bring a PostgreSQL metadata database's schema up to date",
		Long: `Applies the schema migrations the --db database lacks, and nothing else.
silo serve and the admin commands also migrate when they open the database
(replicas starting at once migrate once), so this is for deployments that
migrate in a separate step, before starting the new release. Migrations only
go forward, and each leaves the schema usable by the previous release, so
replicas can be upgraded one at a time. SQLite databases are migrated
whenever silo opens them.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("migrate: takes no arguments")
				}
				if err := checkDBURL(f.store.db); err != nil {
					return Usagef("migrate: %v", err)
				}
				if !isPostgres(f.store.db) {
					return Usagef("migrate: give the PostgreSQL database with --db postgres://... (SQLite is migrated whenever silo opens it)")
				}
				s, err := postgres.Connect(ctx, f.store.db, postgres.Options{ApplicationName: applicationName()})
				if err != nil {
					return fmt.Errorf("migrate: %w", err)
				}
				defer s.Close()
				from, to, err := s.Migrate(ctx)
				if err != nil {
					return fmt.Errorf("migrate: %s: %w", describeDB(f), err)
				}
				if from == to {
					fmt.Fprintf(env.Stdout, "%s is at schema version %d already.\n", describeDB(f), to)
				} else {
					fmt.Fprintf(env.Stdout, "Migrated %s from schema version %d to %d.\n", describeDB(f), from, to)
				}
				return nil
			}
		},
	})
	Register(&Command{
		Name:  "migrate-data",
		Short: "move an embedded installation (SQLite + disk) to PostgreSQL and S3",
		Long: `Copies everything silo serve keeps in --from (its --data-dir: silo.db and blobs/)
to the PostgreSQL database --to and the blob store --blobs: caches with their
signing keys, tokens, NARs with their listings, paths with their signed
narinfos, and build logs. Clients need nothing pushed again and keep their
trusted keys; only the substituter URL changes, to the new servers.

Each NAR file is checked against its recorded hash as it is copied, and a
record appears at the destination only after its bytes. It is safe to run
again: what the destination has is kept, so a second run moves only what was
pushed to the old server since. Stop the old server (or run again after its
last push) before pointing clients at the new one. Uploads still waiting for
their narinfo are not moved.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			from := fs.String("from", "", "the embedded installation's data `DIR` (silo serve's --data-dir)")
			to := fs.String("to", "", "the PostgreSQL database `URL` to move to (as silo serve --db)")
			blobsURL := fs.String("blobs", "", "the blob store `URL` to move to (as silo serve --blobs: s3://BUCKET?endpoint=...&region=..., or a directory)")
			credFile := fs.String("s3-credentials-file", "", "AWS credentials `FILE` for an s3:// --blobs (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or $AWS_SHARED_CREDENTIALS_FILE)")
			jobs := fs.Int("jobs", 8, "NARs copied at once")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("migrate-data: takes no arguments (use --from, --to, --blobs)")
				}
				if *from == "" || *to == "" || *blobsURL == "" {
					return Usagef("migrate-data: --from DATADIR, --to postgres://... and --blobs URL are all required")
				}
				if err := checkDBURL(*to); err != nil || !isPostgres(*to) {
					return Usagef("migrate-data: --to: want a postgres:// URL without a password (%v)", err)
				}
				srcDB, srcBlobDir := dataPaths(*from)
				if _, err := os.Stat(srcDB); err != nil {
					return fmt.Errorf("migrate-data: --from %s: %w (point it at silo serve's --data-dir)", *from, err)
				}
				src, err := sqlite.Open(ctx, srcDB)
				if err != nil {
					return fmt.Errorf("migrate-data: %w", err)
				}
				defer src.Close()
				srcBlobs, err := disk.Open(srcBlobDir)
				if err != nil {
					return fmt.Errorf("migrate-data: %w", err)
				}
				dst, err := postgres.Open(ctx, *to, postgres.Options{ApplicationName: applicationName()})
				if err != nil {
					return fmt.Errorf("migrate-data: %w", err)
				}
				defer dst.Close()
				var dstBlobs blob.Store
				if strings.HasPrefix(*blobsURL, "s3://") {
					o, err := s3.ParseURL(*blobsURL)
					if err != nil {
						return Usagef("migrate-data: --blobs: %v", err)
					}
					if o.Creds, err = s3.Credentials(env.Getenv, *credFile); err != nil {
						return fmt.Errorf("migrate-data: %w", err)
					}
					o.Journal = dst
					if dstBlobs, err = s3.Open(ctx, o); err != nil {
						return fmt.Errorf("migrate-data: %w", err)
					}
				} else {
					dir, err := blobDir(&serveFlags{store: storageFlags{blobs: *blobsURL}})
					if err != nil {
						return err
					}
					if dstBlobs, err = disk.Open(dir); err != nil {
						return fmt.Errorf("migrate-data: %w", err)
					}
				}
				st, err := datamove.Move(ctx, src, srcBlobs, dst, tombstone.New(dstBlobs, dst), datamove.Options{Jobs: *jobs, Progress: env.Stderr})
				if err != nil {
					return fmt.Errorf("migrate-data: %w (what was moved stays; run again to resume)", err)
				}
				fmt.Fprintf(env.Stdout, "Moved %s to %s:\n", *from, describeDB(&serveFlags{store: storageFlags{db: *to}}))
				fmt.Fprintf(env.Stdout, "  caches  %d created, %d there already\n", st.Caches, st.CachesKept)
				fmt.Fprintf(env.Stdout, "  tokens  %d created, %d there already\n", st.Tokens, st.TokensKept)
				fmt.Fprintf(env.Stdout, "  NARs    %d recorded, %d there already; %d files copied (%s)\n", st.NARs, st.PresentNARs, st.Blobs, humanBytes(st.BlobBytes))
				fmt.Fprintf(env.Stdout, "  paths   %d recorded, %d there already\n", st.Paths, st.PresentPaths)
				fmt.Fprintf(env.Stdout, "  logs    %d recorded\n", st.Logs)
				if st.SkippedPaths > 0 {
					fmt.Fprintf(env.Stdout, "  %d paths skipped: pushed to the old server during the move (run again), or the destination holds their NAR as another file (push them again)\n", st.SkippedPaths)
				}
				return nil
			}
		},
	})
}
