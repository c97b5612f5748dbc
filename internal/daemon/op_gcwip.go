package daemon

import (
	"context"
	"errors"
)

// Replaced when package nixgc lands.
func opFindRoots(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	return errors.New("FindRoots: garbage collector not wired yet")
}

func opCollectGarbage(ctx context.Context, c *conn) error {
	if err := c.startWork(); err != nil {
		return err
	}
	return errors.New("CollectGarbage: garbage collector not wired yet")
}
