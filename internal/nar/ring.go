package nar

import (
	"context"
	"sync"
)

// ring passes chunks from the dumper to the consumer and back. A side that
// finds nothing to take parks, and is woken only once half the ring is
// ready for it: on the two-vCPU machines this was tuned on, waking a parked
// goroutine took about 125 µs, more than hashing a 128 KiB chunk, so with
// a wake-up per chunk (as plain channels do) the two sides took turns
// instead of running at once. Woken with a batch, a side has work for
// longer than the next wake-up takes.
type ring struct {
	mu           sync.Mutex
	full, free   [][]byte // FIFO, at most n each
	batch        int
	closed       bool
	consumerIdle bool          // consumer parked on fullReady
	dumperIdle   bool          // dumper parked on freeReady
	fullReady    chan struct{} // capacity 1
	freeReady    chan struct{} // capacity 1
}

func newRing(n, size int) *ring {
	r := &ring{batch: max(1, n/2), fullReady: make(chan struct{}, 1), freeReady: make(chan struct{}, 1)}
	for range n {
		r.free = append(r.free, make([]byte, 0, size))
	}
	return r
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func pop(q *[][]byte) []byte {
	b := (*q)[0]
	n := copy(*q, (*q)[1:])
	*q = (*q)[:n]
	return b
}

// put queues a filled chunk for the consumer.
func (r *ring) put(b []byte) {
	r.mu.Lock()
	r.full = append(r.full, b)
	if r.consumerIdle && len(r.full) >= r.batch {
		r.consumerIdle = false
		signal(r.fullReady)
	}
	r.mu.Unlock()
}

// close tells the consumer that no more chunks will come.
func (r *ring) close() {
	r.mu.Lock()
	r.closed = true
	r.consumerIdle = false
	signal(r.fullReady)
	r.mu.Unlock()
}

// get returns the next filled chunk, or false once the ring is closed and
// empty.
func (r *ring) get() ([]byte, bool) {
	for {
		r.mu.Lock()
		if len(r.full) > 0 {
			b := pop(&r.full)
			r.mu.Unlock()
			return b, true
		}
		if r.closed {
			r.mu.Unlock()
			return nil, false
		}
		r.consumerIdle = true
		r.mu.Unlock()
		<-r.fullReady
	}
}

// release gives a consumed chunk back to the dumper.
func (r *ring) release(b []byte) {
	r.mu.Lock()
	r.free = append(r.free, b[:0])
	if r.dumperIdle && len(r.free) >= r.batch {
		r.dumperIdle = false
		signal(r.freeReady)
	}
	r.mu.Unlock()
}

// take returns an empty chunk for the dumper to fill.
func (r *ring) take(ctx context.Context) ([]byte, error) {
	for {
		r.mu.Lock()
		if len(r.free) > 0 {
			b := pop(&r.free)
			r.mu.Unlock()
			return b, nil
		}
		r.dumperIdle = true
		r.mu.Unlock()
		select {
		case <-r.freeReady:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
