// Package tombstone wraps a blob.Store shared by several silo serve
// replicas so that deleting a blob is safe while other replicas upload:
// Delete only buries the key (records it for deletion), and Reap, run by
// one replica at a time, deletes what has been buried for a grace period
// and is still unused, re-checking that inside the same transaction that
// uploads referencing the key anew wait for.
//
// Why: a replica's garbage collector cannot see another replica's upload
// between finding a NAR stored and recording its use, nor a blob just
// written and not yet recorded. The grace period outlasts those windows
// (and downloads already in flight when a path was deleted), and a writer
// storing a key again revives it first (Commit), waiting for a deletion in
// progress, so its bytes are never deleted after it stored them.
package tombstone

import (
	"context"
	"time"

	"github.com/silo-cache/silo/internal/blob"
)

// Graveyard keeps the buried keys; meta/postgres implements it.
type Graveyard interface {
	// Bury records keys for deletion.
	Bury(ctx context.Context, keys []string) error
	// Revive cancels the deletion of key, waiting for one in progress.
	Revive(ctx context.Context, key string) error
	// Reap deletes, with del, the keys buried longer than grace ago that
	// nothing refers to, and returns how many it deleted.
	Reap(ctx context.Context, grace time.Duration, del func(ctx context.Context, key string) error) (int, error)
}

// Store is a blob.Store whose deletions wait in a Graveyard.
type Store struct {
	blob.Store
	graves Graveyard
}

// New wraps s.
func New(s blob.Store, g Graveyard) *Store { return &Store{Store: s, graves: g} }

// Delete buries key; Reap deletes it later if it is still unused then.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.ValidKey(key); err != nil {
		return err
	}
	return s.graves.Bury(ctx, []string{key})
}

// Reap deletes the blobs buried longer than grace ago that are unused.
func (s *Store) Reap(ctx context.Context, grace time.Duration) (int, error) {
	return s.graves.Reap(ctx, grace, s.Store.Delete)
}

// Create starts a new blob whose Commit revives its key first.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	w, err := s.Store.Create(ctx)
	if err != nil {
		return nil, err
	}
	return &writer{Writer: w, graves: s.graves}, nil
}

// RedirectURL passes the wrapped store's redirects on, if it has them.
func (s *Store) RedirectURL(ctx context.Context, key string) (string, bool, error) {
	if r, ok := s.Store.(interface {
		RedirectURL(context.Context, string) (string, bool, error)
	}); ok {
		return r.RedirectURL(ctx, key)
	}
	return "", false, nil
}

type writer struct {
	blob.Writer
	graves Graveyard
}

func (w *writer) Commit(ctx context.Context, key string) error {
	if err := blob.ValidKey(key); err != nil {
		w.Abort()
		return err
	}
	if err := w.graves.Revive(ctx, key); err != nil {
		w.Abort()
		return err
	}
	return w.Writer.Commit(ctx, key)
}
