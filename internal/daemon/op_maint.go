package daemon

import (
	"context"
	"fmt"

	"github.com/silo-cache/silo/internal/worker"
)

// opOptimiseStore hard-links identical files of every valid path
// (nix-store --optimise), with Nix's progress activity; the store logs
// the summary.
func opOptimiseStore(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	act := c.startActivity(worker.LvlInfo, worker.ActOptimise, "", nil, 0)
	_, err := c.store.OptimiseStore(ctx, func(done, total int) {
		c.log.Result(act, worker.ResProgress, []worker.Field{worker.IntField(uint64(done)), worker.IntField(uint64(total)), worker.IntField(0), worker.IntField(0)})
	})
	c.log.StopActivity(act)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Uint64(1)
	return nil
}

// opVerifyStore checks the store (nix-store --verify); repairing needs trust.
func opVerifyStore(ctx context.Context, c *conn) error {
	checkContents, err := c.dec.Bool()
	if err != nil {
		return err
	}
	repair, err := c.dec.Bool()
	if err != nil {
		return err
	}
	if err := c.startWork(); err != nil {
		return err
	}
	if repair && !c.peer.Trusted {
		return fmt.Errorf("you are not privileged to repair paths")
	}
	errorsFound, err := c.store.VerifyStore(ctx, checkContents, repair)
	if err != nil {
		return err
	}
	if err := c.stopWork(); err != nil {
		return err
	}
	c.enc.Bool(errorsFound)
	return nil
}
