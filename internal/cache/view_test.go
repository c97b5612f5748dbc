package cache

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

// slowVersion is a real store whose first Version answer is held back
// until release is closed, after it was read.
type slowVersion struct {
	*sqlite.Store
	calls   atomic.Int32
	reading chan struct{} // closed when the first call has read the version
	release chan struct{}
}

func (s *slowVersion) Version(ctx context.Context) (int64, error) {
	v, err := s.Store.Version(ctx)
	if s.calls.Add(1) == 1 {
		close(s.reading)
		<-s.release
	}
	return v, err
}

// A request arriving while an older version check is in flight must not
// take that check's answer: it waits for a check that began after it
// arrived, and the requests that arrived meanwhile share one such check.
func TestViewSyncSharesOnlyNewerChecks(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := &slowVersion{Store: st, reading: make(chan struct{}), release: make(chan struct{})}
	v := newView(m)

	first := make(chan uint64)
	go func() {
		gen, _ := v.sync(ctx)
		first <- gen
	}()
	<-m.reading // the first check has read the version and is held
	var wg sync.WaitGroup
	gens := make([]uint64, 4)
	for i := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gens[i], _ = v.sync(ctx)
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them arrive and wait
	// A write the held check has not seen, committed after they arrived.
	if err := st.CreateToken(ctx, meta.Token{ID: "t", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
		t.Fatal(err)
	}
	close(m.release)
	g0 := <-first
	wg.Wait()
	for i, g := range gens {
		if g == g0 {
			t.Errorf("request %d got the generation of the check older than it (%d): it misses the write", i, g)
		}
	}
	if n := m.calls.Load(); n != 2 {
		t.Errorf("%d version checks for 5 requests, want 2 (one shared by the 4 that waited)", n)
	}
}
