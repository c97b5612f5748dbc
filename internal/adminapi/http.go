package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/auth"
)

// maxBody bounds a request body: requests are small JSON objects.
const maxBody = 1 << 20

// bodyDeadline bounds the time a client has to send its request body.
const bodyDeadline = 30 * time.Second

// call is one API request being served.
type call struct {
	w   http.ResponseWriter
	r   *http.Request
	p   *Principal
	svc *Service
}

// decode reads the JSON request body into v, strictly.
func (c *call) decode(v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.w, c.r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(ErrInvalid, "request body: %v (want a JSON object, see silo's adminapi docs)", err)
	}
	if dec.More() {
		return errorf(ErrInvalid, "request body: more than one JSON value")
	}
	return nil
}

// route is one endpoint: a ServeMux pattern below Prefix, and whether it
// may be called without a token.
type route struct {
	method, pattern string
	anonymous       bool
	serve           func(c *call) (any, error)
}

// resources lists every resource's routes; a new resource adds its own.
var resources = []func() []route{cacheRoutes, tokenRoutes, whoamiRoutes}

// Handler serves the API at Prefix. log receives one line per request.
func Handler(svc *Service, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	for _, rs := range resources {
		for _, rt := range rs() {
			mux.HandleFunc(rt.method+" "+Prefix+rt.pattern, func(w http.ResponseWriter, r *http.Request) {
				serve(svc, log, rt, w, r)
			})
		}
	}
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{"GET", "POST", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != Prefix {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, strings.Join(allowed, " or "))})
			return
		}
		writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("no such endpoint: %s %s (the admin API has caches, tokens and whoami)", r.Method, r.URL.Path)})
	})
	return mux
}

func serve(svc *Service, log *slog.Logger, rt route, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(bodyDeadline))
	c := &call{w: w, r: r, svc: svc, p: Anonymous}
	var out any
	err := func() error {
		if text, ok := auth.FromRequest(r); ok {
			p, err := svc.Authenticate(r.Context(), text)
			if err != nil {
				return err
			}
			c.p = p
		} else if !rt.anonymous {
			return errorf(ErrUnauthorized, "the admin API needs a token (Authorization: Bearer TOKEN; silo token create --admin)")
		}
		var err error
		out, err = rt.serve(c)
		return err
	}()
	status := http.StatusOK
	if err != nil {
		status = statusOf(err)
		msg := err.Error()
		var e *Error
		if !errors.As(err, &e) || errors.Is(err, ErrUnavailable) {
			msg = "internal error (see the server log)"
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="silo"`)
		}
		writeJSON(w, status, errorBody{Error: msg})
	} else {
		if r.Method == http.MethodPost {
			status = http.StatusCreated
		}
		writeJSON(w, status, out)
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr),
	}
	if c.p.tok.ID != "" {
		attrs = append(attrs, slog.String("token", c.p.tok.ID))
	}
	level := slog.LevelInfo
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		if status >= 500 {
			level = slog.LevelError
		}
	}
	log.LogAttrs(r.Context(), level, "admin request", attrs...)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	case errors.Is(err, context.Canceled):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func cacheRoutes() []route {
	return []route{
		{method: "GET", pattern: "caches", serve: func(c *call) (any, error) {
			return c.svc.Caches(c.r.Context(), c.p)
		}},
		{method: "POST", pattern: "caches", serve: func(c *call) (any, error) {
			var spec CacheSpec
			if err := c.decode(&spec); err != nil {
				return nil, err
			}
			return c.svc.CreateCache(c.r.Context(), c.p, spec)
		}},
		{method: "GET", pattern: "caches/{name}", anonymous: true, serve: func(c *call) (any, error) {
			return c.svc.Cache(c.r.Context(), c.p, c.r.PathValue("name"))
		}},
		{method: "DELETE", pattern: "caches/{name}", serve: func(c *call) (any, error) {
			dry := c.r.URL.Query().Get("dry_run")
			return c.svc.DeleteCache(c.r.Context(), c.p, c.r.PathValue("name"), dry == "1" || dry == "true")
		}},
	}
}

func tokenRoutes() []route {
	return []route{
		{method: "GET", pattern: "tokens", serve: func(c *call) (any, error) {
			return c.svc.Tokens(c.r.Context(), c.p)
		}},
		{method: "POST", pattern: "tokens", serve: func(c *call) (any, error) {
			var spec TokenSpec
			if err := c.decode(&spec); err != nil {
				return nil, err
			}
			return c.svc.CreateToken(c.r.Context(), c.p, spec)
		}},
		{method: "DELETE", pattern: "tokens/{id}", serve: func(c *call) (any, error) {
			return c.svc.RevokeToken(c.r.Context(), c.p, c.r.PathValue("id"))
		}},
	}
}

func whoamiRoutes() []route {
	return []route{
		{method: "GET", pattern: "whoami", serve: func(c *call) (any, error) {
			return c.svc.Whoami(c.r.Context(), c.p)
		}},
	}
}

// IsAPI reports whether a request path belongs to the API.
func IsAPI(path string) bool {
	return strings.HasPrefix(path, Prefix) || path == strings.TrimSuffix(Prefix, "/")
}
