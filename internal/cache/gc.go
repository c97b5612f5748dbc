package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/silo-cache/silo/internal/blob"
)

// CollectGarbage drops uploads older than the upload TTL whose narinfo
// never came, and NARs (with listings) that no path or upload uses, and
// deletes their blobs. It returns how many blobs it deleted.
func (s *Server) CollectGarbage(ctx context.Context) (int, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	keys, err := s.meta.Collect(ctx, s.now().Add(-s.opts.UploadTTL))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		if err := s.blobs.Delete(ctx, k); err != nil {
			return n, fmt.Errorf("collect garbage: %w", err)
		}
		n++
	}
	return n, nil
}

// SweepOrphans deletes blobs older than minAge that no metadata refers
// to: what a crash between storing a blob and recording it leaves, and
// replaced build logs. It returns how many it deleted.
func (s *Server) SweepOrphans(ctx context.Context, minAge time.Duration) (int, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	cutoff := s.now().Add(-minAge)
	var orphans []string
	err := s.blobs.List(ctx, "", func(i blob.Info) error {
		if i.ModTime.After(cutoff) {
			return nil
		}
		used, err := s.meta.BlobInUse(ctx, i.Key)
		if err != nil {
			return err
		}
		if !used {
			orphans = append(orphans, i.Key)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep orphan blobs: %w", err)
	}
	for i, k := range orphans {
		if err := s.blobs.Delete(ctx, k); err != nil {
			return i, fmt.Errorf("sweep orphan blobs: %w", err)
		}
	}
	return len(orphans), nil
}

// RunGC collects garbage every interval, and sweeps orphans every tenth
// time, until ctx ends.
func (s *Server) RunGC(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.CollectGarbage(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.ErrorContext(ctx, "garbage collection failed", "err", err)
		} else if n > 0 {
			s.log.InfoContext(ctx, "garbage collected", "blobs", n)
		}
		if round%10 == 0 {
			n, err := s.SweepOrphans(ctx, time.Hour)
			if err != nil && !errors.Is(err, context.Canceled) {
				s.log.ErrorContext(ctx, "orphan sweep failed", "err", err)
			} else if n > 0 {
				s.log.InfoContext(ctx, "orphan blobs deleted", "blobs", n)
			}
		}
	}
}
