package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/silo-cache/silo/internal/listen"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/queue"
)

const queueLong = `Runs the upload queue: a daemon listening on a unix socket (--socket, or a
socket passed by systemd socket activation) that takes the store paths
'silo hook' hands it after each build, expands their closures, and uploads
what the cache (--to: a URL or a name saved by silo login) lacks, in
dependency order, --jobs at a time, signed with --signing-key-file if given.

Its state is a SQLite database in --state: a path accepted is uploaded
eventually, across crashes (kill -9), restarts and an unreachable cache.
Failed uploads retry with exponential backoff (--min-backoff to
--max-backoff, with jitter); the last error of each is kept, and a cache
refusing the credentials (401, 403) is named as such. Paths the hook could
not hand over (queue down) wait in the spool directory beside the socket
(SOCKET.spool), read at start and every few seconds.

Credentials (the token saved by silo login, or the netrc file) are re-read
whenever those files change, before each attempt: after 'silo login NAME
URL' with a new token, failing paths are retried within seconds, without a
restart. SIGHUP re-reads them and retries every failed path at once; so
does a restart, which starts with no backoff left over.

Subcommands, talking to a running queue on --socket:
  silo queue status [--json]   pending, in flight, failing, failed, done
  silo queue retry             retry failed paths now`

func init() {
	Register(&Command{
		Name:  "queue",
		Args:  "[status|retry]",
		Short: "run the durable upload queue fed by silo hook (or: queue status, queue retry)",
		Long:  queueLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			pf := addPushFlags(fs)
			socket := fs.String("socket", "", "the queue's unix socket `PATH`; its spool is PATH.spool (default /var/lib/silo/queue.sock for root, else $XDG_STATE_HOME/silo/queue.sock)")
			state := fs.String("state", "", "`DIR` for the queue database (default /var/lib/silo/queue for root, else $XDG_STATE_HOME/silo/queue)")
			minBackoff := fs.Duration("min-backoff", time.Second, "first retry delay after a failed upload")
			maxBackoff := fs.Duration("max-backoff", 5*time.Minute, "longest retry delay")
			asJSON := fs.Bool("json", false, "queue status: print JSON")
			return func(ctx context.Context, env *Env, args []string) error {
				sock := *socket
				if sock == "" {
					sock = queue.DefaultSocket(env.Getenv)
				}
				if len(args) > 0 {
					switch args[0] {
					case "status":
						return queueStatus(ctx, env, sock, *asJSON)
					case "retry":
						n, err := queue.NewClient(sock).Retry(ctx)
						if err != nil {
							return fmt.Errorf("queue retry: %w", err)
						}
						fmt.Fprintf(env.Stdout, "requeued %d paths\n", n)
						return nil
					}
					return Usagef("queue: unknown subcommand %q (want status or retry, or no argument to run the queue)", args[0])
				}
				if *minBackoff <= 0 || *maxBackoff < *minBackoff {
					return Usagef("queue: want 0 < --min-backoff <= --max-backoff, got %v and %v", *minBackoff, *maxBackoff)
				}
				u, dir, skip, err := pf.setup("queue", env, true)
				if err != nil {
					return err
				}
				stateDir := *state
				if stateDir == "" {
					stateDir = queue.DefaultStateDir(env.Getenv)
				}
				log := slog.New(slog.NewTextHandler(env.Stderr, nil))
				store, err := localstore.Open(ctx, dir)
				if err != nil {
					return fmt.Errorf("queue: %w", err)
				}
				defer store.Close()
				q, err := queue.Open(ctx, queue.Options{
					StateDir: stateDir, Socket: sock, StoreDir: dir, Store: store, Uploader: u,
					Jobs: *pf.jobs, SkipSignedBy: skip, MinBackoff: *minBackoff, MaxBackoff: *maxBackoff, Log: log,
				})
				if err != nil {
					return fmt.Errorf("queue: %w", err)
				}
				defer q.Close()
				if err := os.MkdirAll(queue.SpoolDir(sock), 0o700); err != nil {
					return fmt.Errorf("queue: create spool: %w", err)
				}
				l, err := listen.Listen(ctx, "unix:"+sock)
				if err != nil {
					return fmt.Errorf("queue: %w", err)
				}
				log.Info("queue running", "socket", sock, "state", stateDir, "target", u.Target.String())
				stop := reloadOnHUP(ctx, q)
				defer stop()
				return q.Serve(ctx, l)
			}
		},
	})
	Register(&Command{
		Name:  "hook",
		Short: "Nix post-build-hook: hand the build's outputs to silo queue; never fails a build",
		Long: `Reads the store paths Nix puts in $OUT_PATHS (and $DRV_PATH) and hands
them to the queue on --socket, or, if the queue does not answer within
--timeout, writes them atomically to the spool directory beside the socket
(SOCKET.spool), which the queue reads when it runs. It always exits 0 within
milliseconds: a build never waits for or fails because of an upload.

Nix runs post-build-hook without arguments, and fails the build if the hook
fails, so install a wrapper that names silo by its absolute path (nix-daemon
runs it with systemd's PATH, not yours) and cannot fail, e.g.
/etc/nix/silo-hook (chmod +x):

  #!/bin/sh
  /usr/local/bin/silo hook --socket /var/lib/silo/queue.sock || true

and in nix.conf, then restart nix-daemon (it reads nix.conf only at start):

  post-build-hook = /etc/nix/silo-hook

The socket must be the one 'silo queue --socket' listens on; both default
to the same path, so --socket is only needed to run several queues.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			socket := fs.String("socket", "", "the queue's unix socket `PATH`; its spool is PATH.spool (default /var/lib/silo/queue.sock for root, else $XDG_STATE_HOME/silo/queue.sock)")
			timeout := fs.Duration("timeout", 30*time.Millisecond, "how long to wait for the queue before spooling")
			return func(ctx context.Context, env *Env, args []string) error {
				sock := *socket
				if sock == "" {
					sock = queue.DefaultSocket(env.Getenv)
				}
				queue.Hook(ctx, env.Getenv, queue.HookOptions{Socket: sock, Timeout: *timeout, Stderr: env.Stderr})
				return nil
			}
		},
	})
}

// reloadOnHUP makes SIGHUP re-read the queue's credentials and retry
// failed paths; stop ends that.
func reloadOnHUP(ctx context.Context, q *queue.Queue) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				q.Reload(ctx)
			}
		}
	}()
	return func() { signal.Stop(hup); cancel() }
}

func queueStatus(ctx context.Context, env *Env, sock string, asJSON bool) error {
	s, err := queue.NewClient(sock).Status(ctx)
	if err != nil {
		if n := queue.CountSpool(queue.SpoolDir(sock)); n > 0 {
			return fmt.Errorf("queue status: %w; %d builds' outputs wait in the spool %s until it runs", err, n, queue.SpoolDir(sock))
		}
		return fmt.Errorf("queue status: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(env.Stdout, "target:    %s\n", s.Target)
	fmt.Fprintf(env.Stdout, "pending:   %d (%d in flight, %d failing and retrying)\n", s.Pending, s.InFlight, s.Failing)
	fmt.Fprintf(env.Stdout, "failed:    %d (run silo queue retry once fixed)\n", s.Failed)
	fmt.Fprintf(env.Stdout, "done:      %d (%d uploaded by this queue)\n", s.Done, s.Uploaded)
	if s.Roots > 0 || s.Spooled > 0 {
		fmt.Fprintf(env.Stdout, "incoming:  %d paths to expand, %d spool files\n", s.Roots, s.Spooled)
	}
	for _, f := range s.Failures {
		when := "not retried until silo queue retry"
		if !f.NextAttempt.IsZero() {
			when = "next attempt " + f.NextAttempt.Format(time.RFC3339)
		}
		fmt.Fprintf(env.Stdout, "  %s: %d attempts, %s: %s\n", f.Path, f.Attempts, when, strings.TrimSpace(f.Error))
	}
	return nil
}
