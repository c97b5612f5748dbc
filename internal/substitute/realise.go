package substitute

import (
	"context"
	"errors"
	"fmt"

	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// Want is a path to make valid. CA is its content address ("" if none,
// else as Nix renders it, e.g. a fixed-output derivation's
// "fixed:r:sha256:..."): it lets a cache of another store directory
// provide the path.
type Want struct {
	Path storepath.Path
	CA   string
}

// Status is how the substitution of a path ended: Nix's goal exit codes.
type Status int

const (
	// AlreadyValid: the path was valid already (nothing was asked).
	AlreadyValid Status = iota + 1
	// Substituted: the path was downloaded, verified and registered.
	Substituted
	// NoSubstituters: no cache has the path (ecNoSubstituters); a
	// builder should build it.
	NoSubstituters
	// IncompleteClosure: a reference could not be substituted
	// (ecIncompleteClosure).
	IncompleteClosure
	// Failed: a cache had the path but substituting it failed (network,
	// a NAR that does not match, ...; ecFailed).
	Failed
)

// OK reports whether the path is valid.
func (s Status) OK() bool { return s == AlreadyValid || s == Substituted }

func (s Status) String() string {
	switch s {
	case AlreadyValid:
		return "already valid"
	case Substituted:
		return "substituted"
	case NoSubstituters:
		return "no substituters"
	case IncompleteClosure:
		return "incomplete closure"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome for one wanted path.
type Result struct {
	Path   storepath.Path
	Status Status
	// Dependency is set when a reference, not the path itself, failed
	// (Nix's BuildResult DependencyFailed).
	Dependency bool
	// Err says why the path is not valid (nil if it is): Nix's messages,
	// "path '%s' is required, but there is no substituter that can build
	// it", "some references of path '%s' could not be realised".
	Err error
}

// BuildStatus is the result as BuildPathsWithResults reports it.
func (r *Result) BuildStatus() worker.BuildStatus {
	switch {
	case r.Status == AlreadyValid:
		return worker.AlreadyValid
	case r.Status == Substituted:
		return worker.Substituted
	case r.Dependency:
		return worker.DependencyFailed
	}
	return worker.NoSubstituters
}

// RealiseOptions modify Realise.
type RealiseOptions struct {
	// Repair substitutes the wanted paths (not their references) even if
	// they are valid, replacing their contents.
	Repair bool
	// Parent is the activity the substitutions' activities belong to.
	Parent uint64
	// Progress shows the run as Nix's Worker does: an actRealise activity
	// with the expected NAR and download sizes, holding an actCopyPaths
	// one counting the paths. A scheduler with its own leaves it off.
	Progress bool
}

// Realise makes the wanted paths valid by substitution, as Nix's
// PathSubstitutionGoals: each path's references (other than itself) are
// substituted first, the downloads of independent paths run at once,
// each path is tried on the caches in priority order (a cache without a
// valid signature for it, or whose download fails, is skipped for the
// next). It returns one Result per want, in order. The error is for
// what ends the whole operation in Nix too: a cache that cannot be asked
// without --fallback, a store error, a cancelled ctx.
func (s *Session) Realise(ctx context.Context, wants []Want, o RealiseOptions) ([]Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{s: s, o: o, cfg: s.config(), caches: s.Caches(ctx), ctx: ctx, cancel: cancel,
		nodes: map[storepath.Path]*node{}, events: make(chan func())}
	r.keys = s.trustedKeys()
	r.lookups = make(chan struct{}, r.cfg.httpConnections())
	top := make([]*node, len(wants))
	for i, w := range wants {
		top[i] = r.get(w, o.Repair)
	}
	for r.tasks > 0 {
		ev := <-r.events
		r.tasks--
		ev()
		if r.tasks == 0 {
			r.failStuck()
		}
	}
	r.endProgress()
	if r.fatal != nil {
		return nil, r.fatal
	}
	res := make([]Result, len(top))
	for i, n := range top {
		res[i] = n.res
	}
	return res, nil
}

// node is one path's substitution goal.
type node struct {
	want    Want
	repair  bool
	next    int // the next cache to try
	cache   *Cache
	ni      *narinfo.NarInfo
	info    *nixstore.PathInfo
	pending int     // references not valid yet
	waiters []*node // paths waiting for this one
	failed  bool    // a cache failed for it (Nix's substituterFailed)
	done    bool
	res     Result
}

// run is one Realise. Its graph is touched only by the goroutine running
// the event loop; tasks (validity checks, lookups, downloads) run on
// their own goroutines and post one event each.
type run struct {
	s       *Session
	o       RealiseOptions
	cfg     Config
	caches  []*Cache
	keys    *signature.KeySet
	ctx     context.Context
	cancel  context.CancelFunc
	nodes   map[storepath.Path]*node
	events  chan func()
	tasks   int
	lookups chan struct{}
	fatal   error
	prog    progress
}

// spawn runs task on a goroutine; the event it returns runs in the loop.
func (r *run) spawn(task func() func()) {
	r.tasks++
	go func() { r.events <- task() }()
}

// fail ends the run with err (the first one wins).
func (r *run) fail(err error) {
	if r.fatal == nil {
		r.fatal = err
		r.cancel()
	}
}

// get returns the node for w, starting it if new.
func (r *run) get(w Want, repair bool) *node {
	if n, ok := r.nodes[w.Path]; ok {
		if n.want.CA == "" {
			n.want.CA = w.CA
		}
		return n
	}
	n := &node{want: w, repair: repair, res: Result{Path: w.Path}}
	r.nodes[w.Path] = n
	r.spawn(func() func() {
		if err := r.s.store.AddTempRoot(r.ctx, w.Path); err != nil {
			return func() { r.fail(err) }
		}
		if !repair {
			ok, err := r.s.store.IsValid(r.ctx, w.Path)
			if err != nil {
				return func() { r.fail(err) }
			}
			if ok {
				return func() { r.finish(n, AlreadyValid, false, nil) }
			}
		}
		return func() { r.lookup(n) }
	})
	return n
}

// lookup looks for n's path on the caches from n.next on (Nix's tryNext).
func (r *run) lookup(n *node) {
	if r.fatal != nil {
		r.finish(n, Failed, false, r.fatal)
		return
	}
	start, p, ca := n.next, n.want.Path, n.want.CA
	r.spawn(func() func() {
		select {
		case r.lookups <- struct{}{}:
			defer func() { <-r.lookups }()
		case <-r.ctx.Done():
			return func() { r.finish(n, Failed, false, r.ctx.Err()) }
		}
		for i := start; i < len(r.caches); i++ {
			c := r.caches[i]
			sub, ok, err := pathIn(c, p, ca)
			if err != nil {
				return func() { r.fail(err) }
			}
			if !ok {
				continue
			}
			ni, err := r.s.queryInfo(r.ctx, c, sub, &r.cfg)
			if err != nil {
				if r.ctx.Err() == nil && r.cfg.TryFallback {
					if !errors.Is(err, errDisabled) {
						r.s.logError(err)
					}
					continue
				}
				return func() { r.fail(err) }
			}
			if ni == nil {
				continue
			}
			info, err := acceptInfo(c, ni, p)
			if err != nil {
				r.s.log.Log(worker.LvlError, err.Error())
				continue
			}
			if !c.Trusted && untrusted(info, r.cfg.RequireSigs, r.keys) {
				r.s.log.Warn(fmt.Sprintf("the substitute for '%s' from '%s' is not signed by any of the keys in 'trusted-public-keys'", p, c.URI))
				continue
			}
			return func() { r.found(n, i, ni, info) }
		}
		return func() { r.none(n) }
	})
}

// found has cache i's answer for n: realise its references, then fetch.
func (r *run) found(n *node, i int, ni *narinfo.NarInfo, info *nixstore.PathInfo) {
	n.next, n.cache, n.ni, n.info = i+1, r.caches[i], ni, info
	r.prog.expect(r, ni, info)
	n.pending = 0
	for _, ref := range info.References {
		if ref == n.want.Path {
			continue // a self-reference
		}
		child := r.get(Want{Path: ref}, false)
		if child.done {
			if !child.res.Status.OK() {
				r.finish(n, dependencyStatus(child.res.Status), true, fmt.Errorf("some references of path '%s' could not be realised", n.want.Path))
				return
			}
			continue
		}
		child.waiters = append(child.waiters, n)
		n.pending++
	}
	if n.pending == 0 {
		r.fetch(n)
	}
}

func dependencyStatus(s Status) Status {
	if s == Failed {
		return Failed
	}
	return IncompleteClosure
}

// fetch downloads and adds n's path.
func (r *run) fetch(n *node) {
	if r.fatal != nil {
		r.finish(n, Failed, false, r.fatal)
		return
	}
	r.prog.start(r)
	c, ni, info, repair := n.cache, n.ni, n.info, n.repair
	r.spawn(func() func() {
		err := r.s.substituteOne(r.ctx, c, ni, info, repair, r.prog.parent(r))
		return func() { r.fetched(n, err) }
	})
}

func (r *run) fetched(n *node, err error) {
	r.prog.stop(r, err == nil)
	if err == nil {
		r.s.log.Log(worker.LvlChatty, fmt.Sprintf("substitution of path '%s' succeeded", n.want.Path))
		r.finish(n, Substituted, false, nil)
		return
	}
	if r.ctx.Err() != nil {
		r.finish(n, Failed, false, err)
		return
	}
	r.s.logError(err)
	if !errors.Is(err, errGone) {
		n.failed = true
	}
	r.lookup(n) // the next cache
}

// none: no cache (left) can provide n's path.
func (r *run) none(n *node) {
	st := NoSubstituters
	if n.failed {
		st = Failed
	}
	r.finish(n, st, false, fmt.Errorf("path '%s' is required, but there is no substituter that can build it", n.want.Path))
}

// finish records n's result and wakes the paths waiting for it.
func (r *run) finish(n *node, st Status, dependency bool, err error) {
	if n.done {
		return
	}
	n.done = true
	n.res = Result{Path: n.want.Path, Status: st, Dependency: dependency, Err: err}
	if err != nil {
		r.s.debugf("%s", err)
	}
	for _, w := range n.waiters {
		if w.done {
			continue
		}
		if st.OK() {
			if w.pending--; w.pending == 0 {
				r.fetch(w)
			}
			continue
		}
		r.finish(w, dependencyStatus(st), true, fmt.Errorf("some references of path '%s' could not be realised", w.want.Path))
	}
}

// failStuck ends the paths still waiting when nothing runs any more:
// their references form a cycle, which no cache may serve.
func (r *run) failStuck() {
	for _, n := range r.nodes {
		if !n.done {
			r.finish(n, Failed, false, fmt.Errorf("cannot substitute '%s': the references the substituters give form a cycle", n.want.Path))
		}
	}
}

// substituteOne downloads one path, unless another connection of the
// daemon is downloading it already (then it waits for that one and
// checks the result).
func (s *Session) substituteOne(ctx context.Context, c *Cache, ni *narinfo.NarInfo, info *nixstore.PathInfo, repair bool, parent uint64) error {
	key := s.store.RealStoreDir() + "/" + info.Path.Base()
	for !repair {
		f, release := s.pool.join(key)
		if f == nil {
			defer release()
			break
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if ok, err := s.store.IsValid(ctx, info.Path); err != nil || ok {
			return err
		}
	}
	select {
	case s.pool.jobs <- struct{}{}:
		defer func() { <-s.pool.jobs }()
	case <-ctx.Done():
		return ctx.Err()
	}
	if !repair { // another connection (or Nix) may have added it meanwhile
		if ok, err := s.store.IsValid(ctx, info.Path); err != nil || ok {
			return err
		}
	}
	return s.copyPath(ctx, c, ni, info, repair, parent)
}

// progress is the run's Worker-like activities (only with
// RealiseOptions.Progress).
type progress struct {
	realise, copies                 uint64 // activity ids, once started
	expected, done, running, failed uint64
	narSize, downloadSize           uint64
}

func (p *progress) expect(r *run, ni *narinfo.NarInfo, info *nixstore.PathInfo) {
	p.expected++
	p.narSize += info.NarSize
	p.downloadSize += ni.FileSize
	p.update(r)
}

func (p *progress) start(r *run) {
	if !r.o.Progress {
		return
	}
	if p.realise == 0 {
		p.realise = r.s.log.StartActivity(worker.LvlInfo, worker.ActRealise, "", nil, r.o.Parent)
		p.copies = r.s.log.StartActivity(worker.LvlInfo, worker.ActCopyPaths, "", nil, r.o.Parent)
	}
	p.running++
	p.update(r)
}

func (p *progress) stop(r *run, ok bool) {
	if !r.o.Progress {
		return
	}
	p.running--
	if ok {
		p.done++
	} else {
		p.failed++
	}
	p.update(r)
}

func (p *progress) update(r *run) {
	if p.realise == 0 {
		return
	}
	log := r.s.log
	log.Result(p.copies, worker.ResProgress, []worker.Field{worker.IntField(p.done), worker.IntField(max(p.expected, p.done)),
		worker.IntField(p.running), worker.IntField(p.failed)})
	log.Result(p.realise, worker.ResSetExpected, []worker.Field{worker.IntField(worker.ActFileTransfer), worker.IntField(p.downloadSize)})
	log.Result(p.realise, worker.ResSetExpected, []worker.Field{worker.IntField(worker.ActCopyPath), worker.IntField(p.narSize)})
}

// parent is the activity a download belongs to.
func (p *progress) parent(r *run) uint64 { return r.o.Parent }

func (r *run) endProgress() {
	if r.prog.realise != 0 {
		r.s.log.StopActivity(r.prog.copies)
		r.s.log.StopActivity(r.prog.realise)
	}
}
