package nixgc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// batchSize is how many dead paths are invalidated in one transaction
// (one per path when a max-freed limit is set, so that the collection
// stops exactly where Nix's would).
const batchSize = 512

// deleteReferrersClosure visits every path reachable from start through
// referrers (and derivation outputs or derivers when keeping those): if
// any is a root or known alive, start (with that root's closure) is alive;
// otherwise everything visited is dead, queued for deletion referrers
// first (Nix's deleteReferrersClosure).
func (c *collector) deleteReferrersClosure(start storepath.Path) error {
	visited := map[storepath.Path]bool{start: true}
	queue := []storepath.Path{start}
	enqueue := func(p storepath.Path) {
		if !visited[p] {
			visited[p] = true
			queue = append(queue, p)
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if c.alive[p] {
			c.alive[start] = true
			return nil
		}
		if c.dead[p] {
			continue
		}
		if c.roots[p] {
			c.markAlive(p, start)
			return nil
		}
		if c.o.Action == DeleteSpecific && !c.specific[p] {
			return nil
		}
		c.sh.mu.Lock()
		temp := c.sh.tempRoots[p.HashPart()]
		c.sh.mu.Unlock()
		if temp {
			c.markAlive(p, start)
			return nil
		}
		n := c.graph.Nodes[p]
		if n == nil {
			continue // not valid: nothing leads further
		}
		for _, r := range n.Referrers {
			enqueue(r)
		}
		if c.o.KeepDerivations && p.IsDerivation() {
			for _, out := range n.Outputs {
				if on := c.graph.Nodes[out]; on != nil && on.Deriver == p {
					enqueue(out)
				}
			}
		}
		if c.o.KeepOutputs {
			for _, d := range n.Derivers {
				enqueue(d)
			}
		}
	}
	for _, p := range c.topoSort(visited) {
		if c.dead[p] {
			continue
		}
		c.dead[p] = true
		if c.shouldDelete {
			c.batch = append(c.batch, p)
			if len(c.batch) >= batchSize || c.o.MaxFreed != Unlimited {
				if err := c.flush(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// markAlive marks p, start and p's closure alive (references, plus
// outputs of derivations with keep-outputs and derivers with
// keep-derivations, as computeFSClosure).
func (c *collector) markAlive(p, start storepath.Path) {
	c.alive[start] = true
	stack := []storepath.Path{p}
	c.alive[p] = true
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := c.graph.Nodes[q]
		if n == nil {
			continue
		}
		next := n.References
		if c.o.KeepOutputs && q.IsDerivation() {
			for _, out := range n.Outputs {
				if c.graph.Nodes[out] != nil {
					next = append(slices.Clip(next), out)
				}
			}
		}
		if c.o.KeepDerivations && !n.Deriver.IsZero() && c.graph.Nodes[n.Deriver] != nil {
			next = append(slices.Clip(next), n.Deriver)
		}
		for _, r := range next {
			if !c.alive[r] {
				c.alive[r] = true
				stack = append(stack, r)
			}
		}
	}
}

// topoSort orders paths so that referrers come before the paths they
// refer to.
func (c *collector) topoSort(set map[storepath.Path]bool) []storepath.Path {
	paths := make([]storepath.Path, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, storepath.Compare)
	done := map[storepath.Path]bool{}
	var out []storepath.Path
	var visit func(p storepath.Path)
	visit = func(p storepath.Path) {
		if done[p] {
			return
		}
		done[p] = true
		if n := c.graph.Nodes[p]; n != nil {
			for _, r := range n.References {
				if set[r] {
					visit(r)
				}
			}
		}
		out = append(out, p)
	}
	for _, p := range paths {
		visit(p)
	}
	slices.Reverse(out)
	return out
}

// flush deletes the queued dead paths: under the shared lock, those that
// became temp roots are dropped and the rest marked pending (so a client
// sending one of them waits until it is gone); then their rows are
// removed in one transaction that keeps any a valid path still refers to;
// then their files are deleted.
func (c *collector) flush() error {
	if len(c.batch) == 0 {
		return nil
	}
	batch := c.batch
	c.batch = nil
	var todo []storepath.Path
	c.sh.mu.Lock()
	for _, p := range batch {
		if c.sh.tempRoots[p.HashPart()] {
			delete(c.dead, p)
			c.markAlive(p, p)
			continue
		}
		c.sh.pending[p.HashPart()] = true
		todo = append(todo, p)
	}
	c.sh.mu.Unlock()
	defer func() {
		c.sh.mu.Lock()
		for _, p := range todo {
			delete(c.sh.pending, p.HashPart())
		}
		c.sh.cond.Broadcast()
		c.sh.mu.Unlock()
	}()
	gone, err := c.s.DB().InvalidateUnreferenced(c.ctx, todo, nil)
	if err != nil {
		return err
	}
	isGone := make(map[storepath.Path]bool, len(gone))
	for _, p := range gone {
		isGone[p] = true
	}
	for _, p := range todo {
		if !isGone[p] {
			// Registered referrers appeared since the snapshot.
			delete(c.dead, p)
			c.markAlive(p, p)
		}
	}
	for i, p := range gone {
		if err := c.deleteFromStore(p.Base()); err != nil {
			// Stopped (max-freed) or failed: the rest stay invalid on disk,
			// debris the next collection removes.
			_ = i
			return err
		}
	}
	return nil
}

// deleteUnusedLinks removes .links entries no store file uses any more,
// and reports what hard linking saves, as Nix does after deleting.
func (c *collector) deleteUnusedLinks() error {
	c.s.Log(nixstore.LvlInfo, "deleting unused links...")
	links := filepath.Join(c.s.RealStoreDir(), ".links")
	d, err := os.Open(links)
	if err != nil {
		return fmt.Errorf("opening directory '%s': %w", links, err)
	}
	defer d.Close()
	var actual, unshared int64
	dfd := int(d.Fd())
	for {
		names, rerr := d.Readdirnames(4096)
		for _, name := range names {
			if err := c.ctx.Err(); err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if err == unix.ENOENT {
					continue
				}
				return fmt.Errorf("getting status of '%s/%s': %w", links, name, err)
			}
			if st.Nlink != 1 {
				actual += st.Size
				unshared += int64(st.Nlink-1) * st.Size
				continue
			}
			c.s.Log(nixstore.LvlTalkative, "deleting unused link '%s/%s'", links, name)
			if err := unix.Unlinkat(dfd, name, 0); err != nil && err != unix.ENOENT {
				return fmt.Errorf("deleting '%s/%s': %w", links, name, err)
			}
		}
		if rerr != nil {
			break
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return fmt.Errorf("statting '%s': %w", links, err)
	}
	overhead := st.Blocks * 512
	c.s.Log(nixstore.LvlInfo, "note: currently hard linking saves %.2f MiB", float64(unshared-actual-overhead)/(1024*1024))
	return nil
}
