package server

import (
	"cmp"
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/review"
)

// Metrics are the server's Prometheus collectors, in a registry of their own so that tests
// and several servers in one process do not collide. Labels are method names, codes and model
// names: never anything from a request.
type Metrics struct {
	Registry *prometheus.Registry
	// MaxCameraLabels, set before serving, bounds the cameras with a label of their own
	// (the constant MaxCameraLabels when zero).
	MaxCameraLabels int

	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
	panics   prometheus.Counter

	decisionSeconds *prometheus.HistogramVec

	wardFrames *prometheus.CounterVec
	// cameras are the cameras that have their own label.
	camerasMu   sync.Mutex
	cameras     map[string]bool
	wardStreams prometheus.Gauge
	wardStage   *prometheus.HistogramVec
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
			Help: "Panics recovered, in handlers and in the goroutines they start, and answered with Internal.",
		}),
	}
	m.decisionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigil_review_decision_seconds",
		Help:    "Time from a finding's creation to its decision, by pipeline and outcome.",
		Buckets: prometheus.ExponentialBuckets(10, 2.5, 12), // 10 s to about 6 days
	}, []string{"pipeline", "outcome"})
	m.wardFrames = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_ward_frames_total",
		Help: "Ward frames by camera and outcome: processed, dropped (stale, realtime) or error.",
	}, []string{"camera", "outcome"})
	m.wardStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vigil_ward_streams",
		Help: "Camera streams open now.",
	})
	m.wardStage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vigil_ward_stage_seconds",
		Help:    "Time per frame in each stage of the ward pipeline.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	}, []string{"stage"})
	m.Registry.MustRegister(m.handled, m.duration, m.inflight, m.panics, m.decisionSeconds, m.wardFrames, m.wardStreams, m.wardStage,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MaxCameraLabels is the default bound of the camera label of the ward metrics: the first 64 cameras seen keep
// their own series (counters that outlive a stream, as a scrape after it ends must still see
// its last frames); further cameras are counted under "other", so that a client inventing
// camera IDs cannot grow /metrics without end.
const MaxCameraLabels = 64

// otherCameras is the label of the cameras beyond MaxCameraLabels.
const otherCameras = "other"

// cameraLabel is the label a camera's frames count under.
func (m *Metrics) cameraLabel(camera string) string {
	m.camerasMu.Lock()
	defer m.camerasMu.Unlock()
	if m.cameras == nil {
		m.cameras = map[string]bool{}
	}
	if !m.cameras[camera] && (len(m.cameras) >= cmp.Or(m.MaxCameraLabels, MaxCameraLabels) || camera == otherCameras) {
		return otherCameras
	}
	m.cameras[camera] = true
	return camera
}

// WatchModels exports each model's state from the registry at every scrape.
func (m *Metrics) WatchModels(r *inference.Registry) {
	m.Registry.MustRegister(modelCollector{r})
}

// decided records a decision's delay.
func (m *Metrics) decided(f *review.Finding) {
	if f.Decision == nil {
		return
	}
	m.decisionSeconds.WithLabelValues(string(f.Pipeline), string(f.Decision.Outcome)).
		Observe(f.Decision.DecidedAt.Sub(f.CreatedAt).Seconds())
}

// WatchReview exports the queue's depth per state and acceptance per model version at every
// scrape.
func (m *Metrics) WatchReview(s review.Store) {
	m.Registry.MustRegister(reviewCollector{s})
}

var (
	queueDepthDesc = prometheus.NewDesc("vigil_review_findings",
		"Findings in the review store, by state.", []string{"state"}, nil)
	acceptanceDesc = prometheus.NewDesc("vigil_review_acceptance_ratio",
		"Share of decided findings accepted or amended, by model version.", []string{"model", "version"}, nil)
	decidedDesc = prometheus.NewDesc("vigil_review_decided_findings",
		"Decided findings, by model version and outcome.", []string{"model", "version", "state"}, nil)
)

type reviewCollector struct{ s review.Store }

func (c reviewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- acceptanceDesc
	ch <- decidedDesc
}

func (c reviewCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.s.Counts(ctx, review.Filter{})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
		return
	}
	for _, st := range review.States {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(counts.ByState[st]), string(st))
	}
	for _, m := range counts.Models {
		ch <- prometheus.MustNewConstMetric(acceptanceDesc, prometheus.GaugeValue, m.Rate(), m.Model.Name, m.Model.Version)
		for st, n := range map[review.State]int64{review.StateAccepted: m.Accepted, review.StateAmended: m.Amended, review.StateRejected: m.Rejected} {
			ch <- prometheus.MustNewConstMetric(decidedDesc, prometheus.GaugeValue, float64(n), m.Model.Name, m.Model.Version, string(st))
		}
	}
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
