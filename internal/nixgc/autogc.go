package nixgc

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nixstore"
)

// AutoGC is Nix's automatic collection (min-free, max-free): before new
// content is written, if free space in the store has fallen below MinFree,
// a collection frees up to MaxFree minus what is free. One AutoGC serves
// a whole daemon: at most one automatic collection runs at a time, free
// space is checked at most every CheckInterval, and a collection that
// would not free enough (free space already within 3% of what the last
// one left) is not repeated. Set nixstore.Options.AutoGC to its Check.
type AutoGC struct {
	MinFree, MaxFree uint64
	// CheckInterval is min-free-check-interval (Nix's default 5 s).
	CheckInterval time.Duration
	// Open opens the store a collection runs on; Log receives its
	// messages ("running auto-GC to free %d bytes").
	Open func(ctx context.Context) (*nixstore.Store, error)
	Log  func(nixstore.Verbosity, string)

	ctx          context.Context
	dir          string
	mu           sync.Mutex
	lastCheck    time.Time
	running      chan struct{} // closed when the running collection ends
	availAfterGC uint64
}

// NewAutoGC returns an AutoGC for the store whose real directory is
// realStoreDir; its collections run under ctx (the daemon's lifetime, not
// a connection's) on stores open returns.
func NewAutoGC(ctx context.Context, realStoreDir string, minFree, maxFree uint64, interval time.Duration, open func(context.Context) (*nixstore.Store, error)) *AutoGC {
	return &AutoGC{MinFree: minFree, MaxFree: maxFree, CheckInterval: interval, Open: open, ctx: ctx, dir: realStoreDir, availAfterGC: ^uint64(0)}
}

// Check starts a collection if free space is low, and waits (as long as
// ctx allows) for a running one to end, as Nix's autoGC(sync = true).
func (a *AutoGC) Check(ctx context.Context) {
	a.mu.Lock()
	if a.running == nil {
		if time.Since(a.lastCheck) < a.CheckInterval || a.MinFree == 0 {
			a.mu.Unlock()
			return
		}
		avail, err := a.availOf(a.dir)
		a.lastCheck = time.Now()
		if err != nil || avail >= a.MinFree || avail >= a.MaxFree || float64(avail) > float64(a.availAfterGC)*0.97 {
			a.mu.Unlock()
			return
		}
		a.running = make(chan struct{})
		go a.collect(a.MaxFree - avail)
	}
	running := a.running
	a.mu.Unlock()
	select {
	case <-running:
	case <-ctx.Done():
	}
}

func (a *AutoGC) collect(maxFreed uint64) {
	defer func() {
		a.mu.Lock()
		close(a.running)
		a.running = nil
		a.lastCheck = time.Now()
		a.mu.Unlock()
	}()
	a.log(nixstore.LvlInfo, "running auto-GC to free "+strconv.FormatUint(maxFreed, 10)+" bytes")
	s, err := a.Open(a.ctx)
	if err != nil {
		a.log(nixstore.LvlError, "auto-GC: "+err.Error())
		return
	}
	defer s.Close()
	if _, err := CollectGarbage(a.ctx, s, Options{Action: DeleteDead, MaxFreed: maxFreed, KeepDerivations: true}); err != nil {
		a.log(nixstore.LvlError, "auto-GC: "+err.Error())
	}
	if avail, err := a.availOf(a.dir); err == nil {
		a.mu.Lock()
		a.availAfterGC = avail
		a.mu.Unlock()
	}
}

func (a *AutoGC) log(l nixstore.Verbosity, msg string) {
	if a.Log != nil {
		a.Log(l, msg)
	}
}

// availOf returns the space available to unprivileged users on dir's file
// system, or the number in the file _NIX_TEST_FREE_SPACE_FILE names (Nix's
// test hook).
func (a *AutoGC) availOf(dir string) (uint64, error) {
	if f := os.Getenv("_NIX_TEST_FREE_SPACE_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Frsize), nil
}
