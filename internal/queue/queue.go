// Package queue is silo's durable upload queue for Nix's post-build-hook:
// a daemon (Queue) that takes store paths over a unix socket and uploads
// their closures to a cache, and the hook side (Hook) that hands paths to
// it without ever slowing or failing a build.
//
// Invariants:
//   - A path is accepted only once it is committed to SQLite (WAL) or
//     renamed into the spool directory; from then on
//     it is uploaded eventually, across crashes, restarts and an
//     unreachable cache (failures retry with capped exponential backoff
//     and jitter; only a path gone from the local store stops retrying).
//   - Paths are uploaded in dependency order: a path starts only after all
//     its references are in the cache, and its narinfo is written last, so
//     the cache never names a path it cannot serve whole. A crash mid-
//     upload leaves the path pending; uploading it again is harmless (same
//     NAR URL, same narinfo).
//   - Closures are expanded once: a path already known (from any root) is
//     not looked at again, so duplicates cost one lookup.
//   - Hook returns within its time budget whatever happens; it reports
//     problems on stderr and never returns an error.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// Options configures a Queue. Zero values mean the documented defaults.
type Options struct {
	StateDir string // holds queue.db; required
	Socket   string // the unix socket path; its spool is Socket + ".spool"
	StoreDir storepath.Dir
	Store    localstore.Store // where path metadata comes from
	Uploader *push.Uploader
	// Jobs bounds concurrent uploads; 0 means push.DefaultJobs.
	Jobs int
	// SkipSignedBy: paths validly signed by these keys are not uploaded.
	SkipSignedBy *signature.KeySet
	// MinBackoff and MaxBackoff bound the delay before retrying a failed
	// upload: it doubles per attempt from MinBackoff (default 1 s) up to
	// MaxBackoff (default 5 min), with ±50% jitter.
	MinBackoff, MaxBackoff time.Duration
	// SpoolInterval is how often the spool is read (default 2 s).
	SpoolInterval time.Duration
	Log           *slog.Logger // default: discard
}

// Queue is the upload daemon's state.
type Queue struct {
	opts  Options
	db    *db
	log   *slog.Logger
	spool string
	wake  chan struct{}

	mu          sync.Mutex
	inflight    map[int64]bool
	missing     map[int64]bool // known to be missing from the cache
	initialized bool           // the target's Init succeeded
}

// Open opens (creating if needed) the queue's database. Paths that failed
// in an earlier run are due again at once.
func Open(ctx context.Context, opts Options) (*Queue, error) {
	if opts.StateDir == "" {
		return nil, errors.New("queue: no state directory")
	}
	if opts.Jobs <= 0 {
		opts.Jobs = push.DefaultJobs
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	if opts.SpoolInterval <= 0 {
		opts.SpoolInterval = 2 * time.Second
	}
	if opts.StoreDir == "" {
		opts.StoreDir = storepath.DefaultDir
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := openDB(opts.StateDir)
	if err != nil {
		return nil, err
	}
	// A restart starts fresh: paths that failed or wait out a backoff are
	// due now (the restart is often how a user says something was fixed).
	if n, err := d.retry(ctx); err != nil {
		d.close()
		return nil, err
	} else if n > 0 {
		log.Info("retrying paths that failed before the restart", "paths", n)
	}
	q := &Queue{
		opts: opts, db: d, log: log, wake: make(chan struct{}, 1),
		inflight: map[int64]bool{}, missing: map[int64]bool{},
	}
	if opts.Socket != "" {
		q.spool = SpoolDir(opts.Socket)
	}
	return q, nil
}

// Close closes the database.
func (q *Queue) Close() error { return q.db.close() }

func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Enqueue accepts paths (full store paths of a build's outputs), or with
// none, the outputs of derivation drv: when it returns nil they are
// durably queued.
func (q *Queue) Enqueue(ctx context.Context, paths []string, drv string) error {
	if len(paths) == 0 && drv == "" {
		return nil
	}
	if drv != "" {
		if _, err := q.opts.StoreDir.Parse(drv); err != nil {
			return fmt.Errorf("enqueue: derivation: %w", err)
		}
	}
	for _, p := range paths {
		if _, err := q.opts.StoreDir.Parse(p); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
	}
	if err := q.db.addRoots(ctx, paths, drv, time.Now()); err != nil {
		return err
	}
	q.poke()
	return nil
}

// Status reports the queue's counts and up to 20 failures.
func (q *Queue) Status(ctx context.Context) (Status, error) {
	s, err := q.db.status(ctx, 20)
	if err != nil {
		return s, err
	}
	q.mu.Lock()
	s.InFlight = len(q.inflight)
	q.mu.Unlock()
	s.Spooled = CountSpool(q.spool)
	s.Target = q.opts.Uploader.Target.String()
	return s, nil
}

// Settled reports whether the queue has nothing left to do but paths that
// failed at least maxAttempts times: every path handed in is uploaded,
// present, failed for good, or still failing after maxAttempts tries.
func (q *Queue) Settled(ctx context.Context, maxAttempts int) (bool, error) {
	q.mu.Lock()
	busy := len(q.inflight)
	q.mu.Unlock()
	if busy > 0 {
		return false, nil
	}
	n, err := q.db.unsettled(ctx, maxAttempts)
	if err != nil {
		return false, err
	}
	spooled := CountSpool(q.spool)
	return n == 0 && spooled == 0, nil
}

// Retry makes failed paths due now and returns how many.
func (q *Queue) Retry(ctx context.Context) (int64, error) {
	n, err := q.db.retry(ctx)
	q.poke()
	return n, err
}

// Reload re-reads the target's credentials (the token saved by silo login,
// the netrc file) and retries every failed path now: what SIGHUP does.
// The queue also notices changed credential files by itself within
// SpoolInterval, then retrying the paths that were failing.
func (q *Queue) Reload(ctx context.Context) (int64, error) {
	if r, ok := q.opts.Uploader.Target.(push.Reloader); ok {
		if _, err := r.ReloadCredentials(); err != nil {
			q.log.Warn("reading credentials", "err", err)
		}
	}
	n, err := q.Retry(ctx)
	if err == nil {
		q.log.Info("reloaded credentials; retrying failed paths now", "paths", n)
	}
	return n, err
}

// checkCredentials makes failing paths due now when the credentials
// changed since the last check.
func (q *Queue) checkCredentials(ctx context.Context) {
	r, ok := q.opts.Uploader.Target.(push.Reloader)
	if !ok {
		return
	}
	changed, err := r.ReloadCredentials()
	if err != nil {
		q.log.Warn("reading credentials (keeping the last good ones)", "err", err)
		return
	}
	if !changed {
		return
	}
	n, err := q.db.retryFailing(ctx)
	if err != nil {
		q.log.Error("retrying after new credentials", "err", err)
		return
	}
	q.log.Info("credentials changed; retrying failing paths now", "paths", n)
}

// backoff returns the delay before attempt number attempts+1.
func (q *Queue) backoff(attempts int) time.Duration {
	d := q.opts.MinBackoff
	for i := 0; i < attempts && d < q.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, q.opts.MaxBackoff)
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// Run processes the queue until ctx is done: it reads the spool, expands
// roots to closures and uploads. Uploads in flight when ctx ends are
// abandoned and stay pending.
func (q *Queue) Run(ctx context.Context) error {
	work := make(chan pending)
	var wg sync.WaitGroup
	for range q.opts.Jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				q.upload(ctx, p)
			}
		}()
	}
	err := q.schedule(ctx, work)
	close(work)
	wg.Wait()
	return err
}

func (q *Queue) schedule(ctx context.Context, work chan<- pending) error {
	lastSpool := time.Time{}
	for {
		now := time.Now()
		if q.spool != "" && now.Sub(lastSpool) >= q.opts.SpoolInterval {
			if n, err := q.ingestSpool(ctx); err != nil {
				q.log.Warn("reading spool", "dir", q.spool, "err", err)
			} else if n > 0 {
				q.log.Info("read spooled paths", "files", n)
			}
			lastSpool = now
		}
		q.checkCredentials(ctx)
		if err := q.expand(ctx); err != nil && ctx.Err() == nil {
			q.log.Warn("expanding closures", "err", err)
		}
		if err := q.dispatch(ctx, work); err != nil && ctx.Err() == nil {
			q.log.Warn("scheduling uploads", "err", err)
		}
		// Sleep until poked, the next retry is due, or the spool is due.
		wait := q.opts.SpoolInterval // also how soon new credentials are seen
		if next, err := q.db.nextDue(ctx); err == nil && !next.IsZero() {
			if d := time.Until(next); d < wait {
				wait = max(d, 10*time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-q.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// expand turns due roots into closures.
func (q *Queue) expand(ctx context.Context) error {
	for {
		roots, err := q.db.dueRoots(ctx, time.Now(), 100)
		if err != nil || len(roots) == 0 {
			return err
		}
		for _, r := range roots {
			if err := q.expandOne(ctx, r); err != nil {
				return err
			}
		}
		if len(roots) < 100 {
			return nil
		}
	}
}

func (q *Queue) expandOne(ctx context.Context, r root) error {
	names := []string{r.path}
	if r.path == "" {
		outs, err := drvOutputs(r.drv)
		if err != nil {
			q.log.Warn("cannot find the outputs of a derivation", "drv", r.drv, "err", err)
			return q.db.rootGone(ctx, r, oneLine(err.Error()), time.Now())
		}
		names = outs
	}
	var roots []storepath.Path
	for _, name := range names {
		known, err := q.db.known(ctx, name)
		if err != nil {
			return err
		}
		if known {
			continue
		}
		p, err := q.opts.StoreDir.Parse(name)
		if err != nil {
			return q.db.rootGone(ctx, r, oneLine(err.Error()), time.Now())
		}
		roots = append(roots, p)
	}
	if len(roots) == 0 {
		return q.db.deleteRoot(ctx, r.id)
	}
	closure, err := localstore.Closure(ctx, q.opts.Store, roots)
	if errors.Is(err, localstore.ErrNotFound) {
		q.log.Warn("queued path is not in the local store", "path", r.path, "drv", r.drv, "err", err)
		return q.db.rootGone(ctx, r, oneLine(err.Error()), time.Now())
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		q.log.Warn("reading closure", "path", r.path, "drv", r.drv, "err", err)
		return q.db.rootFailed(ctx, r.id, oneLine(err.Error()), time.Now().Add(q.backoff(r.attempts)))
	}
	added, err := q.db.expandRoot(ctx, r.id, closure, func(info *localstore.PathInfo) bool {
		return push.SignedBy(info, q.opts.SkipSignedBy)
	}, time.Now())
	if err != nil {
		return fmt.Errorf("record closure of %s: %w", r.path, err)
	}
	q.log.Info("queued", "paths", names, "closure", len(closure), "new", added)
	return nil
}

// dispatch hands ready paths to free workers, first asking the cache in
// one request which of them it already has.
func (q *Queue) dispatch(ctx context.Context, work chan<- pending) error {
	q.mu.Lock()
	free := q.opts.Jobs - len(q.inflight)
	busy := len(q.inflight)
	q.mu.Unlock()
	if free <= 0 {
		return nil
	}
	ready, err := q.db.ready(ctx, time.Now(), busy+max(free, 256))
	if err != nil {
		return err
	}
	var ask []pending
	var send []pending
	q.mu.Lock()
	for _, p := range ready {
		switch {
		case q.inflight[p.id]:
		case q.missing[p.id]:
			send = append(send, p)
		default:
			ask = append(ask, p)
		}
	}
	q.mu.Unlock()
	if len(ask) > 0 {
		hashParts := make([]string, len(ask))
		for i, p := range ask {
			hashParts[i] = hashPart(p.path)
		}
		var missing []string
		err := q.initTarget(ctx)
		if err == nil {
			missing, err = q.opts.Uploader.Target.Missing(ctx, hashParts)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The cache is unreachable: every asked path waits.
			for _, p := range ask {
				if err := q.db.markRetry(ctx, p.id, oneLine(err.Error()), time.Now().Add(q.backoff(p.attempts))); err != nil {
					return err
				}
			}
			if errors.Is(err, push.ErrUnauthorized) {
				q.log.Warn("the cache refused the queue's credentials", "target", q.opts.Uploader.Target.String(), "err", err,
					"fix", "save a valid token with silo login NAME URL (the queue picks it up within seconds), or fix the netrc file")
			} else {
				q.log.Warn("cache unreachable", "target", q.opts.Uploader.Target.String(), "err", err)
			}
			return nil
		}
		lacks := map[string]bool{}
		for _, h := range missing {
			lacks[h] = true
		}
		present := 0
		for _, p := range ask {
			if lacks[hashPart(p.path)] {
				q.mu.Lock()
				q.missing[p.id] = true
				q.mu.Unlock()
				send = append(send, p)
				continue
			}
			if err := q.db.markDone(ctx, p.id, "present", time.Now()); err != nil {
				return err
			}
			present++
		}
		if present > 0 {
			q.poke() // their dependents may be ready now
		}
	}
	for _, p := range send[:min(free, len(send))] {
		q.mu.Lock()
		q.inflight[p.id] = true
		q.mu.Unlock()
		select {
		case work <- p:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// initTarget checks the cache (creating its nix-cache-info if needed) once
// it is reachable: the cache may well be down when the queue starts.
func (q *Queue) initTarget(ctx context.Context) error {
	if q.initialized {
		return nil
	}
	if err := q.opts.Uploader.Target.Init(ctx, q.opts.StoreDir); err != nil {
		return err
	}
	q.initialized = true
	return nil
}

func hashPart(full string) string {
	i := len(full) - 1
	for i >= 0 && full[i] != '/' {
		i--
	}
	base := full[i+1:]
	if len(base) < storepath.HashLen {
		return base
	}
	return base[:storepath.HashLen]
}

// upload uploads one path and records the outcome.
func (q *Queue) upload(ctx context.Context, p pending) {
	defer func() {
		q.mu.Lock()
		delete(q.inflight, p.id)
		q.mu.Unlock()
		q.poke()
	}()
	record := func(err error) {
		if err != nil {
			q.log.Error("recording upload outcome", "path", p.path, "err", err)
		}
	}
	sp, err := q.opts.StoreDir.Parse(p.path)
	if err != nil {
		record(q.db.markFailed(ctx, p.id, oneLine(err.Error())))
		return
	}
	info, err := q.opts.Store.QueryPathInfo(ctx, sp)
	if errors.Is(err, localstore.ErrNotFound) {
		q.log.Warn("path vanished from the local store before upload", "path", p.path)
		record(q.db.markFailed(ctx, p.id, oneLine(err.Error())))
		return
	}
	if err == nil {
		_, err = q.opts.Uploader.Upload(ctx, info, nil)
	}
	if ctx.Err() != nil {
		return // shutting down: the path stays pending
	}
	if err != nil {
		next := time.Now().Add(q.backoff(p.attempts))
		msg := "upload failed"
		if errors.Is(err, push.ErrUnauthorized) {
			msg = "upload refused: the cache refused the queue's credentials (silo login NAME URL saves a new token; the queue picks it up within seconds)"
		}
		q.log.Warn(msg, "path", p.path, "attempt", p.attempts+1, "retry_in", time.Until(next).Round(time.Millisecond), "err", err)
		record(q.db.markRetry(ctx, p.id, oneLine(err.Error()), next))
		return
	}
	q.mu.Lock()
	delete(q.missing, p.id)
	q.mu.Unlock()
	q.log.Info("uploaded", "path", p.path)
	record(q.db.markDone(ctx, p.id, "uploaded", time.Now()))
}
