package listen

import "time"

// Rate is a minimum transfer rate with a grace period: a transfer may make
// no progress for up to Idle, and must otherwise average at least Min
// bytes per second while it waits on the client. Only time spent blocked
// on the client counts, never the server's own work between transfers, so
// a big NAR on a slow but steady link always completes, while a client
// that trickles (a slow-loris body, a download read a byte at a time) or
// stalls is cut off.
type Rate struct {
	Idle time.Duration // 0 means DefaultIdle
	Min  int64         // bytes per second; 0 means DefaultMinRate, < 0 none (Idle alone)
}

// The defaults of Rate. 1 KiB/s is far below any link Nix is used over,
// even shared by Nix's 25 parallel transfers.
const (
	DefaultIdle    = time.Minute
	DefaultMinRate = 1 << 10
)

func (r Rate) withDefaults() Rate {
	if r.Idle <= 0 {
		r.Idle = DefaultIdle
	}
	if r.Min == 0 {
		r.Min = DefaultMinRate
	}
	return r
}

// Budget tracks one direction of a connection or body against a Rate: a
// bucket of at most Idle of waiting time, drained by the time operations
// block and refilled by 1/Min second per byte they move. Operations fail
// once it is empty. A Budget is not safe for concurrent use.
type Budget struct {
	rate Rate
	left time.Duration
}

// NewBudget returns a full budget for r.
func (r Rate) NewBudget() Budget {
	r = r.withDefaults()
	return Budget{rate: r, left: r.Idle}
}

// Deadline returns when an operation starting at now and moving n bytes
// (0 for a read, which may return after any amount) must end.
func (b *Budget) Deadline(now time.Time, n int) time.Time {
	if b.rate.Min < 0 {
		return now.Add(b.rate.Idle)
	}
	return now.Add(b.left + b.allowance(n))
}

// Done accounts for an operation that blocked for elapsed and moved n bytes.
func (b *Budget) Done(elapsed time.Duration, n int) {
	if b.rate.Min < 0 {
		return
	}
	b.left = min(b.rate.Idle, b.left-elapsed+b.allowance(n))
	if b.left < 0 {
		b.left = 0
	}
}

// allowance is the time n bytes earn at the minimum rate.
func (b *Budget) allowance(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(b.rate.Min) * float64(time.Second))
}
