package adminapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/suggest"
)

// Kinds of errors, for errors.Is; each maps to one HTTP status.
var (
	ErrInvalid      = errors.New("invalid request")      // 400
	ErrUnauthorized = errors.New("no valid token")       // 401
	ErrForbidden    = errors.New("not allowed")          // 403
	ErrNotFound     = errors.New("not found")            // 404
	ErrExists       = errors.New("exists already")       // 409
	ErrUnavailable  = errors.New("server cannot answer") // other: the server's fault
	// ErrNoAPI is the Client's error for a server without the admin API
	// (not a silo server, or the URL is not its root).
	ErrNoAPI = errors.New("no silo admin API")
)

// Error is an error a user reads: Msg says what and names the fix; Kind
// is one of the Err* values.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, a ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, a...)}
}

// Principal is who asks: Root (the admin commands on a local data
// directory, which may do anything), Anonymous, or the holder of a token.
type Principal struct {
	root bool
	tok  meta.Token // ID "" for anonymous
}

// Root may do anything: whoever can write the data directory can anyway.
var Root = &Principal{root: true}

// Anonymous presents no token.
var Anonymous = &Principal{}

// TokenPrincipal is the holder of the verified token t.
func TokenPrincipal(t meta.Token) *Principal { return &Principal{tok: t} }

func (p *Principal) String() string {
	switch {
	case p.root:
		return "the data directory's owner"
	case p.tok.ID == "":
		return "an anonymous client"
	}
	return "token " + p.tok.ID
}

// may reports whether p has perm on the cache named name.
func (p *Principal) may(name string, perm meta.Perm) bool {
	return p.root || p.tok.ID != "" && auth.Allows(p.tok, name, perm)
}

// covers reports whether p may manage tokens whose pattern is pattern:
// root, an admin token for "*", or an admin token for the same pattern or
// for a single cache name its own pattern matches.
func (p *Principal) covers(pattern string) bool {
	if p.root {
		return true
	}
	if p.tok.ID == "" || p.tok.Perms&meta.PermAdmin == 0 {
		return false
	}
	if p.tok.CachePattern == "*" || p.tok.CachePattern == pattern {
		return true
	}
	if strings.ContainsAny(pattern, `*?[\`) {
		return false
	}
	ok, _ := path.Match(p.tok.CachePattern, pattern)
	return ok
}

// Service carries out admin requests against a metadata store.
type Service struct {
	Meta meta.Store
	// BaseURL returns the server's public URL without a trailing slash,
	// for the substituter URLs in CacheInfo; nil or "" means unknown.
	BaseURL func() string
	// Hostname names default signing keys (<host>-<cache>-1); nil means os.Hostname.
	Hostname func() (string, error)
	// Now and Rand default to time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) rand() io.Reader {
	if s.Rand != nil {
		return s.Rand
	}
	return rand.Reader
}

func (s *Service) info(c meta.Cache, u meta.Usage) CacheInfo {
	ci := CacheInfo{Name: c.Name, Public: c.Public, Priority: c.Priority, StoreDir: c.StoreDir,
		Created: c.Created, Paths: u.Paths, NarBytes: u.NarBytes, StoredBytes: u.StoredBytes}
	if k, err := signature.ParseSecretKey(c.SecretKey); err == nil {
		ci.PublicKey = k.Public().String()
	}
	if s.BaseURL != nil {
		if base := strings.TrimSuffix(s.BaseURL(), "/"); base != "" {
			ci.URL = base + "/" + c.Name
		}
	}
	return ci
}

func (s *Service) usage(ctx context.Context) (map[string]meta.Usage, error) {
	us, err := s.Meta.Usage(ctx)
	if err != nil {
		return nil, errorf(ErrUnavailable, "sum cache usage: %v", err)
	}
	m := make(map[string]meta.Usage, len(us))
	for _, u := range us {
		m[u.Cache] = u
	}
	return m, nil
}

func (s *Service) defaultKeyName(cacheName string) string {
	hostname := s.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	host, err := hostname()
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	if err != nil || host == "" || signature.ValidateKeyName(host+"-"+cacheName+"-1") != nil {
		return cacheName + "-1"
	}
	return host + "-" + cacheName + "-1"
}

// CreateCache creates a cache with a fresh signing key.
func (s *Service) CreateCache(ctx context.Context, p *Principal, spec CacheSpec) (CacheInfo, error) {
	if err := cache.ValidCacheName(spec.Name); err != nil {
		return CacheInfo{}, errorf(ErrInvalid, "%v", err)
	}
	if !p.may(spec.Name, meta.PermAdmin) {
		return CacheInfo{}, errorf(ErrForbidden, "%s may not create cache %s (it needs an admin token for that name)", p, spec.Name)
	}
	if spec.StoreDir == "" {
		spec.StoreDir = string(storepath.DefaultDir)
	}
	if _, err := storepath.NewDir(spec.StoreDir); err != nil {
		return CacheInfo{}, errorf(ErrInvalid, "store directory: %v", err)
	}
	if spec.Priority == 0 {
		spec.Priority = 40
	}
	if spec.Priority < 0 {
		return CacheInfo{}, errorf(ErrInvalid, "priority %d: want 0 or more", spec.Priority)
	}
	if spec.KeyName == "" {
		spec.KeyName = s.defaultKeyName(spec.Name)
	}
	if err := signature.ValidateKeyName(spec.KeyName); err != nil {
		return CacheInfo{}, errorf(ErrInvalid, "key name: %v (choose another with --key-name)", err)
	}
	key, err := signature.GenerateKey(spec.KeyName, s.rand())
	if err != nil {
		return CacheInfo{}, errorf(ErrUnavailable, "generate signing key: %v", err)
	}
	c, err := s.Meta.CreateCache(ctx, meta.Cache{Name: spec.Name, Public: spec.Public, Priority: spec.Priority,
		SecretKey: key.String(), StoreDir: spec.StoreDir})
	if errors.Is(err, meta.ErrExists) {
		return CacheInfo{}, errorf(ErrExists, "a cache named %s exists already (see silo cache info %s)", spec.Name, spec.Name)
	}
	if err != nil {
		return CacheInfo{}, errorf(ErrUnavailable, "create cache %s: %v", spec.Name, err)
	}
	return s.info(c, meta.Usage{}), nil
}

// Caches lists the caches p administers (all, for Root), with usage.
func (s *Service) Caches(ctx context.Context, p *Principal) ([]CacheInfo, error) {
	if !p.root && p.tok.ID == "" {
		return nil, errorf(ErrUnauthorized, "listing caches needs an admin token")
	}
	cs, err := s.Meta.Caches(ctx)
	if err != nil {
		return nil, errorf(ErrUnavailable, "list caches: %v", err)
	}
	us, err := s.usage(ctx)
	if err != nil {
		return nil, err
	}
	out := []CacheInfo{}
	for _, c := range cs {
		if p.may(c.Name, meta.PermAdmin) {
			out = append(out, s.info(c, us[c.Name]))
		}
	}
	return out, nil
}

// Cache describes one cache to anyone who may read it (anyone, for a
// public cache). Others cannot tell a private cache from a missing one.
func (s *Service) Cache(ctx context.Context, p *Principal, name string) (CacheInfo, error) {
	c, err := s.Meta.Cache(ctx, name)
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return CacheInfo{}, errorf(ErrUnavailable, "look up cache %s: %v", name, err)
	}
	if err != nil || !c.Public && !p.may(name, meta.PermPull) {
		if !p.root && p.tok.ID == "" {
			return CacheInfo{}, errorf(ErrUnauthorized, "cache %s is private or does not exist: present a token", name)
		}
		return CacheInfo{}, errorf(ErrNotFound, "no cache named %s that %s may read (see silo cache list)", name, p)
	}
	us, err := s.usage(ctx)
	if err != nil {
		return CacheInfo{}, err
	}
	return s.info(c, us[name]), nil
}

// DeleteCache deletes a cache and revokes the tokens bound to exactly its
// name; with dryRun it only says what it would do.
func (s *Service) DeleteCache(ctx context.Context, p *Principal, name string, dryRun bool) (DeleteResult, error) {
	if !p.may(name, meta.PermAdmin) {
		return DeleteResult{}, errorf(ErrForbidden, "%s may not delete cache %s (it needs an admin token for it)", p, name)
	}
	c, err := s.Meta.Cache(ctx, name)
	if errors.Is(err, meta.ErrNotFound) {
		return DeleteResult{}, errorf(ErrNotFound, "no cache named %s (see silo cache list)", name)
	}
	if err != nil {
		return DeleteResult{}, errorf(ErrUnavailable, "look up cache %s: %v", name, err)
	}
	us, err := s.usage(ctx)
	if err != nil {
		return DeleteResult{}, err
	}
	toks, err := s.Meta.Tokens(ctx)
	if err != nil {
		return DeleteResult{}, errorf(ErrUnavailable, "list tokens: %v", err)
	}
	res := DeleteResult{Cache: s.info(c, us[name]), DryRun: dryRun, Revoked: []TokenInfo{}, Matching: []TokenInfo{}}
	for _, t := range toks {
		if t.CachePattern == name {
			res.Revoked = append(res.Revoked, tokenInfo(t))
		} else if ok, _ := path.Match(t.CachePattern, name); ok {
			res.Matching = append(res.Matching, tokenInfo(t))
		}
	}
	if dryRun {
		return res, nil
	}
	if err := s.Meta.DeleteCache(ctx, name); errors.Is(err, meta.ErrNotFound) {
		return DeleteResult{}, errorf(ErrNotFound, "no cache named %s (deleted meanwhile?)", name)
	} else if err != nil {
		return DeleteResult{}, errorf(ErrUnavailable, "delete cache %s: %v", name, err)
	}
	for _, t := range res.Revoked {
		if err := s.Meta.DeleteToken(ctx, t.ID); err != nil && !errors.Is(err, meta.ErrNotFound) {
			return res, errorf(ErrUnavailable, "cache %s is deleted, but revoking its token %s failed: %v (run: silo token revoke %s)", name, t.ID, err, t.ID)
		}
	}
	return res, nil
}

func tokenInfo(t meta.Token) TokenInfo {
	return TokenInfo{ID: t.ID, Cache: t.CachePattern, Perms: strings.Split(auth.PermString(t.Perms), ","),
		Created: t.Created, Expires: t.Expires, Note: t.Note}
}

// ParsePerms turns ["pull", "push", "admin"] into a Perm.
func ParsePerms(names []string) (meta.Perm, error) {
	var p meta.Perm
	for _, n := range names {
		switch n {
		case "pull":
			p |= meta.PermPull
		case "push":
			p |= meta.PermPush
		case "admin":
			p |= meta.PermAdmin
		default:
			return 0, errorf(ErrInvalid, "unknown permission %q (want pull, push or admin)", n)
		}
	}
	if p == 0 {
		return 0, errorf(ErrInvalid, "say what the token may do: pull, push and/or admin")
	}
	return p, nil
}

// CreateToken creates a token; the text in the result is shown once.
func (s *Service) CreateToken(ctx context.Context, p *Principal, spec TokenSpec) (NewToken, error) {
	if spec.Cache == "" {
		return NewToken{}, errorf(ErrInvalid, "a token needs a cache name or pattern (--cache main, or * for all)")
	}
	perms, err := ParsePerms(spec.Perms)
	if err != nil {
		return NewToken{}, err
	}
	if !p.covers(spec.Cache) {
		return NewToken{}, errorf(ErrForbidden, "%s may not create tokens for %q (it needs admin on all of them)", p, spec.Cache)
	}
	if !spec.Expires.IsZero() && !spec.Expires.After(s.now()) {
		return NewToken{}, errorf(ErrInvalid, "expiry %s is in the past", spec.Expires.UTC().Format(time.RFC3339))
	}
	text, rec, err := auth.New(s.rand(), spec.Cache, perms, spec.Expires, spec.Note)
	if err != nil {
		return NewToken{}, errorf(ErrInvalid, "%v", err)
	}
	rec.Created = s.now()
	var warnings []string
	if cs, err := s.Meta.Caches(ctx); err == nil {
		var names []string
		matched := false
		for _, c := range cs {
			if ok, _ := path.Match(spec.Cache, c.Name); ok {
				matched = true
			}
			if p.may(c.Name, meta.PermAdmin) {
				names = append(names, c.Name)
			}
		}
		if !matched {
			w := fmt.Sprintf("no cache matches %q yet, so the token grants nothing until one is created", spec.Cache)
			if best, ok := suggest.Closest(spec.Cache, names); ok {
				w += fmt.Sprintf(" (did you mean %q?)", best)
			}
			warnings = append(warnings, w)
		}
	}
	if err := s.Meta.CreateToken(ctx, rec); err != nil {
		return NewToken{}, errorf(ErrUnavailable, "store token: %v", err)
	}
	return NewToken{Token: text, Info: tokenInfo(rec), Warnings: warnings}, nil
}

// Tokens lists the tokens p may manage, oldest first.
func (s *Service) Tokens(ctx context.Context, p *Principal) ([]TokenInfo, error) {
	if !p.root && p.tok.ID == "" {
		return nil, errorf(ErrUnauthorized, "listing tokens needs an admin token")
	}
	toks, err := s.Meta.Tokens(ctx)
	if err != nil {
		return nil, errorf(ErrUnavailable, "list tokens: %v", err)
	}
	out := []TokenInfo{}
	for _, t := range toks {
		if p.covers(t.CachePattern) {
			out = append(out, tokenInfo(t))
		}
	}
	return out, nil
}

// RevokeToken deletes the token with ID id (or whose text id is).
func (s *Service) RevokeToken(ctx context.Context, p *Principal, id string) (TokenInfo, error) {
	if full, err := auth.ID(id); err == nil {
		id = full
	}
	t, err := s.Meta.Token(ctx, id)
	if errors.Is(err, meta.ErrNotFound) || err == nil && !p.covers(t.CachePattern) {
		return TokenInfo{}, errorf(ErrNotFound, "no token %s that %s may revoke (see silo token list)", id, p)
	}
	if err != nil {
		return TokenInfo{}, errorf(ErrUnavailable, "look up token %s: %v", id, err)
	}
	if err := s.Meta.DeleteToken(ctx, id); errors.Is(err, meta.ErrNotFound) {
		return TokenInfo{}, errorf(ErrNotFound, "no token %s (revoked meanwhile?)", id)
	} else if err != nil {
		return TokenInfo{}, errorf(ErrUnavailable, "revoke token %s: %v", id, err)
	}
	return tokenInfo(t), nil
}

// Whoami says what p's token grants and on which existing caches.
func (s *Service) Whoami(ctx context.Context, p *Principal) (Whoami, error) {
	if p.root || p.tok.ID == "" {
		return Whoami{}, errorf(ErrUnauthorized, "present a token (Authorization: Bearer TOKEN)")
	}
	cs, err := s.Meta.Caches(ctx)
	if err != nil {
		return Whoami{}, errorf(ErrUnavailable, "list caches: %v", err)
	}
	w := Whoami{Token: tokenInfo(p.tok), Caches: []CacheInfo{}}
	for _, c := range cs {
		if ok, _ := path.Match(p.tok.CachePattern, c.Name); ok {
			w.Caches = append(w.Caches, s.info(c, meta.Usage{}))
		}
	}
	return w, nil
}

// Authenticate returns the principal for a presented token text: an
// error wrapping ErrUnauthorized if it is malformed, unknown, revoked,
// expired or wrong. The comparison takes the same time for unknown IDs.
func (s *Service) Authenticate(ctx context.Context, text string) (*Principal, error) {
	id, err := auth.ID(text)
	if err != nil {
		return nil, errorf(ErrUnauthorized, "the credentials presented are not a silo token (%v)", err)
	}
	rec, err := s.Meta.Token(ctx, id)
	if errors.Is(err, meta.ErrNotFound) {
		auth.Check(meta.Token{Hash: make([]byte, 32)}, text, s.now())
		return nil, errorf(ErrUnauthorized, "token %s is unknown or revoked (create one with silo token create)", id)
	}
	if err != nil {
		return nil, errorf(ErrUnavailable, "look up token: %v", err)
	}
	if err := auth.Check(rec, text, s.now()); err != nil {
		return nil, errorf(ErrUnauthorized, "%v", err)
	}
	return TokenPrincipal(rec), nil
}

// Local is the Service acting for Root: the admin commands on a local
// data directory.
type Local struct{ S *Service }

func (l Local) CreateCache(ctx context.Context, spec CacheSpec) (CacheInfo, error) {
	return l.S.CreateCache(ctx, Root, spec)
}
func (l Local) Caches(ctx context.Context) ([]CacheInfo, error) { return l.S.Caches(ctx, Root) }
func (l Local) Cache(ctx context.Context, name string) (CacheInfo, error) {
	return l.S.Cache(ctx, Root, name)
}
func (l Local) DeleteCache(ctx context.Context, name string, dryRun bool) (DeleteResult, error) {
	return l.S.DeleteCache(ctx, Root, name, dryRun)
}
func (l Local) CreateToken(ctx context.Context, spec TokenSpec) (NewToken, error) {
	return l.S.CreateToken(ctx, Root, spec)
}
func (l Local) Tokens(ctx context.Context) ([]TokenInfo, error) { return l.S.Tokens(ctx, Root) }
func (l Local) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
	return l.S.RevokeToken(ctx, Root, id)
}
