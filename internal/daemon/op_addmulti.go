package daemon

import (
	"context"
	"fmt"

	"github.com/silo-cache/silo/internal/worker"
)

// opAddMultipleToStore imports several paths in one framed stream (nix
// copy --to): a count, then for each path its ValidPathInfo (format 16)
// and its NAR. Paths are added one by one, in the order sent (the client
// sends references first); none is "ultimate". An untrusted client's
// signatures are always checked.
func opAddMultipleToStore(ctx context.Context, c *conn) error {
	repair, err := c.dec.Bool()
	if err != nil {
		return err
	}
	dontCheckSigs, err := c.dec.Bool()
	if err != nil {
		return err
	}
	if !c.peer.Trusted {
		dontCheckSigs = false
	}
	if err := c.startWork(); err != nil {
		return err
	}
	d := worker.NewDecoder(c.framedSource())
	d.SetLimits(maxString, maxList)
	n, err := d.Uint64()
	if err != nil {
		return err
	}
	opts := c.addOptions(repair, !dontCheckSigs)
	for i := uint64(0); i < n; i++ {
		path, w, err := d.ReadPathInfo(true, 16)
		if err != nil {
			return fmt.Errorf("path %d of %d: %w", i+1, n, err)
		}
		info, err := c.storeInfo(path, w)
		if err != nil {
			return err
		}
		info.Ultimate = false
		cr := &countingReader{r: d.Buffered()}
		if err := c.store.AddToStoreNar(ctx, info, cr, opts); err != nil {
			return err
		}
		if cr.n == 0 { // already valid: skip its NAR
			if err := skipNAR(d.Buffered()); err != nil {
				return fmt.Errorf("NAR of '%s': %w", path, err)
			}
		}
	}
	return c.stopWork()
}
