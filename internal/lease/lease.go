// Package lease runs singletons (the garbage collector, sweeps) on one of
// several silo serve replicas at a time, through a lease row in the shared
// database: no other coordination service, and no lock that pins a
// connection. A lease is taken for a TTL and renewed while its work runs;
// if a renewal fails or finds the lease taken over, the work's context is
// cancelled. A replica that dies holding a lease loses it when the TTL
// runs out.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Leaser keeps leases; meta/postgres implements it.
type Leaser interface {
	// AcquireLease takes or renews the lease name for holder for ttl and
	// reports whether holder has it.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Holder returns a name for this process as a lease holder:
// host, process ID and a random part (process IDs repeat across hosts).
func Holder() string {
	host, _ := os.Hostname()
	var rnd [4]byte
	rand.Read(rnd[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(rnd[:]))
}

// ErrLost is the cause of a work context cancelled because the lease was
// lost.
var ErrLost = errors.New("lease lost")

// Do runs fn if holder gets the lease name (or has it), renewing it every
// ttl/3 while fn runs, and reports whether fn ran. The lease is kept after
// fn returns until it expires, so that the holder stays the one to run
// the next round (call Release to give it up).
func Do(ctx context.Context, l Leaser, name, holder string, ttl time.Duration, fn func(context.Context) error) (bool, error) {
	ok, err := l.AcquireLease(ctx, name, holder, ttl)
	if err != nil || !ok {
		return false, err
	}
	work, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(max(ttl/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
			}
			ok, err := l.AcquireLease(work, name, holder, ttl)
			if work.Err() != nil {
				return
			}
			if err != nil || !ok {
				cancel(fmt.Errorf("%w: %s (renewal: %v)", ErrLost, name, err))
				return
			}
		}
	}()
	err = fn(work)
	cancel(nil)
	<-renewed
	if cause := context.Cause(work); errors.Is(cause, ErrLost) && err != nil {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	return true, err
}

// Every runs fn through Do every interval until ctx ends, on whichever
// replica holds the lease name. The lease lasts one interval, so that the
// work runs about once per interval across all replicas.
func Every(ctx context.Context, l Leaser, name, holder string, interval time.Duration, log *slog.Logger, fn func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ran, err := Do(ctx, l, name, holder, interval, fn)
		if err != nil && ctx.Err() == nil {
			log.ErrorContext(ctx, "singleton failed", "lease", name, "err", err)
		} else if ran {
			log.DebugContext(ctx, "singleton ran", "lease", name)
		}
	}
}

// Release gives up holder's lease name.
func Release(ctx context.Context, l Leaser, name, holder string) error {
	return l.ReleaseLease(ctx, name, holder)
}
