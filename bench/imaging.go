package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
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
// at concurrency 4 and 16, with batching and (at 16) without.
func measureImaging(ctx context.Context, engine *inference.Engine, rg *rig, o Options, r *Report) error {
	o.Progress("imaging: bare session, session, in-process triage, gRPC at concurrency 1")
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: phantomSeed, Rows: 480, Cols: 640, Frames: phantomFrames, Lesions: 2})
	file, err := dicomio.PhantomDICOM(&p)
	if err != nil {
		return err
	}
	sess := rg.session(triageModel)
	// The model's input as the pipeline prepares it: the first frame, cropped and scaled.
	reader, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
	if err != nil {
		return err
	}
	first, err := reader.Next()
	if err != nil {
		return err
	}
	grey := triage.Grey(first)
	crop, _, _, _ := triage.CropRect(reader.Instance(), grey, first.Width, first.Height)
	pix := triage.Resize(grey, first.Width, crop, 128, 128)
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
	output, err := inference.NewTensor([]int64{1, 2, 128, 128}, make([]float32, 2*128*128))
	if err != nil {
		return err
	}
	inputs, outputs := []inference.Tensor{input}, []inference.Tensor{output}

	inProcess := func() error {
		rd, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
		if err != nil {
			return err
		}
		res, err := triage.Analyze(ctx, sess, rd, nil)
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
			if err := m.run(); err != nil { // one untimed run: each path starts warm
				return err
			}
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
	r.ratio("imaging: gRPC path / in-process triage, p50 at concurrency 1", grpcRow.P50/procRow.P50, 1.15, true)
	r.ratio("imaging: triage's non-model work / model time (in-process p50 - 8 bare frames) / 8 bare frames", (procRow.P50-model)/model, 0.20, true)
	r.ratio("imaging: Vigil session / bare session, p50 per frame", sessRow.P50/bareRow.P50, 1.05, true)
	r.ratio("imaging: throughput at concurrency 16 / concurrency 1 (gRPC)", rows[1].Throughput/grpcRow.Throughput, 1, false)
	r.ratio("imaging: throughput at concurrency 16, batching on / off (gRPC)", rows[1].Throughput/rows[2].Throughput, 1, false)
	return nil
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
	client := vigilv1.NewImagingClient(rg.conn)
	callCtx := rg.as(ctx, auth.RolePACSWorker)
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
				if err := call(files[i+1]); err != nil {
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
