package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/storepath"
)

func opAddTempRoot(ctx context.Context, c *conn) error {
	p, err := c.readPath()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if err := c.store.AddTempRoot(ctx, p); err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opAddIndirectRoot registers a symlink the client made as a GC root. A
// relative link is taken relative to "/", the daemon's directory in Nix.
func opAddIndirectRoot(ctx context.Context, c *conn) error {
	link, err := c.dec.String()
	if err != nil {
		return err
	}
	if !filepath.IsAbs(link) {
		link = "/" + link
	}
	link = filepath.Clean(link)
	if err := c.startWork(); err != nil {
		return err
	}
	if err := c.store.AddIndirectRoot(ctx, link); err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opSyncWithGC is obsolete and does nothing, as in Nix.
func opSyncWithGC(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opFindRoots lists every GC root (nix-store --gc --print-roots, -q
// --roots): pairs of link and target. Untrusted clients see the links as
// "{censored}".
func opFindRoots(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	roots, err := nixgc.FindRoots(ctx, c.store, !c.peer.Trusted)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	targets := make([]storepath.Path, 0, len(roots))
	n := 0
	for p, links := range roots {
		targets = append(targets, p)
		n += len(links)
	}
	sortPaths(targets)
	c.enc.Uint64(uint64(n))
	for _, p := range targets {
		for _, link := range roots[p] {
			c.enc.String(link)
			c.enc.String(p.String())
		}
	}
	return nil
}

// opCollectGarbage runs a collection with the connection's keep-outputs
// and keep-derivations. Ignoring liveness is refused to everyone, as Nix.
func opCollectGarbage(ctx context.Context, c *conn) error {
	action, err := c.dec.Uint32()
	if err != nil {
		return err
	}
	paths, err := c.readPaths()
	if err != nil {
		return err
	}
	ignoreLiveness, err := c.dec.Bool()
	if err != nil {
		return err
	}
	maxFreed, err := c.dec.Uint64()
	if err != nil {
		return err
	}
	for range 3 { // obsolete fields
		if _, err := c.dec.Uint32(); err != nil {
			return err
		}
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if ignoreLiveness {
		return errors.New("you are not allowed to ignore liveness")
	}
	if action > uint64(nixgc.DeleteSpecific) {
		return fmt.Errorf("invalid garbage collector action %d", action)
	}
	res, err := nixgc.CollectGarbage(ctx, c.store, nixgc.Options{
		Action:          nixgc.Action(action),
		PathsToDelete:   paths,
		MaxFreed:        maxFreed,
		KeepOutputs:     c.settings.Bool("keep-outputs"),
		KeepDerivations: c.settings.Bool("keep-derivations"),
	})
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Strings(res.Paths)
	c.enc.Uint64(res.BytesFreed)
	c.enc.Uint64(0) // obsolete
	return nil
}
