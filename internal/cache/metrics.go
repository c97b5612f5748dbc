package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/meta"
)

type metrics struct {
	requests    *prometheus.CounterVec
	respBytes   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	uploadBytes *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	reg         *prometheus.Registry
	handler     http.Handler // everything, for a metrics address of its own

	// The children of requests, respBytes and duration that requests
	// use, resolved once rather than by label lookups on every request.
	kinds    map[string]kindMetrics // read-only after newMetrics
	counters sync.Map               // requestKey -> prometheus.Counter
}

type kindMetrics struct {
	bytes    prometheus.Counter
	duration prometheus.Observer
}

type requestKey struct {
	kind, method string
	code         int
}

// requestKinds are the kinds of object route reports.
var requestKinds = []string{"healthz", "metrics", "root", "cache-info", "narinfo", "ls", "nar", "log", "missing", "other"}

// methodLabel is a request method as the metrics label it: methods the
// server does not serve are all "other", so that clients cannot add
// label values at will.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete:
		return m
	}
	return "other"
}

func newMetrics(reg *prometheus.Registry, m meta.Store, usageInterval time.Duration, log *slog.Logger) *metrics {
	mt := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_http_requests_total", Help: "HTTP requests by kind of object, method and status.",
		}, []string{"kind", "method", "code"}),
		respBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_http_response_bytes_total", Help: "Response body bytes sent, by kind of object.",
		}, []string{"kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "silo_http_request_duration_seconds", Help: "Time to serve a request, by kind of object.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
		}, []string{"kind"}),
		uploadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_upload_bytes_total", Help: "Bytes of NAR uploads received, as sent (file) and uncompressed (nar).",
		}, []string{"form"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_upload_rejected_total", Help: "Uploads that failed verification, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(mt.requests, mt.respBytes, mt.duration, mt.uploadBytes, mt.rejected,
		&usageCollector{meta: m, interval: usageInterval, log: log}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mt.reg = reg
	mt.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mt.kinds = map[string]kindMetrics{}
	for _, k := range requestKinds {
		mt.kinds[k] = kindMetrics{mt.respBytes.WithLabelValues(k), mt.duration.WithLabelValues(k)}
	}
	return mt
}

func (m *metrics) observe(kind, method string, status int, bytes int64, d time.Duration) {
	method = methodLabel(method)
	key := requestKey{kind, method, status}
	c, ok := m.counters.Load(key)
	if !ok {
		c, _ = m.counters.LoadOrStore(key, m.requests.WithLabelValues(kind, method, strconv.Itoa(status)))
	}
	c.(prometheus.Counter).Inc()
	km, ok := m.kinds[kind]
	if !ok {
		km = kindMetrics{m.respBytes.WithLabelValues(kind), m.duration.WithLabelValues(kind)}
	}
	km.bytes.Add(float64(bytes))
	km.duration.Observe(d.Seconds())
}

func (m *metrics) reject(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// usageCollector reports each cache's storage when scraped, from a sum
// computed at most once per interval in the background: a scrape costs
// no query over the paths, however often it comes.
type usageCollector struct {
	meta     meta.Store
	interval time.Duration
	log      *slog.Logger

	mu         sync.Mutex
	usage      []meta.Usage
	err        error
	computed   time.Time
	refreshing bool
	first      chan struct{} // closed when the first sum is done
}

var (
	usagePaths  = prometheus.NewDesc("silo_cache_paths", "Store paths a cache serves.", []string{"cache"}, nil)
	usageNar    = prometheus.NewDesc("silo_cache_nar_bytes", "Uncompressed NAR bytes of a cache's paths.", []string{"cache"}, nil)
	usageStored = prometheus.NewDesc("silo_cache_stored_bytes", "Stored bytes of the distinct NAR files a cache's paths use (shared files count in each cache).", []string{"cache"}, nil)
)

func (u *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usagePaths
	ch <- usageNar
	ch <- usageStored
}

// current returns the latest sums, starting a new one if they are older
// than the interval. Only the very first scrape waits (a little) for one.
func (u *usageCollector) current() ([]meta.Usage, error) {
	u.mu.Lock()
	if u.first == nil {
		u.first = make(chan struct{})
	}
	first := u.first
	if !u.refreshing && time.Since(u.computed) >= u.interval {
		u.refreshing = true
		go u.refresh()
	}
	u.mu.Unlock()
	select {
	case <-first:
	case <-time.After(2 * time.Second):
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.usage, u.err
}

func (u *usageCollector) refresh() {
	// Prometheus gives collectors no context; a timeout bounds the query.
	ctx, cancel := context.WithTimeout(context.TODO(), time.Minute)
	defer cancel()
	usage, err := u.meta.Usage(ctx)
	if err != nil {
		u.log.Warn("metrics: summing cache usage failed", "err", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil || u.usage == nil {
		u.usage, u.err = usage, err
	}
	u.computed, u.refreshing = time.Now(), false
	select {
	case <-u.first:
	default:
		close(u.first)
	}
}

func (u *usageCollector) Collect(ch chan<- prometheus.Metric) {
	usage, err := u.current()
	if err != nil && usage == nil {
		ch <- prometheus.NewInvalidMetric(usagePaths, err)
		return
	}
	for _, x := range usage {
		ch <- prometheus.MustNewConstMetric(usagePaths, prometheus.GaugeValue, float64(x.Paths), x.Cache)
		ch <- prometheus.MustNewConstMetric(usageNar, prometheus.GaugeValue, float64(x.NarBytes), x.Cache)
		ch <- prometheus.MustNewConstMetric(usageStored, prometheus.GaugeValue, float64(x.StoredBytes), x.Cache)
	}
}

// MetricsHandler serves every metric, of every cache, to anyone: for a
// listen address of its own (silo serve --metrics-listen), reachable only
// by the operators' scrapers.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.handler }

// serveMetrics answers /metrics on the cache address: only to an admin
// token, and naming only the caches it administers.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errorf(http.StatusMethodNotAllowed, "/metrics answers GET")
	}
	text, presented := auth.FromRequest(r)
	if !presented {
		return errorf(http.StatusUnauthorized, "/metrics needs an admin token (Authorization: Bearer; or serve metrics on an address of their own with --metrics-listen)")
	}
	gen, err := s.view.sync(r.Context())
	if err != nil {
		return internal("read metadata version", err)
	}
	infoOf(r).gen = gen
	id, err := auth.ID(text)
	if err != nil {
		return &httpError{status: http.StatusUnauthorized, msg: "the credentials presented are not a silo token (" + err.Error() + ")"}
	}
	rec, err := s.view.token(r.Context(), gen, id)
	if errors.Is(err, meta.ErrNotFound) {
		auth.Check(meta.Token{Hash: make([]byte, 32)}, text, s.now())
		return &httpError{status: http.StatusUnauthorized, msg: fmt.Sprintf(msgRejected, id)}
	}
	if err != nil {
		return internal("look up token", err)
	}
	if err := auth.Check(rec, text, s.now()); err != nil {
		return &httpError{status: http.StatusUnauthorized, msg: fmt.Sprintf(msgRejected, id), err: err}
	}
	setLogToken(r, id)
	if rec.Perms&meta.PermAdmin == 0 {
		return errorf(http.StatusForbidden, "token %s may not read /metrics: that takes an admin token", id)
	}
	families, err := s.metrics.reg.Gather()
	if err != nil && len(families) == 0 {
		return internal("gather metrics", err)
	}
	format := expfmt.Negotiate(r.Header)
	w.Header().Set("Content-Type", string(format))
	w.Header().Set("Cache-Control", "no-store")
	enc := expfmt.NewEncoder(w, format)
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "silo_cache_") {
			kept := f.Metric[:0]
			for _, m := range f.Metric {
				if auth.Allows(rec, labelValue(m, "cache"), meta.PermAdmin) {
					kept = append(kept, m)
				}
			}
			if len(kept) == 0 {
				continue
			}
			f.Metric = kept
		}
		if err := enc.Encode(f); err != nil {
			return nil // the client went away
		}
	}
	return nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
