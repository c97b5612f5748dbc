package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/silo-cache/silo/internal/listen"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/queue"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/storewatch"
)

const watchLong = `
New store paths are noticed in Nix's database when silo may read it
(root: every path registered, whether built, substituted or added, exactly
once), else by watching the store directory with inotify and asking
nix-daemon which new entries became valid (--watch). Derivations (.drv) are
left out unless --include-drvs. Each new path is handed to an upload queue
(the one silo queue runs: durable, closures in dependency order, retries
with backoff, --skip-signed-by, credentials re-read when silo login saves
new ones). No post-build-hook and no root access to nix.conf are needed.`

// watchFlags are the settings watch-store and watch-exec add to push's.
type watchFlags struct {
	mode        *string
	interval    *time.Duration
	includeDrvs *bool
}

func addWatchFlags(fs *flag.FlagSet) *watchFlags {
	return &watchFlags{
		mode:        fs.String("watch", storewatch.ModeAuto, "how to notice new paths: db (Nix's database, needs root), inotify (any user, with nix-daemon) or auto"),
		interval:    fs.Duration("interval", time.Second, "how often to look for new paths"),
		includeDrvs: fs.Bool("include-drvs", false, "push derivations (.drv files) too"),
	}
}

// watcher opens the store and the watcher for the flags.
func (wf *watchFlags) open(ctx context.Context, dir storepath.Dir) (localstore.Store, *storewatch.Watcher, error) {
	if *wf.interval <= 0 {
		return nil, nil, Usagef("--interval must be positive, got %v", *wf.interval)
	}
	store, err := localstore.Open(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	w, err := storewatch.New(ctx, storewatch.Options{Dir: dir, Mode: *wf.mode, Store: store})
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, w, nil
}

// feed polls w and hands what it finds to q; all checks every inotify
// candidate now. It returns how many paths it queued.
func (wf *watchFlags) feed(ctx context.Context, w *storewatch.Watcher, q *queue.Queue, all bool) (int, error) {
	ps, err := w.Poll(ctx, all)
	if err != nil {
		return 0, err
	}
	var paths []string
	for _, p := range ps {
		if !*wf.includeDrvs && strings.HasSuffix(p.Name(), ".drv") {
			continue
		}
		paths = append(paths, p.String())
	}
	if len(paths) == 0 {
		return 0, nil
	}
	return len(paths), q.Enqueue(ctx, paths, "")
}

func init() {
	Register(&Command{
		Name:  "watch-store",
		Short: "push every path that appears in the local Nix store while it runs",
		Long: `Runs until stopped (SIGINT, SIGTERM), pushing every store path that becomes
valid meanwhile, with its closure, to the cache given by --to (a URL or a
name saved by silo login), like attic watch-store. Paths valid before it
started are not pushed (use silo push for those). Its queue lives in
--state, so uploads pending when it stops resume when it starts again;
--socket serves the queue's status to silo queue status --socket.` + watchLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			pf := addPushFlags(fs)
			wf := addWatchFlags(fs)
			state := fs.String("state", "", "`DIR` for the upload queue (default /var/lib/silo/watch-store for root, else $XDG_STATE_HOME/silo/watch-store)")
			socket := fs.String("socket", "", "also serve the queue's status on this unix socket `PATH` (silo queue status --socket PATH)")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("watch-store: takes no arguments (the cache is --to)")
				}
				u, dir, skip, err := pf.setup("watch-store", env, true)
				if err != nil {
					return err
				}
				stateDir := *state
				if stateDir == "" {
					stateDir = filepath.Join(filepath.Dir(queue.DefaultStateDir(env.Getenv)), "watch-store")
				}
				store, w, err := wf.open(ctx, dir)
				if err != nil {
					return fmt.Errorf("watch-store: %w", err)
				}
				defer store.Close()
				defer w.Close()
				log := slog.New(slog.NewTextHandler(env.Stderr, nil))
				q, err := queue.Open(ctx, queue.Options{StateDir: stateDir, StoreDir: dir, Store: store, Uploader: u,
					Jobs: *pf.jobs, SkipSignedBy: skip, Log: log})
				if err != nil {
					return fmt.Errorf("watch-store: %w", err)
				}
				defer q.Close()
				qctx, stopQueue := context.WithCancel(ctx)
				defer stopQueue()
				qdone := make(chan error, 1)
				if *socket != "" {
					l, err := listen.Listen(ctx, "unix:"+*socket)
					if err != nil {
						return fmt.Errorf("watch-store: %w", err)
					}
					go func() { qdone <- q.Serve(qctx, l) }()
				} else {
					go func() { qdone <- q.Run(qctx) }()
				}
				stopHUP := reloadOnHUP(ctx, q)
				defer stopHUP()
				log.Info("watching the store", "store", string(dir), "how", w.Mode(), "target", u.Target.String(), "state", stateDir)
				t := time.NewTicker(*wf.interval)
				defer t.Stop()
				for {
					if n, err := wf.feed(ctx, w, q, false); err != nil && ctx.Err() == nil {
						log.Warn("looking for new store paths", "err", err)
					} else if n > 0 {
						log.Info("new store paths", "paths", n)
					}
					select {
					case <-ctx.Done():
						stopQueue()
						<-qdone
						log.Info("stopped; pending uploads resume at the next start", "state", stateDir)
						return nil
					case err := <-qdone:
						if ctx.Err() != nil { // stopping: the queue saw it first
							log.Info("stopped; pending uploads resume at the next start", "state", stateDir)
							return nil
						}
						if err == nil {
							err = errors.New("stopped unexpectedly")
						}
						return fmt.Errorf("watch-store: queue: %w", err)
					case <-t.C:
					}
				}
			}
		},
	})
	Register(&Command{
		Name:       "watch-exec",
		Args:       "[--] COMMAND [ARGS...]",
		FlagsFirst: true,
		Short:      "run a command and push every store path that appears while it runs",
		Long: `Runs COMMAND (after --), pushing every store path that becomes valid while it
runs, with its closure, to the cache given by --to, like cachix watch-exec:
  silo watch-exec --to main -- nix build .#package
When COMMAND exits, silo finishes the uploads (each path gets --retries
attempts), prints what it pushed, and exits with COMMAND's exit code, or 1
if COMMAND succeeded but uploads failed. Paths other processes add to the
store meanwhile are pushed too. SIGINT and SIGTERM are passed to COMMAND.` + watchLong,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			pf := addPushFlags(fs)
			wf := addWatchFlags(fs)
			retries := fs.Int("retries", 3, "attempts per path before giving up once COMMAND has exited")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) == 0 {
					return Usagef("watch-exec: want a COMMAND to run, after --: silo watch-exec --to CACHE -- nix build ...")
				}
				if *retries < 1 {
					return Usagef("watch-exec: --retries must be at least 1, got %d", *retries)
				}
				u, dir, skip, err := pf.setup("watch-exec", env, true)
				if err != nil {
					return err
				}
				store, w, err := wf.open(ctx, dir)
				if err != nil {
					return fmt.Errorf("watch-exec: %w", err)
				}
				defer store.Close()
				defer w.Close()
				stateDir, err := os.MkdirTemp("", "silo-watch-exec-")
				if err != nil {
					return fmt.Errorf("watch-exec: %w", err)
				}
				defer os.RemoveAll(stateDir)
				log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
				q, err := queue.Open(ctx, queue.Options{StateDir: stateDir, StoreDir: dir, Store: store, Uploader: u,
					Jobs: *pf.jobs, SkipSignedBy: skip, Log: log, MinBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second})
				if err != nil {
					return fmt.Errorf("watch-exec: %w", err)
				}
				defer q.Close()
				qctx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
				defer stopQueue()
				qdone := make(chan error, 1)
				go func() { qdone <- q.Run(qctx) }()

				code, runErr := runWatched(ctx, env, args, wf, w, q)
				if runErr != nil {
					stopQueue()
					<-qdone
					return fmt.Errorf("watch-exec: %w", runErr)
				}
				// COMMAND is done: push what is left.
				if _, err := wf.feed(ctx, w, q, true); err != nil {
					log.Warn("looking for new store paths", "err", err)
				}
				for {
					ok, err := q.Settled(ctx, *retries)
					if err != nil || ok || ctx.Err() != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				stopQueue()
				<-qdone
				s, err := q.Status(context.WithoutCancel(ctx))
				if err != nil {
					return fmt.Errorf("watch-exec: %w", err)
				}
				present := s.Done - s.Uploaded
				fmt.Fprintf(env.Stderr, "silo watch-exec: pushed %d paths to %s (%d were there already or signed upstream)", s.Uploaded, u.Target, present)
				failed := s.Failed + s.Pending
				if failed > 0 {
					fmt.Fprintf(env.Stderr, "; %d FAILED:\n", failed)
					for _, f := range s.Failures {
						fmt.Fprintf(env.Stderr, "  %s: %s\n", f.Path, f.Error)
					}
				} else {
					fmt.Fprintln(env.Stderr)
				}
				switch {
				case code != 0:
					return &ExitError{Code: code}
				case failed > 0:
					return &ExitError{Code: 1}
				case ctx.Err() != nil:
					return fmt.Errorf("watch-exec: interrupted")
				}
				return nil
			}
		},
	})
}

// lookPath finds file in the PATH of environ.
func lookPath(file string, environ []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, kv := range environ {
		if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range filepath.SplitList(dirs) {
				p := filepath.Join(d, file)
				if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return exec.LookPath(file)
}

// runWatched runs the command, feeding the queue while it runs, and
// returns its exit code.
func runWatched(ctx context.Context, env *Env, args []string, wf *watchFlags, w *storewatch.Watcher, q *queue.Queue) (int, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	if env.Environ != nil {
		cmd.Env = env.Environ()
		if p, err := lookPath(args[0], cmd.Env); err == nil {
			cmd.Path, cmd.Err = p, nil
		}
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", args[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t := time.NewTicker(*wf.interval)
	defer t.Stop()
	done := ctx.Done()
	for {
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
					return 128 + int(st.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 0, fmt.Errorf("run %s: %w", args[0], err)
			}
			return 0, nil
		case <-done:
			cmd.Process.Signal(syscall.SIGTERM)
			done = nil // once
		case <-t.C:
			if _, err := wf.feed(ctx, w, q, false); err != nil && ctx.Err() == nil {
				fmt.Fprintf(env.Stderr, "silo watch-exec: looking for new store paths: %v\n", err)
			}
		}
	}
}
