package pacs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/models"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// Worker watches a Source and feeds Vigil. It is safe to stop at any moment: what it has done
// is in its state folder, and a restart goes on from there.
type Worker struct {
	Source  Source
	Imaging vigilv1.ImagingClient
	Review  vigilv1.ReviewClient
	Models  vigilv1.ModelsClient
	// Dir holds the state and the reports made, until the archive has them.
	Dir string
	Log *slog.Logger
	// Poll is how often the archive is asked for new instances (default 2 s).
	Poll time.Duration
	// Metrics, when set, is where the worker counts what it does.
	Metrics *Metrics

	mu     sync.Mutex // guards state between the poll loop and the watch
	state  *State
	routes []models.Route
}

// Metrics are the worker's Prometheus collectors.
type Metrics struct {
	Registry *prometheus.Registry
	seen     *prometheus.CounterVec
	reports  prometheus.Counter
	errors   *prometheus.CounterVec
	pending  prometheus.Gauge
}

// NewMetrics creates the worker's collectors in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(),
		seen: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_pacs_instances_total",
			Help: "Instances the PACS worker saw, by what it did: analysed, skipped (no route takes it), already (sent before), failed (refused, or Internal MaxTries times)."}, []string{"outcome"}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pacs_reports_stored_total", Help: "Structured reports stored back into the archive."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_pacs_errors_total",
			Help: "Failures, by step (archive, analyse, watch, report); each is retried with backoff."}, []string{"step"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_pacs_studies_pending", Help: "Studies sent whose findings are not all decided yet."}),
	}
	m.Registry.MustRegister(m.seen, m.reports, m.errors, m.pending)
	return m
}

func (w *Worker) count(outcome string) {
	if w.Metrics != nil {
		w.Metrics.seen.WithLabelValues(outcome).Inc()
	}
}

// fail records a step's failure in the state and the metrics.
func (w *Worker) fail(step string, err error) {
	w.Log.Warn("pacs worker", slog.String("step", step), slog.String("error", err.Error()))
	if w.Metrics != nil {
		w.Metrics.errors.WithLabelValues(step).Inc()
	}
	w.mu.Lock()
	w.state.Errors++
	w.state.LastError, w.state.LastErrorAt = step+": "+err.Error(), time.Now().UTC()
	w.state.Save(w.Dir)
	w.mu.Unlock()
}

// Run works until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	st, err := LoadState(w.Dir)
	if err != nil {
		return err
	}
	w.state = st
	if w.Poll <= 0 {
		w.Poll = 2 * time.Second
	}
	go w.watch(ctx)
	backoff := time.Second
	for ctx.Err() == nil {
		err := w.cycle(ctx)
		wait := w.Poll
		if err != nil && ctx.Err() == nil {
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// cycle takes the archive's new instances, then stores the reports that are ready.
func (w *Worker) cycle(ctx context.Context) error {
	if err := w.loadRoutes(ctx); err != nil {
		w.fail("models", err)
		return err
	}
	for {
		w.mu.Lock()
		cursor := w.state.Cursor
		w.mu.Unlock()
		insts, next, more, err := w.Source.Changes(ctx, cursor)
		if err != nil {
			w.fail("archive", err)
			return err
		}
		for _, inst := range insts {
			if err := w.instance(ctx, inst); err != nil {
				w.fail("analyse", err)
				return err // the cursor stays: the rest is taken again, and what was sent is skipped
			}
		}
		w.mu.Lock()
		w.state.Cursor = next
		err = w.state.Save(w.Dir)
		w.mu.Unlock()
		if err != nil {
			return err
		}
		if !more {
			break
		}
		if next == cursor {
			// The archive says there is more but did not move on: take it at the next poll,
			// rather than ask again at once, for ever.
			w.Log.Warn("the archive says more instances wait but its cursor did not move", slog.String("cursor", cursor))
			break
		}
		// Even an archive with more to give is asked at most once per PageInterval.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(PageInterval):
		}
	}
	return w.reports(ctx)
}

func (w *Worker) loadRoutes(ctx context.Context) error {
	resp, err := w.Models.ListModels(ctx, &vigilv1.ListModelsRequest{})
	if err != nil {
		return err
	}
	var routes []models.Route
	for _, m := range resp.Models {
		if m.State != vigilv1.ModelState_MODEL_STATE_READY {
			continue
		}
		for _, r := range m.RouteRules {
			routes = append(routes, models.Route{Modality: r.Modality, SOPClass: r.SopClass, BodyPart: r.BodyPart, Description: r.Description})
		}
	}
	w.routes = routes
	return nil
}

// routed says whether some ready model's route takes the instance.
func (w *Worker) routed(inst Instance) bool {
	e := models.Exam{Modality: inst.Modality, SOPClassUID: inst.SOPClassUID, BodyPart: inst.BodyPart,
		StudyDescription: inst.StudyDescription, SeriesDescription: inst.SeriesDescription}
	for i := range w.routes {
		if w.routes[i].Match(e) {
			return true
		}
	}
	return false
}

// instance sends one archived instance to Imaging, once.
func (w *Worker) instance(ctx context.Context, inst Instance) error {
	w.mu.Lock()
	_, sent := w.state.Analysed[inst.SOPInstanceUID]
	w.mu.Unlock()
	switch {
	case sent:
		w.count("already")
		return nil
	case !dicomio.ValidUID(inst.SOPInstanceUID) || !dicomio.ValidUID(inst.StudyInstanceUID):
		// The archive's own listing names the instance: what is not a UID is not used, in a
		// file name or anywhere else.
		return w.giveUp(inst, "the archive lists it with a SOP or Study Instance UID that is not a UID")
	case !w.routed(inst):
		w.count("skipped")
		w.mu.Lock()
		w.state.Skipped++
		w.mu.Unlock()
		return nil
	}
	file, err := w.Source.Retrieve(ctx, inst)
	if err != nil {
		return err
	}
	defer file.Close()
	stream, err := w.Imaging.AnalyzeInstance(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := io.ReadFull(file, buf)
		if n > 0 && stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: buf[:n]}) != nil {
			break // the server answered early: CloseAndRecv has its answer
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: reading %s: %v", ErrArchive, inst.Ref, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if st, ok := status.FromError(err); ok && err != nil {
		switch st.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition:
			// The instance cannot be analysed (the message says why): sending it again would
			// not change that.
			return w.giveUp(inst, st.Code().String()+": "+st.Message())
		case codes.Internal:
			// A fault of the server's on this instance: tried again on the next cycles, then
			// given up on, so that one instance does not stop the rest.
			w.mu.Lock()
			w.state.Tries[inst.SOPInstanceUID]++
			tries := w.state.Tries[inst.SOPInstanceUID]
			w.mu.Unlock()
			if tries >= MaxTries {
				return w.giveUp(inst, fmt.Sprintf("Internal %d times, the last: %s", tries, st.Message()))
			}
		}
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.Analysed[inst.SOPInstanceUID] = inst.StudyInstanceUID
	if len(resp.Findings) > 0 {
		study := w.state.Studies[inst.StudyInstanceUID]
		if study == nil || study.Stored || study.Nothing {
			// A study reported before that gets new findings is reported again.
			study = &Study{Findings: map[string]string{}}
			w.state.Studies[inst.StudyInstanceUID] = study
		}
		for _, f := range resp.Findings {
			study.Findings[f.Id] = stateName(f.State)
		}
	}
	w.count("analysed")
	return w.state.Save(w.Dir)
}

// PageInterval is the least time between two pages asked of the archive.
const PageInterval = 100 * time.Millisecond

// MaxTries is how many Internal answers an instance gets before the worker gives up on it.
const MaxTries = 3

// giveUp records an instance as failed, with why, so that it is not sent again and the
// worker goes on to the next.
func (w *Worker) giveUp(inst Instance, reason string) error {
	w.Log.Warn("instance given up on", slog.String("sop_instance_uid", inst.SOPInstanceUID), slog.String("reason", reason))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.Analysed[inst.SOPInstanceUID] = inst.StudyInstanceUID
	w.state.Failed[inst.SOPInstanceUID] = reason
	delete(w.state.Tries, inst.SOPInstanceUID)
	w.count("failed")
	return w.state.Save(w.Dir)
}

func stateName(s vigilv1.FindingState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "FINDING_STATE_"))
}

// watch follows the review of the findings this worker sent, and reconnects when the stream
// breaks, from the last change seen.
func (w *Worker) watch(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		w.mu.Lock()
		after := w.state.WatchAfter
		if after == 0 && len(w.state.Studies) > 0 {
			// Findings were sent but no change seen yet (a crash before the first event, or a
			// watch that never connected): replay everything, rather than start from now and
			// miss a decision made meanwhile. A PACS worker's watch carries only its own.
			after = 1
		}
		w.mu.Unlock()
		stream, err := w.Review.Watch(ctx, &vigilv1.WatchRequest{AfterSequence: after})
		for err == nil {
			var ev *vigilv1.WatchEvent
			if ev, err = stream.Recv(); err != nil {
				break
			}
			backoff = time.Second
			w.mu.Lock()
			w.state.WatchAfter = ev.Sequence
			for _, study := range w.state.Studies {
				if _, ok := study.Findings[ev.Finding.Id]; ok {
					study.Findings[ev.Finding.Id] = stateName(ev.Finding.State)
				}
			}
			w.state.Save(w.Dir)
			w.mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		w.fail("watch", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// reports stores the report of every study whose findings are all decided, once. The report
// is kept in the state folder before it is sent, and sent again as it is after a failure: the
// archive sees the same SOP Instance UID, and keeps one.
func (w *Worker) reports(ctx context.Context) error {
	w.mu.Lock()
	var ready []string
	pending := 0
	for uid, study := range w.state.Studies {
		switch {
		case study.Stored || study.Nothing:
		case study.Decided():
			ready = append(ready, uid)
		default:
			pending++
		}
	}
	w.mu.Unlock()
	for _, uid := range ready {
		if err := w.report(ctx, uid); err != nil {
			pending++
			w.fail("report", err)
			return err
		}
	}
	if w.Metrics != nil {
		w.Metrics.pending.Set(float64(pending))
	}
	return nil
}

// reportPath is where a study's report waits for the archive: named by a hash of the study's
// UID, never by the UID itself, which came from the archive.
func (w *Worker) reportPath(studyUID string) string {
	sum := sha256.Sum256([]byte(studyUID))
	return filepath.Join(w.Dir, "sr-"+hex.EncodeToString(sum[:16])+".dcm")
}

func (w *Worker) report(ctx context.Context, studyUID string) error {
	path := w.reportPath(studyUID)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		resp, err := w.Review.ExportReport(ctx, &vigilv1.ExportReportRequest{StudyInstanceUid: studyUID})
		if status.Code(err) == codes.FailedPrecondition {
			// Every finding was rejected: there is nothing to report.
			w.mu.Lock()
			w.state.Studies[studyUID].Nothing = true
			err := w.state.Save(w.Dir)
			w.mu.Unlock()
			return err
		}
		if err != nil {
			return err
		}
		data = resp.Report
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
		w.mu.Lock()
		w.state.Studies[studyUID].Report = resp.SopInstanceUid
		w.state.Save(w.Dir)
		w.mu.Unlock()
	} else if err != nil {
		return err
	}
	if err := w.Source.Store(ctx, data); err != nil {
		return err
	}
	w.mu.Lock()
	w.state.Studies[studyUID].Stored = true
	err = w.state.Save(w.Dir)
	w.mu.Unlock()
	if err == nil {
		os.Remove(path)
		if w.Metrics != nil {
			w.Metrics.reports.Inc()
		}
		w.Log.Info("report stored", slog.String("study_instance_uid", studyUID))
	}
	return err
}
