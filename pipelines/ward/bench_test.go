package ward

import (
	"context"
	"errors"
	"image"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/vision"
)

// benchFrames are the first frames of the walkers clip (768x576), decoded and as the bridge
// sends them (JPEG at quality 85).
func benchFrames(b *testing.B, n int) ([]vision.Frame, [][]byte) {
	b.Helper()
	v, err := vision.OpenVideo(testenv.Shared(b, "video/walkers-vtest.avi"))
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	var frames []vision.Frame
	var jpegs [][]byte
	for len(frames) < n {
		f, err := v.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		data, err := vision.EncodeJPEG(f, 85)
		if err != nil {
			b.Fatal(err)
		}
		frames, jpegs = append(frames, f), append(jpegs, data)
	}
	return frames, jpegs
}

// BenchmarkWardPath times the ward path per frame of the walkers clip at 768x576, in one run,
// beside the models alone on the same frames and the same people:
//
//   - model-only: the detector on each frame's prepared input, and the pose model once per
//     person the pipeline found on that frame, on prepared crops (preparation untimed), the
//     people spread over the pose model's workers as the pipeline spreads them;
//   - pipeline: detection, tracking, pose per person, gait and fall rules on decoded frames;
//   - pipeline+decode: the same from the JPEG the bridge sends.
//
// Each reports frames/s; ns/op is per pass over the frames.
func BenchmarkWardPath(b *testing.B) {
	det, est := models(b)
	frames, jpegs := benchFrames(b, 60)
	// One untimed pass records each frame's people, for the model-only run.
	p := New(det, est, Config{})
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	boxes := make([][]image.Rectangle, len(frames))
	people := 0
	for i, f := range frames {
		ps, err := p.Process(context.Background(), f, start.Add(time.Duration(i)*time.Second/7), int64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		for _, q := range ps {
			boxes[i] = append(boxes[i], q.Box)
		}
		people += len(ps)
	}
	b.Logf("%d frames, %.1f people per frame", len(frames), float64(people)/float64(len(frames)))
	perFrame := func(b *testing.B, n int) {
		b.ReportMetric(float64(n*len(frames))/b.Elapsed().Seconds(), "frames/s")
	}

	b.Run("model-only", func(b *testing.B) {
		b.ReportAllocs()
		detIn := make([]inference.Tensor, len(frames))
		poseIn := make([][]inference.Tensor, len(frames))
		for i, f := range frames {
			t, err := det.Prepare(f)
			if err != nil {
				b.Fatal(err)
			}
			detIn[i] = t.Clone()
			for _, box := range boxes[i] {
				t, _, err := est.Prepare(f, box)
				if err != nil {
					b.Fatal(err)
				}
				poseIn[i] = append(poseIn[i], t.Clone())
			}
		}
		// The people of a frame go to the pose model's workers side by side, as the pipeline
		// sends them.
		workers := est.Model().(*inference.Session).Workers()
		detOut := outputsOf(b, det.Model().(*inference.Session))
		poseOut := make([][]inference.Tensor, workers)
		for w := range poseOut {
			poseOut[w] = outputsOf(b, est.Model().(*inference.Session))
		}
		n := 0
		for b.Loop() {
			for i := range frames {
				if err := det.Model().RunInto(context.Background(), detIn[i:i+1], detOut); err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := w; k < len(poseIn[i]); k += workers {
							if err := est.Model().RunInto(context.Background(), poseIn[i][k:k+1], poseOut[w]); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				wg.Wait()
			}
			n++
		}
		perFrame(b, n)
	})
	// whole runs the pipeline over the frames, decoding each from its JPEG when asked.
	whole := func(decode bool) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			var pixels vision.Frame // decoded into again and again, as a stream does
			n := 0
			for b.Loop() {
				p := New(det, est, Config{})
				for i, f := range frames {
					if decode {
						if err := vision.DecodeInto(&pixels, jpegs[i]); err != nil {
							b.Fatal(err)
						}
						f = pixels
					}
					if _, err := p.Process(context.Background(), f, start.Add(time.Duration(i)*time.Second/7), int64(i+1)); err != nil {
						b.Fatal(err)
					}
				}
				n++
			}
			perFrame(b, n)
		}
	}
	b.Run("pipeline", whole(false))
	b.Run("pipeline+decode", whole(true))
}

// outputsOf is room for a session's outputs, whose shapes are fixed.
func outputsOf(b *testing.B, s *inference.Session) []inference.Tensor {
	var out []inference.Tensor
	for _, spec := range s.Outputs() {
		n := int64(1)
		for _, d := range spec.Shape {
			n *= d
		}
		t, err := inference.NewTensor(spec.Shape, make([]float32, n))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, t)
	}
	return out
}

// BenchmarkWardFrame is one frame through a warm pipeline (the walkers frames over and over,
// time running on): a stream's steady state. Run it with -benchmem: its allocations per frame
// are what a stream allocates once its buffers have grown.
func BenchmarkWardFrame(b *testing.B) {
	det, est := models(b)
	frames, _ := benchFrames(b, 60)
	p := New(det, est, Config{})
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	i := 0
	process := func() {
		f := frames[i%len(frames)]
		if _, err := p.Process(context.Background(), f, start.Add(time.Duration(i)*time.Second/7), int64(i+1)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	for range 2 * len(frames) { // warm: every buffer grown to the clip's largest frame
		process()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		process()
	}
}
