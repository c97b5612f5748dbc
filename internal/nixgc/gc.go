// Package nixgc is Nix 2.8's garbage collector for a local store (package
// nixstore), compatible with the real Nix collecting the same store.
//
// Invariants:
//   - A collection holds gc.lock exclusively from start to end (Nix's
//     "big garbage collector lock"); while it does, processes adding temp
//     roots (silo's nixstore or Nix) cannot take it shared, and tell the
//     collector through <state>/gc-socket/socket instead, which answers
//     only once the root is recorded and its path is not being deleted.
//   - Roots: gcroots and profiles (direct, indirect through gcroots/auto,
//     root files), runtime roots from /proc, and the temp roots of every
//     process that still holds the lock on its temproots file. Temp roots
//     are matched by hash part, so a temp-rooted path's .lock, .chroot and
//     .check debris is kept too.
//   - A path is deleted only if no root reaches it through referrers (or,
//     with keep-derivations / keep-outputs, through derivation outputs and
//     derivers), referrers before references, and only after its row is
//     removed in a transaction that checks again that no valid path
//     refers to it: a path registered during the collection is either a
//     temp root or blocks the deletion of what it refers to.
//   - Only the collector deletes store paths (besides repair and failed
//     additions of their own temporary trees); it also deletes entries of
//     the store directory that are not store paths, and unused .links.
package nixgc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nixdb"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// Action is what a collection does (the worker protocol's numbering).
type Action int

// The actions.
const (
	ReturnLive     Action = 0 // report the live paths (nix-store --gc --print-live)
	ReturnDead     Action = 1 // report the dead paths (--print-dead)
	DeleteDead     Action = 2 // delete the dead paths (nix-store --gc)
	DeleteSpecific Action = 3 // delete the given paths if dead (nix-store --delete)
)

// Unlimited is the MaxFreed of a collection without --max-freed.
const Unlimited = math.MaxUint64

// Options are a collection's parameters, as Nix's GCOptions plus the two
// settings that shape it.
type Options struct {
	Action Action
	// PathsToDelete are the paths DeleteSpecific deletes.
	PathsToDelete []storepath.Path
	// IgnoreLiveness deletes DeleteSpecific's paths even if roots reach
	// them (the daemon refuses it for every client, as Nix's does).
	IgnoreLiveness bool
	// MaxFreed stops deleting once more bytes than this are freed; the
	// dead-path actions do nothing when it is 0. Use Unlimited for no
	// limit.
	MaxFreed uint64
	// KeepOutputs and KeepDerivations are gc-keep-outputs and
	// gc-keep-derivations.
	KeepOutputs, KeepDerivations bool
}

// Results are what a collection reports: the paths it deleted (or, for
// ReturnLive and ReturnDead, found), sorted, and the bytes freed.
type Results struct {
	Paths      []string
	BytesFreed uint64
}

// CollectGarbage runs a collection on s, as Nix's collectGarbage.
func CollectGarbage(ctx context.Context, s *nixstore.Store, o Options) (*Results, error) {
	c := &collector{ctx: ctx, s: s, o: o, sh: newShared(),
		alive: map[storepath.Path]bool{}, dead: map[storepath.Path]bool{}, roots: map[storepath.Path]bool{}}
	if o.Action == DeleteSpecific && o.IgnoreLiveness {
		// Following outputs and derivers would delete more than asked.
		c.o.KeepOutputs, c.o.KeepDerivations = false, false
	}
	c.shouldDelete = o.Action == DeleteDead || o.Action == DeleteSpecific
	c.specific = map[storepath.Path]bool{}
	for _, p := range o.PathsToDelete {
		c.specific[p] = true
	}
	return c.run()
}

type collector struct {
	ctx          context.Context
	s            *nixstore.Store
	o            Options
	sh           *shared
	shouldDelete bool

	graph *nixdb.Graph
	roots map[storepath.Path]bool
	alive map[storepath.Path]bool
	dead  map[storepath.Path]bool
	res   Results
	paths map[string]bool // res.Paths as a set

	batch    []storepath.Path // dead paths to delete, referrers first
	storeFd  int              // the real store directory, open
	specific map[storepath.Path]bool
}

var errLimit = errors.New("max-freed reached")

func (c *collector) run() (*Results, error) {
	s := c.s
	c.paths = map[string]bool{}
	if c.shouldDelete {
		os.Remove(filepath.Join(s.StateDir(), "db", "reserved"))
	}
	lockPath := filepath.Join(s.StateDir(), "gc.lock")
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening global GC lock '%s': %w", lockPath, err)
	}
	defer lock.Close()
	if err := nixstore.LockFile(c.ctx, lock, unix.LOCK_EX, func() {
		s.Log(nixstore.LvlInfo, "waiting for the big garbage collector lock...")
	}); err != nil {
		return nil, err
	}
	c.storeFd, err = unix.Open(s.RealStoreDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening directory '%s': %w", s.RealStoreDir(), err)
	}
	defer unix.Close(c.storeFd)
	srv, err := startRootsServer(s, c.sh)
	if err != nil {
		return nil, fmt.Errorf("starting the GC roots server: %w", err)
	}
	defer srv.stop()

	s.Log(nixstore.LvlInfo, "finding garbage collector roots...")
	if !c.o.IgnoreLiveness {
		roots, err := findRootsNoTemp(c.ctx, s, true)
		if err != nil {
			return nil, err
		}
		for p := range roots {
			c.roots[p] = true
		}
	}
	temp, err := readTempRoots(s, true)
	if err != nil {
		return nil, err
	}
	c.sh.mu.Lock()
	for p := range temp {
		c.sh.tempRoots[p.HashPart()] = true
		c.roots[p] = true
	}
	c.sh.mu.Unlock()
	if c.graph, err = s.DB().Graph(c.ctx); err != nil {
		return nil, err
	}
	if sync := os.Getenv("_NIX_TEST_GC_SYNC"); sync != "" {
		os.ReadFile(sync) // a test's synchronisation point, as in Nix
	}

	switch {
	case c.o.Action == DeleteSpecific:
		for _, p := range c.o.PathsToDelete {
			if err := c.deleteReferrersClosure(p); err != nil && !errors.Is(err, errLimit) {
				return nil, err
			}
			if err := c.flush(); err != nil && !errors.Is(err, errLimit) {
				return nil, err
			}
			if !c.dead[p] {
				return nil, fmt.Errorf("Cannot delete path '%s' since it is still alive. To find out why, use: nix-store --query --roots", p)
			}
		}
	case c.o.MaxFreed > 0:
		if c.shouldDelete {
			s.Log(nixstore.LvlInfo, "deleting garbage...")
		} else {
			s.Log(nixstore.LvlInfo, "determining live/dead paths...")
		}
		if err := c.sweep(); err != nil && !errors.Is(err, errLimit) {
			return nil, err
		}
	}

	switch c.o.Action {
	case ReturnLive:
		return c.report(c.alive), nil
	case ReturnDead:
		return c.report(c.dead), nil
	}
	if err := c.deleteUnusedLinks(); err != nil {
		return nil, err
	}
	for p := range c.paths {
		c.res.Paths = append(c.res.Paths, p)
	}
	slices.Sort(c.res.Paths)
	return &c.res, nil
}

// report returns set as the results, with what was deleted anyway (Nix
// 2.8 deletes entries that are not store paths, and reports them, even
// when only asked for live or dead paths).
func (c *collector) report(set map[storepath.Path]bool) *Results {
	r := &Results{BytesFreed: c.res.BytesFreed}
	for p := range set {
		c.paths[p.String()] = true
	}
	for p := range c.paths {
		r.Paths = append(r.Paths, p)
	}
	slices.Sort(r.Paths)
	return r
}

// sweep goes through the store directory: store paths through the
// referrers closure, anything else deleted outright.
func (c *collector) sweep() error {
	d, err := os.Open(c.s.RealStoreDir())
	if err != nil {
		return fmt.Errorf("opening directory '%s': %w", c.s.RealStoreDir(), err)
	}
	defer d.Close()
	for {
		names, rerr := d.Readdirnames(1024)
		for _, name := range names {
			if err := c.ctx.Err(); err != nil {
				return err
			}
			if name == ".links" {
				continue
			}
			if p, err := c.s.Dir().ParseBase(name); err == nil {
				if err := c.deleteReferrersClosure(p); err != nil {
					return err
				}
				continue
			}
			// Not a store path: Nix 2.8 deletes it whatever the action.
			if err := c.deleteFromStore(name); err != nil {
				return err
			}
		}
		if rerr != nil {
			break
		}
	}
	return c.flush()
}

// deleteFromStore deletes one entry of the store directory.
func (c *collector) deleteFromStore(base string) error {
	path := string(c.s.Dir()) + "/" + base
	c.s.Log(nixstore.LvlInfo, "deleting '%s'", path)
	c.paths[path] = true
	freed, err := nixstore.DeletePathAt(c.storeFd, base, filepath.Join(c.s.RealStoreDir(), base))
	c.res.BytesFreed += freed
	if err != nil {
		return err
	}
	if c.res.BytesFreed > c.o.MaxFreed {
		c.s.Log(nixstore.LvlInfo, "deleted more than %d bytes; stopping", c.o.MaxFreed)
		return errLimit
	}
	return nil
}
