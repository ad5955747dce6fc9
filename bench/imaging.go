package bench

import (
	"bytes"
	"context"
	"fmt"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/triage"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// The imaging input: a held-out phantom loop (seeds from 100000 are never trained on) of the
// size of a typical ultrasound cine, 640x480, 8 frames, 2 lesions.
const (
	phantomSeed   = 100042
	phantomFrames = 8
	chunkBytes    = 1 << 20
)

// measureImaging times the triage model bare, through its session, the triage pipeline in
// process and the whole gRPC call, in interleaved rounds at concurrency 1; then the gRPC path
// at concurrency 4 and 16, with batching and (at 16) without; then batching on and off with
// one worker of every core's threads (measureBatching).
func measureImaging(ctx context.Context, engine *inference.Engine, rg *rig, o Options, r *Report) error {
	o.Progress("imaging: bare session, session, in-process triage, gRPC at concurrency 1")
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: phantomSeed, Rows: 480, Cols: 640, Frames: phantomFrames, Lesions: 2})
	file, err := dicomio.PhantomDICOM(&p)
	if err != nil {
		return err
	}
	sess := rg.Session(triageModel)
	// The model's input as the pipeline prepares it: the first frame, cropped and scaled.
	reader, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
	if err != nil {
		return err
	}
	first, err := reader.Next()
	if err != nil {
		return err
	}
	grey := usframe.Grey(first)
	crop, _, _, _ := usframe.CropRect(reader.Instance(), grey, first.Width, first.Height)
	pix := usframe.Resize(grey, first.Width, crop, 128, 128)
	for i := range pix {
		pix[i] /= 255
	}
	input, err := inference.NewTensor([]int64{1, 1, 128, 128}, pix)
	if err != nil {
		return err
	}
	bare, err := engine.OpenBare(sess.Manifest(), sess.Path(), []inference.Tensor{input})
	if err != nil {
		return err
	}
	defer bare.Close()
	// The demo model's output has a dynamic batch dimension: room for one item.
	output, err := inference.Zeros(models.TensorSpec{Name: "logits", DType: models.Float32, Shape: []int64{1, 2, 128, 128}})
	if err != nil {
		return err
	}
	inputs, outputs := []inference.Tensor{input}, []inference.Tensor{output}

	// The in-process runs time the model calls inside the pipeline, so that its own work can
	// be set against the model's time in the same runs.
	timed := &timedModel{Model: sess}
	inProcess := func() error {
		rd, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
		if err != nil {
			return err
		}
		res, err := triage.Analyze(ctx, timed, rd, triage.Options{})
		if err == nil && res.Frames != phantomFrames {
			err = fmt.Errorf("in-process triage read %d frames, want %d", res.Frames, phantomFrames)
		}
		return err
	}
	frames := o.Instances * phantomFrames
	var bareT, sessT, procT, grpcT []time.Duration
	var bareAll, sessAll, procAll, grpcAll time.Duration
	for range o.Rounds {
		for _, m := range []struct {
			samples *[]time.Duration
			total   *time.Duration
			n       int
			run     func() error
		}{
			{&bareT, &bareAll, frames, bare.Run},
			{&sessT, &sessAll, frames, func() error { return sess.RunInto(ctx, inputs, outputs) }},
			{&procT, &procAll, o.Instances, inProcess},
		} {
			before := timed.total
			if err := m.run(); err != nil { // one untimed run: each path starts warm
				return err
			}
			timed.warm += timed.total - before
			d, all, err := timeEach(m.n, m.run)
			if err != nil {
				return err
			}
			*m.samples, *m.total = append(*m.samples, d...), *m.total+all
		}
		d, all, err := analyzeOverGRPC(ctx, rg, p, triageModel, 1, o.Instances)
		if err != nil {
			return err
		}
		grpcT, grpcAll = append(grpcT, d...), grpcAll+all
	}
	bareRow := row("imaging", "bare ONNX Runtime session, one frame", 1, "frame", bareT, bareAll)
	sessRow := row("imaging", "Vigil session (queue, worker buffers), one frame", 1, "frame", sessT, sessAll)
	procRow := row("imaging", "triage in process: DICOM decode, model, decode, tracking, overlays", 1, "instance", procT, procAll)
	grpcRow := row("imaging", "gRPC AnalyzeInstance on loopback, committed to SQLite", 1, "instance", grpcT, grpcAll)
	r.Rows = append(r.Rows, bareRow, sessRow, procRow, grpcRow)

	o.Progress("imaging: gRPC at concurrency 4 and 16, batching on and off")
	var rows []Row
	runsBefore, itemsBefore := sess.Stats()
	for _, c := range []int{4, 16} {
		n := max(4*o.Instances, 2*c)
		d, all, err := analyzeOverGRPC(ctx, rg, p, triageModel, c, n)
		if err != nil {
			return err
		}
		rows = append(rows, row("imaging", "gRPC AnalyzeInstance, batching up to 8", c, "instance", d, all))
	}
	runs, items := sess.Stats()
	n := max(4*o.Instances, 32)
	d, all, err := analyzeOverGRPC(ctx, rg, p, unbatched, 16, n)
	if err != nil {
		return err
	}
	rows = append(rows, row("imaging", "gRPC AnalyzeInstance, batching off", 16, "instance", d, all))
	r.Rows = append(r.Rows, rows...)
	if runs > runsBefore {
		r.note("imaging: at concurrency 4 and 16 the triage model ran %d batches averaging %.2f frames", runs-runsBefore, float64(items-itemsBefore)/float64(runs-runsBefore))
	}

	model := bareRow.P50 * phantomFrames
	inModel := (timed.total - timed.warm).Seconds() / procAll.Seconds()
	r.ratio("imaging: gRPC path / in-process triage, p50 at concurrency 1", grpcRow.P50/procRow.P50, 1.15, true)
	r.ratio("imaging: triage's own work / its model calls, in the same in-process runs", (1-inModel)/inModel, 0.20, true)
	r.info("imaging: (in-process p50 - 8 bare frames) / 8 bare frames (counts the model running slower inside the pipeline)", (procRow.P50-model)/model)
	r.ratio("imaging: Vigil session / bare session, p50 per frame", sessRow.P50/bareRow.P50, 1.05, true)
	r.ratio("imaging: throughput at concurrency 16 / concurrency 1 (gRPC)", rows[1].Throughput/grpcRow.Throughput, 1, false)
	r.info("imaging: throughput at concurrency 16, batching on / off (gRPC, the engine's workers)", rows[1].Throughput/rows[2].Throughput)
	return measureBatching(ctx, o, r, file)
}

// measureBatching runs the triage pipeline in process from 16 callers on one worker with every
// core as intra-op threads, batching on and off in turn: where batching can pay on a CPU (one
// run's threads have more to share out), and how much.
func measureBatching(ctx context.Context, o Options, r *Report, file []byte) error {
	threads := runtime.NumCPU()
	o.Progress(fmt.Sprintf("imaging: in process at concurrency 16, 1 worker x %d threads, batching on and off", threads))
	engine, err := inference.Open(inference.Config{LibraryPath: o.Engine.LibraryPath, Provider: o.Engine.Provider, Workers: 1, IntraOpThreads: threads})
	if err != nil {
		return err
	}
	defer engine.Close()
	on, err := load(ctx, engine, o, triageModel, nil)
	if err != nil {
		return err
	}
	off, err := load(ctx, engine, o, triageModel, func(m *models.Manifest) { m.Batching = models.Batching{} })
	if err != nil {
		return err
	}
	n := max(4*o.Instances, 32)
	var onT, offT []time.Duration
	var onAll, offAll time.Duration
	runs0, items0 := on.Stats()
	for range o.Rounds {
		for _, m := range []struct {
			s       *inference.Session
			samples *[]time.Duration
			total   *time.Duration
		}{{on, &onT, &onAll}, {off, &offT, &offAll}} {
			d, all, err := concurrently(16, n, func() error {
				rd, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
				if err != nil {
					return err
				}
				_, err = triage.Analyze(ctx, m.s, rd, triage.Options{})
				return err
			})
			if err != nil {
				return err
			}
			*m.samples, *m.total = append(*m.samples, d...), *m.total+all
		}
	}
	what := fmt.Sprintf("triage in process, 1 worker x %d threads", threads)
	onRow := row("imaging", what+", batching up to 8", 16, "instance", onT, onAll)
	offRow := row("imaging", what+", batching off", 16, "instance", offT, offAll)
	r.Rows = append(r.Rows, onRow, offRow)
	if runs, items := on.Stats(); runs > runs0 {
		r.note("imaging: with 1 worker x %d threads the triage model ran batches averaging %.2f frames", threads, float64(items-items0)/float64(runs-runs0))
	}
	r.ratio(fmt.Sprintf("imaging: throughput at concurrency 16, batching on / off (1 worker x %d threads)", threads), onRow.Throughput/offRow.Throughput, 1, false)
	return nil
}

// concurrently calls f n times from c goroutines and gives each call's duration.
func concurrently(c, n int, f func() error) ([]time.Duration, time.Duration, error) {
	durations := make([]time.Duration, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := f(); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				durations[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return durations, time.Since(start), firstErr
}

// timedModel adds up the time spent in the model's Run.
type timedModel struct {
	triage.Model
	total, warm time.Duration
}

func (t *timedModel) Run(ctx context.Context, in []inference.Tensor) ([]inference.Tensor, error) {
	t0 := time.Now()
	out, err := t.Model.Run(ctx, in)
	t.total += time.Since(t0)
	return out, err
}

// analyzeOverGRPC sends n phantom instances, each with a new SOP Instance UID so that none is
// answered from the store, from c clients at once, and gives each call's latency.
func analyzeOverGRPC(ctx context.Context, rg *rig, p dicomio.Phantom, model string, c, n int) ([]time.Duration, time.Duration, error) {
	files := make([][]byte, n+1) // the first warms the connection and the store, untimed
	for i := range files {
		data, err := dicomio.PhantomDICOM(&p)
		if err != nil {
			return nil, 0, err
		}
		files[i] = data
	}
	client := vigilv1.NewImagingClient(rg.Conn)
	callCtx := rg.As(ctx, auth.RolePACSWorker)
	call := func(data []byte) error {
		stream, err := client.AnalyzeInstance(callCtx)
		if err != nil {
			return err
		}
		for off := 0; off < len(data); off += chunkBytes {
			req := &vigilv1.AnalyzeInstanceRequest{Chunk: data[off:min(off+chunkBytes, len(data))]}
			if off == 0 {
				req.Options = &vigilv1.AnalyzeOptions{Model: model}
			}
			if err := stream.Send(req); err != nil {
				return err
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			return err
		}
		if resp.AlreadyAnalyzed || resp.FramesAnalyzed != phantomFrames {
			return fmt.Errorf("gRPC analysis: already analyzed %v, %d frames", resp.AlreadyAnalyzed, resp.FramesAnalyzed)
		}
		return nil
	}
	if err := call(files[0]); err != nil {
		return nil, 0, err
	}
	var taken atomic.Int64
	return concurrently(c, n, func() error { return call(files[taken.Add(1)]) })
}
