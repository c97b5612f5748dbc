// Package auth issues and checks silo's access tokens.
//
// A token reads "silo_<id>_<secret>": the ID (10 base32 characters) is
// public and finds the token's record; the secret (32 random bytes) is
// never stored. Records hold only the SHA-256 of the whole token, compared
// in constant time. A token grants pull, push and/or admin on the caches
// whose names match its pattern (path.Match); push implies pull and admin
// implies both. Clients present a token as the password of HTTP Basic
// authentication (Nix's netrc; the user name is ignored) or as
// "Authorization: Bearer <token>".
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/meta"
)

const prefix = "silo_"

var (
	// ErrMalformed is returned (wrapped) for text that is not a silo token.
	ErrMalformed = errors.New("malformed token")
	// ErrRejected is returned (wrapped) for a token that is unknown,
	// revoked, expired or wrong.
	ErrRejected = errors.New("token rejected")
	// ErrExpired is returned (wrapped) for a token whose secret matches
	// but which has expired; it wraps ErrRejected.
	ErrExpired = fmt.Errorf("%w (expired)", ErrRejected)
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New makes a token. It returns the text to give the user once and the
// record to store.
func New(rnd io.Reader, pattern string, perms meta.Perm, expires time.Time, note string) (string, meta.Token, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return "", meta.Token{}, fmt.Errorf("cache pattern %q: %w", pattern, err)
	}
	if perms == 0 {
		return "", meta.Token{}, errors.New("a token needs at least one of pull, push or admin")
	}
	var idb [6]byte
	var secret [32]byte
	if _, err := io.ReadFull(rnd, idb[:]); err != nil {
		return "", meta.Token{}, fmt.Errorf("generate token: %w", err)
	}
	if _, err := io.ReadFull(rnd, secret[:]); err != nil {
		return "", meta.Token{}, fmt.Errorf("generate token: %w", err)
	}
	id := enc.EncodeToString(idb[:])[:10]
	text := prefix + id + "_" + enc.EncodeToString(secret[:])
	return text, meta.Token{ID: id, Hash: Hash(text), CachePattern: pattern, Perms: perms, Expires: expires, Note: note}, nil
}

// NewRandom is New with crypto/rand.
func NewRandom(pattern string, perms meta.Perm, expires time.Time, note string) (string, meta.Token, error) {
	return New(rand.Reader, pattern, perms, expires, note)
}

// Hash returns the SHA-256 of a token's text, as stored.
func Hash(text string) []byte {
	h := sha256.Sum256([]byte(text))
	return h[:]
}

// ID returns the ID embedded in a token's text.
func ID(text string) (string, error) {
	rest, ok := strings.CutPrefix(text, prefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || len(id) != 10 || secret == "" {
		return "", fmt.Errorf("%w: want silo_<id>_<secret> as printed by silo token create", ErrMalformed)
	}
	return id, nil
}

// Check verifies that text is the token rec stores and that it has not
// expired at now. The comparison takes the same time wherever the texts differ.
func Check(rec meta.Token, text string, now time.Time) error {
	if subtle.ConstantTimeCompare(Hash(text), rec.Hash) != 1 {
		return fmt.Errorf("%w: token %s does not match its record", ErrRejected, rec.ID)
	}
	if !rec.Expires.IsZero() && !now.Before(rec.Expires) {
		return fmt.Errorf("%w: token %s expired at %s (create a new one with silo token create)", ErrExpired, rec.ID, rec.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// Allows reports whether rec grants want on the cache named cache.
func Allows(rec meta.Token, cache string, want meta.Perm) bool {
	if ok, _ := path.Match(rec.CachePattern, cache); !ok {
		return false
	}
	have := rec.Perms
	if have&meta.PermAdmin != 0 {
		have |= meta.PermPush
	}
	if have&meta.PermPush != 0 {
		have |= meta.PermPull
	}
	return have&want == want
}

// FromRequest returns the token a request presents: the Bearer token, or
// the password of Basic authentication. ok is false when it presents none.
func FromRequest(r *http.Request) (text string, ok bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	if t, found := strings.CutPrefix(h, "Bearer "); found {
		return strings.TrimSpace(t), true
	}
	if _, pw, found := r.BasicAuth(); found {
		return pw, true
	}
	return "", true // some other scheme: present but unusable
}

// PermString renders perms as "pull,push,admin".
func PermString(p meta.Perm) string {
	var s []string
	for _, x := range []struct {
		p    meta.Perm
		name string
	}{{meta.PermPull, "pull"}, {meta.PermPush, "push"}, {meta.PermAdmin, "admin"}} {
		if p&x.p != 0 {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, ",")
}
