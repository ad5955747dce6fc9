package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-health/vigil/inference"
)

// Metrics are the server's Prometheus collectors, in a registry of their own so that tests
// and several servers in one process do not collide. Labels are method names, codes and model
// names: never anything from a request.
type Metrics struct {
	Registry *prometheus.Registry

	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
	panics   prometheus.Counter
}

// NewMetrics creates the collectors, with Go and process metrics beside them.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_grpc_handled_total",
			Help: "RPCs completed, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vigil_grpc_handling_seconds",
			Help:    "Time from the start of an RPC to its end (for streams, the stream's life).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"method"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_grpc_in_flight",
			Help: "RPCs and streams in progress, by method.",
		}, []string{"method"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_grpc_panics_total",
			Help: "Handler panics recovered and answered with Internal.",
		}),
	}
	m.Registry.MustRegister(m.handled, m.duration, m.inflight, m.panics,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchModels exports each model's state from the registry at every scrape.
func (m *Metrics) WatchModels(r *inference.Registry) {
	m.Registry.MustRegister(modelCollector{r})
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

var modelReadyDesc = prometheus.NewDesc("vigil_model_ready",
	"1 when the model is loaded and serving, 0 when it is missing or invalid.",
	[]string{"model", "version", "provider", "state"}, nil)

type modelCollector struct{ r *inference.Registry }

func (c modelCollector) Describe(ch chan<- *prometheus.Desc) { ch <- modelReadyDesc }

func (c modelCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.r.Status() {
		v := 0.0
		if st.State == inference.StateReady {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(modelReadyDesc, prometheus.GaugeValue, v, st.Name, st.Version, st.Provider, string(st.State))
	}
}
