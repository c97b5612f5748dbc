package publish

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/meta"
)

// TokenSource finds token records by ID; meta.Store (silo serve's
// metadata) is one. It returns an error wrapping meta.ErrNotFound for an
// unknown ID.
type TokenSource interface {
	Token(ctx context.Context, id string) (meta.Token, error)
}

// TokenAuthorizer returns an Options.Authorize that admits requests
// presenting a silo token (netrc password, or Authorization: Bearer) that
// grants pull on the cache named cache, exactly as silo serve checks
// tokens for a private cache.
func TokenAuthorizer(tokens TokenSource, cache string) func(r *http.Request) error {
	return func(r *http.Request) error {
		text, ok := auth.FromRequest(r)
		if !ok {
			return errors.New("this store is private: authenticate with a silo token (netrc password, or Authorization: Bearer)")
		}
		id, err := auth.ID(text)
		if err != nil {
			return fmt.Errorf("the credentials presented are not a silo token (%v)", err)
		}
		// An unknown ID answers as a wrong secret, so IDs cannot be probed.
		rejected := fmt.Errorf("token %s rejected: unknown, revoked or not this token's secret (create a new one with silo token create)", id)
		rec, err := tokens.Token(r.Context(), id)
		if errors.Is(err, meta.ErrNotFound) {
			// Spend the time a comparison would, so that probing IDs learns nothing.
			auth.Check(meta.Token{Hash: make([]byte, 32)}, text, time.Now())
			return rejected
		}
		if err != nil {
			return fmt.Errorf("cannot look up token %s: %w", id, err)
		}
		if err := auth.Check(rec, text, time.Now()); err != nil {
			if errors.Is(err, auth.ErrExpired) {
				return err
			}
			return rejected
		}
		if !auth.Allows(rec, cache, meta.PermPull) {
			return fmt.Errorf("token %s does not grant pull on %s (it grants %s on caches matching %q)", id, cache, auth.PermString(rec.Perms), rec.CachePattern)
		}
		return nil
	}
}
