package cache

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/meta"
)

// AnonymousHeader is set on a read from a public cache served anonymously
// because the token presented was refused.
const AnonymousHeader = "X-Silo-Warning"

// authorizeRead is authorize, except that a read from a public cache whose
// token is refused (unknown, revoked, expired, malformed) is served as an
// anonymous read: netrc holds one password per host, so revoking one push
// token must not cut every machine with it in its netrc off the public
// caches (Nix would only say the URL "does not appear to be a binary
// cache"). The response carries AnonymousHeader and the server logs a
// warning (at most once per token and reason every few minutes). Writes and
// private caches still refuse the token.
func (s *Server) authorizeRead(w http.ResponseWriter, r *http.Request, c meta.Cache, need meta.Perm) error {
	err := s.authorize(r, c, need)
	if err == nil || need != meta.PermPull || !c.Public {
		return err
	}
	var he *httpError
	if !errors.As(err, &he) || he.status != http.StatusUnauthorized {
		return err
	}
	w.Header().Set(AnonymousHeader, fmt.Sprintf("token refused, served as an anonymous read of public cache %s: %s", c.Name, he.msg))
	if anonWarnings.first(s, he.msg, s.now()) {
		s.log.Warn("a refused token read a public cache anonymously (fix or remove it from the client's netrc)",
			"cache", c.Name, "reason", he.msg, "remote", r.RemoteAddr, "id", RequestID(r.Context()))
	}
	return nil
}

// anonWarnings remembers which refusals were logged lately, in bounded memory.
var anonWarnings = &warnOnce{seen: map[warnKey]time.Time{}}

const (
	anonWarnEvery = 10 * time.Minute
	anonWarnMax   = 1024
)

type warnKey struct {
	s   *Server
	msg string
}

type warnOnce struct {
	mu   sync.Mutex
	seen map[warnKey]time.Time
}

// first reports whether msg was not logged for s within anonWarnEvery.
func (o *warnOnce) first(s *Server, msg string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := warnKey{s, msg}
	if t, ok := o.seen[k]; ok && now.Sub(t) < anonWarnEvery {
		return false
	}
	if len(o.seen) >= anonWarnMax {
		clear(o.seen)
	}
	o.seen[k] = now
	return true
}
