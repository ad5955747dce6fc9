package ward

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/vision"
)

// benchFrames are the first frames of the walkers clip (768x576), decoded and as the bridge
// sends them (JPEG at quality 85).
func benchFrames(b *testing.B, n int) ([]vision.Frame, [][]byte) {
	b.Helper()
	frames, jpegs, err := vision.ReadClip(testenv.Shared(b, "video/walkers-vtest.avi"), n, 85)
	if err != nil {
		b.Fatal(err)
	}
	return frames, jpegs
}

// BenchmarkWardPath times the ward path per frame of the walkers clip at 768x576, a new
// pipeline each pass (so its allocations include a stream's start): detection, tracking, pose
// per person, gait and fall rules on decoded frames, and the same from the JPEG the bridge
// sends. Each reports frames/s; ns/op is per pass over the frames. `vigil bench` sets these
// beside the models alone and the Ward stream.
func BenchmarkWardPath(b *testing.B) {
	det, est := models(b)
	frames, jpegs := benchFrames(b, 60)
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	perFrame := func(b *testing.B, n int) {
		b.ReportMetric(float64(n*len(frames))/b.Elapsed().Seconds(), "frames/s")
	}

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
