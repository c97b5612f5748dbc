package publish

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own so
// that several servers (tests) do not collide.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	narBytes  prometheus.Counter
	aborted   *prometheus.CounterVec
	byRequest sync.Map // requestKey -> prometheus.Counter
	// infoCache counts lookups answered from the cache (hit) or the store (miss).
	infoCache *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_publish_requests_total",
			Help: "Requests answered, by kind (narinfo, nar, ...) and status code; code 0 is a response aborted mid-body.",
		}, []string{"kind", "code"}),
		narBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silo_publish_nar_bytes_total",
			Help: "NAR bytes sent to clients, before any Content-Encoding.",
		}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silo_publish_nar_aborted_total",
			Help: "NAR responses aborted mid-stream: the client went away (client) or the path no longer matched its record (store).",
		}, []string{"reason"}),
	}
	m.infoCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "silo_publish_info_cache_total",
		Help: "Path lookups answered from the cache of recent answers (hit) or by the store (miss).",
	}, []string{"result"})
	m.aborted.WithLabelValues("client")
	m.aborted.WithLabelValues("store")
	m.reg.MustRegister(m.requests, m.narBytes, m.aborted, m.infoCache,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) request(kind string, code int) {
	key := requestKey{kind, code}
	c, ok := m.byRequest.Load(key)
	if !ok {
		c, _ = m.byRequest.LoadOrStore(key, m.requests.WithLabelValues(kind, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

// requestKey names one of the requests counters, which are looked up once
// and kept: resolving label values costs more than a narinfo answer.
type requestKey struct {
	kind string
	code int
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
