package lease

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/meta/postgres"
	"github.com/silo-cache/silo/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

var ctx = context.Background()

func replicas(t *testing.T, n int) []*postgres.Store {
	url := pgtest.New(t)
	var out []*postgres.Store
	for range n {
		s, err := postgres.Open(ctx, url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// Replicas competing for a lease run the work one at a time.
func TestOneAtATime(t *testing.T) {
	rs := replicas(t, 4)
	var running, maxRunning, runs atomic.Int32
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := Holder()
			for range 20 {
				_, err := Do(ctx, r, "gc", holder, 50*time.Millisecond, func(context.Context) error {
					n := running.Add(1)
					for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
					}
					time.Sleep(5 * time.Millisecond)
					running.Add(-1)
					runs.Add(1)
					return nil
				})
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
				}
				Release(ctx, r, "gc", holder)
			}
		}()
	}
	wg.Wait()
	if maxRunning.Load() != 1 || runs.Load() == 0 {
		t.Errorf("%d runs, at most %d at once; want some runs, one at a time", runs.Load(), maxRunning.Load())
	}
}

// Work outlasting its TTL keeps the lease by renewing it; a holder that
// stopped renewing (it died) loses it to the next replica.
func TestRenewAndTakeOver(t *testing.T) {
	rs := replicas(t, 2)
	a, b := Holder(), Holder()
	ran, err := Do(ctx, rs[0], "gc", a, 60*time.Millisecond, func(ctx context.Context) error {
		time.Sleep(300 * time.Millisecond)
		if ok, _ := rs[1].AcquireLease(ctx, "gc", b, time.Minute); ok {
			t.Error("another replica took a lease that was being renewed")
		}
		return ctx.Err()
	})
	if !ran || err != nil {
		t.Fatalf("Do = %v, %v", ran, err)
	}
	time.Sleep(100 * time.Millisecond) // a's lease expires: nobody renews it
	if ok, _ := rs[1].AcquireLease(ctx, "gc", b, time.Minute); !ok {
		t.Fatal("the lease of a holder that stopped renewing was not taken over")
	}
	// a's work is cancelled when a renewal finds the lease taken.
	rs[1].ReleaseLease(ctx, "gc", b)
	ran, err = Do(ctx, rs[0], "gc", a, 60*time.Millisecond, func(ctx context.Context) error {
		rs[0].ReleaseLease(ctx, "gc", a)
		if ok, _ := rs[1].AcquireLease(ctx, "gc", b, time.Minute); !ok {
			t.Error("could not take the released lease")
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if !ran || !errors.Is(err, ErrLost) {
		t.Errorf("Do after the lease was taken over = %v, %v; want ErrLost", ran, err)
	}
}
