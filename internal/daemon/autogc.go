package daemon

import (
	"context"
	"time"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
)

// startAutoGC sets up the daemon's automatic collection (min-free,
// max-free from its configuration): one for the whole daemon, checked
// before each connection writes new content, running on a store of its
// own for as long as ctx lasts.
func (s *Server) startAutoGC(ctx context.Context) {
	st := s.opts.Config.Settings
	if st.Uint("min-free") == 0 || s.opts.Store.Socket != "" {
		return
	}
	open := func(ctx context.Context) (*nixstore.Store, error) {
		o, err := storeOptions(s.opts.Store, st, func(m string) { s.logf(1, "warning: %s", m) })
		if err != nil {
			return nil, err
		}
		o.Log = func(level nixstore.Verbosity, msg string) { s.logf(uint64(level), "%s", msg) }
		s.openMu.Lock()
		defer s.openMu.Unlock()
		return nixstore.Open(ctx, o)
	}
	s.autoGC = nixgc.NewAutoGC(ctx, s.opts.Store.RealStoreDir, st.Uint("min-free"), st.Uint("max-free"),
		time.Duration(st.Uint("min-free-check-interval"))*time.Second, open)
	s.autoGC.Log = func(level nixstore.Verbosity, msg string) { s.logf(uint64(level), "%s", msg) }
}
