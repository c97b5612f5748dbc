package cache

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/silo-cache/silo/internal/meta"
)

type metrics struct {
	requests    *prometheus.CounterVec
	respBytes   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	uploadBytes *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	handler     http.Handler

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

func newMetrics(reg *prometheus.Registry, m meta.Store) *metrics {
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
		&usageCollector{meta: m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// usageCollector reports each cache's storage when scraped.
type usageCollector struct{ meta meta.Store }

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

func (u *usageCollector) Collect(ch chan<- prometheus.Metric) {
	// Prometheus gives collectors no context; a timeout bounds the query.
	ctx, cancel := context.WithTimeout(context.TODO(), 10*time.Second)
	defer cancel()
	usage, err := u.meta.Usage(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(usagePaths, err)
		return
	}
	for _, x := range usage {
		ch <- prometheus.MustNewConstMetric(usagePaths, prometheus.GaugeValue, float64(x.Paths), x.Cache)
		ch <- prometheus.MustNewConstMetric(usageNar, prometheus.GaugeValue, float64(x.NarBytes), x.Cache)
		ch <- prometheus.MustNewConstMetric(usageStored, prometheus.GaugeValue, float64(x.StoredBytes), x.Cache)
	}
}
