package daemon

import (
	"context"
	"path/filepath"
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
