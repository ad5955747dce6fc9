// Package bench measures Vigil beside the bare runtime and beside a peer, in one run: the
// imaging path (bare session, in-process triage, the full gRPC path at several concurrencies),
// the ward path (the models alone, the pipeline in process, the full Ward stream), the same
// models run by Node's onnxruntime-node, and DICOM decoding beside dcmtk. `vigil bench` prints
// its Report.
//
// Paths that are compared are measured in interleaved rounds, so that a machine whose speed
// drifts (a shared cloud host) moves both sides of a ratio alike. Nothing here asserts a
// timing: the report says what was measured and how the ratios stand against their targets.
package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/geom"
)

// Options say what to measure and where the inputs are.
type Options struct {
	Engine   inference.Config
	Entries  []models.Entry
	Resolver *models.Resolver
	// Rounds is how many interleaved rounds each comparison takes.
	Rounds int
	// Instances is how many DICOM instances each imaging path analyzes per round.
	Instances int
	// WardFrames is how many frames of the walkers clip the ward paths take.
	WardFrames int
	// Video is the walkers clip; DICOMDir holds the real ultrasound files.
	Video    string
	DICOMDir string
	// HC18Dir is the shared fetal head folder (ultrasound-hc18).
	HC18Dir string
	// PeerDir is scripts/peer-node, with onnxruntime-node installed.
	PeerDir string
	// Only, when set, names the sections to measure: imaging, biometry, ward, peer, dicom.
	Only []string
	// Progress, when set, is told what is being measured.
	Progress func(string)
}

// Quick are options for a run that only proves every path works: one short round each.
func (o Options) Quick() Options {
	o.Rounds, o.Instances, o.WardFrames = 1, 2, 8
	return o
}

func (o Options) withDefaults() Options {
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Instances <= 0 {
		o.Instances = 8
	}
	if o.WardFrames <= 0 {
		o.WardFrames = 60
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	return o
}

// Report is one run's measurements.
type Report struct {
	Machine Machine `json:"machine"`
	Rows    []Row   `json:"rows"`
	Ratios  []Ratio `json:"ratios"`
	// Notes say what a row leaves out or why a path was not measured.
	Notes []string `json:"notes,omitempty"`
}

// Machine is what the figures were measured on.
type Machine struct {
	CPU            string `json:"cpu"`
	Cores          int    `json:"cores"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	OS             string `json:"os"`
	Go             string `json:"go"`
	Runtime        string `json:"onnxruntime"`
	Provider       string `json:"provider"`
	Workers        int    `json:"workers_per_model"`
	IntraOpThreads int    `json:"intra_op_threads"`
}

// Row is one path's latencies (milliseconds per Unit) and throughput.
type Row struct {
	Section     string  `json:"section"`
	Path        string  `json:"path"`
	Concurrency int     `json:"concurrency,omitempty"`
	Unit        string  `json:"unit"`
	Samples     int     `json:"samples"`
	P50         float64 `json:"p50_ms"`
	P25         float64 `json:"p25_ms"`
	P75         float64 `json:"p75_ms"`
	P99         float64 `json:"p99_ms"`
	// Throughput is Units per second over the whole measurement.
	Throughput float64 `json:"throughput_per_s"`
}

// Ratio compares two rows against a target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

// Run measures every path. A path that cannot run (no node, no dcmtk) is left out with a note;
// a path of Vigil's own that fails is an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	engine, err := inference.Open(o.Engine)
	if err != nil {
		return nil, err
	}
	defer engine.Close()
	cfg := o.Engine
	workers := cfg.Workers
	if workers <= 0 {
		workers = 2
	}
	threads := cfg.IntraOpThreads
	if threads <= 0 {
		threads = max(1, runtime.NumCPU()/workers)
	}
	r := &Report{Machine: Machine{CPU: cpuModel(), Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Runtime: engine.Version(), Provider: engine.Provider(),
		Workers: workers, IntraOpThreads: threads}}

	want := func(section string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, section) }
	if want("imaging") || want("biometry") || want("ward") {
		rg, err := newRig(ctx, engine, o)
		if err != nil {
			return nil, err
		}
		defer rg.close()
		r.Machine.Provider = rg.Session(triageModel).Provider()
		if want("imaging") {
			if err := measureImaging(ctx, engine, rg, o, r); err != nil {
				return nil, fmt.Errorf("imaging: %w", err)
			}
		}
		if want("biometry") {
			if err := measureBiometry(ctx, rg, o, r); err != nil {
				return nil, fmt.Errorf("biometry: %w", err)
			}
		}
		if want("ward") {
			if err := measureWard(ctx, rg, o, r); err != nil {
				return nil, fmt.Errorf("ward: %w", err)
			}
		}
		rg.close()
	}
	if want("peer") {
		if err := measurePeer(ctx, o, r); err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
	}
	if want("dicom") {
		if err := measureDICOM(o, r); err != nil {
			return nil, fmt.Errorf("dicom: %w", err)
		}
	}
	return r, nil
}

// row summarises samples (durations of one Unit each) taken over elapsed.
func row(section, path string, concurrency int, unit string, samples []time.Duration, elapsed time.Duration) Row {
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d) / 1e6
	}
	slices.Sort(ms)
	rw := Row{Section: section, Path: path, Concurrency: concurrency, Unit: unit, Samples: len(ms),
		P50: quantile(ms, 0.5), P25: quantile(ms, 0.25), P75: quantile(ms, 0.75), P99: quantile(ms, 0.99)}
	if elapsed > 0 {
		rw.Throughput = float64(len(samples)) / elapsed.Seconds()
	}
	return rw
}

// quantile of sorted values, by the nearest rank.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ratio adds a ratio with its target: at most (atMost) or at least the limit.
func (r *Report) ratio(name string, value, limit float64, atMost bool) {
	target, met := fmt.Sprintf(">= %.2f", limit), value >= limit
	if atMost {
		target, met = fmt.Sprintf("<= %.2f", limit), value <= limit
	}
	r.Ratios = append(r.Ratios, Ratio{Name: name, Value: geom.Round(value, 3), Target: target, Met: met})
}

// info adds a ratio that has no target: a figure to read, not a bar to clear.
func (r *Report) info(name string, value float64) {
	r.Ratios = append(r.Ratios, Ratio{Name: name, Value: geom.Round(value, 3), Met: true})
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// cpuModel is the CPU's model name from /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// load opens a model of the entries as a session.
func load(ctx context.Context, engine *inference.Engine, o Options, name string, edit func(*models.Manifest)) (*inference.Session, error) {
	for _, e := range o.Entries {
		if e.Name != name {
			continue
		}
		if e.Err != nil {
			return nil, e.Err
		}
		m := *e.Manifest
		if edit != nil {
			edit(&m)
		}
		path, err := o.Resolver.Resolve(ctx, e.Manifest)
		if err != nil {
			return nil, err
		}
		return engine.Load(&m, path)
	}
	return nil, fmt.Errorf("%w: %s", errNoModel, name)
}

var errNoModel = errors.New("no such model")

// timeEach runs f n times and gives each run's duration and the whole.
func timeEach(n int, f func() error) ([]time.Duration, time.Duration, error) {
	out := make([]time.Duration, 0, n)
	start := time.Now()
	for range n {
		t0 := time.Now()
		if err := f(); err != nil {
			return nil, 0, err
		}
		out = append(out, time.Since(t0))
	}
	return out, time.Since(start), nil
}
