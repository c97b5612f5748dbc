package push

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/narinfo"
)

// Display shows a push's progress: on a terminal one status line redrawn a
// few times a second (paths and bytes done, rate, time left); otherwise a
// plain line per uploaded or failed path.
type Display struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu         sync.Mutex
	planned    bool // Planned was called: there is a push to sum up
	totalPaths int
	totalBytes uint64
	donePaths  int
	failed     int
	narDone    atomic.Int64
	stop       chan struct{}
	stopped    chan struct{}
}

// NewDisplay returns a Display writing to w; tty selects the redrawn line.
func NewDisplay(w io.Writer, tty bool) *Display {
	return &Display{w: w, tty: tty, start: time.Now()}
}

// Planned implements Progress.
func (d *Display) Planned(r Result, todo []*localstore.PathInfo) {
	d.mu.Lock()
	d.planned = true
	d.totalPaths = len(todo)
	for _, info := range todo {
		d.totalBytes += info.NarSize
	}
	d.start = time.Now()
	d.mu.Unlock()
	fmt.Fprintf(d.w, "closure: %d paths; %d signed upstream, %d already in the cache, %d to upload (%s)\n",
		r.Closure, r.SignedUpstream, r.Present, len(todo), Bytes(d.totalBytes))
	if d.tty && len(todo) > 0 {
		d.stop, d.stopped = make(chan struct{}), make(chan struct{})
		go d.loop()
	}
}

// NarBytes implements Progress.
func (d *Display) NarBytes(n int64) { d.narDone.Add(n) }

// Uploaded implements Progress.
func (d *Display) Uploaded(info *localstore.PathInfo, ni *narinfo.NarInfo, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.failed++
		d.clearLine()
		fmt.Fprintf(d.w, "failed %s: %v\n", info.Path, err)
		return
	}
	d.donePaths++
	if !d.tty {
		fmt.Fprintf(d.w, "uploaded %s (%s, %s compressed)\n", info.Path, Bytes(ni.NarSize), Bytes(ni.FileSize))
	}
}

func (d *Display) loop() {
	defer close(d.stopped)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.mu.Lock()
			fmt.Fprintf(d.w, "\r\x1b[K%s", d.statusLocked())
			d.mu.Unlock()
		}
	}
}

func (d *Display) clearLine() {
	if d.tty && d.stop != nil {
		fmt.Fprint(d.w, "\r\x1b[K")
	}
}

func (d *Display) statusLocked() string {
	done := uint64(d.narDone.Load())
	elapsed := time.Since(d.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed
	}
	left := "?"
	if rate > 0 && d.totalBytes >= done {
		left = (time.Duration(float64(d.totalBytes-done)/rate) * time.Second).Round(time.Second).String()
	}
	s := fmt.Sprintf("[%d/%d paths, %s/%s, %s/s, %s left]", d.donePaths, d.totalPaths, Bytes(done), Bytes(d.totalBytes), Bytes(uint64(rate)), left)
	if d.failed > 0 {
		s += fmt.Sprintf(" %d failed", d.failed)
	}
	return s
}

// Finish stops the status line and prints the summary of r, if the push
// got as far as planning: an error before that (the cache unreachable, a
// path not in the store) has nothing to sum up, and the error says it all.
func (d *Display) Finish(r Result, err error) {
	if d.stop != nil {
		close(d.stop)
		<-d.stopped
		d.stop = nil
		fmt.Fprint(d.w, "\r\x1b[K")
	}
	d.mu.Lock()
	planned := d.planned
	d.mu.Unlock()
	if !planned {
		return
	}
	elapsed := time.Since(d.start)
	rate := float64(r.NarBytes) / max(elapsed.Seconds(), 1e-3)
	fmt.Fprintf(d.w, "uploaded %d paths (%s NAR, %s compressed) in %s, %s/s; %d already present, %d signed upstream",
		r.Uploaded, Bytes(r.NarBytes), Bytes(r.FileBytes), elapsed.Round(time.Millisecond), Bytes(uint64(rate)), r.Present, r.SignedUpstream)
	if r.Failed > 0 {
		fmt.Fprintf(d.w, ", %d FAILED", r.Failed)
	}
	fmt.Fprintln(d.w)
}

// Bytes formats a byte count with a binary unit: "12.3 MiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
