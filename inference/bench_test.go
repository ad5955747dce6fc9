package inference

import (
	"context"
	"testing"
)

// benchmarkInfer times one model's Run on a real, preprocessed walkers input: the runtime's
// own time plus this package's tensor handling, which is what a pipeline pays per call.
func benchmarkInfer(b *testing.B, name string, workers int) {
	e := openEngine(b, Config{Workers: workers})
	det := loadModel(b, e, "fastestdet")
	frame := walkersFrame(b, walkersTestFrame)
	in := detectorInput(b, frame)
	s := det
	if name != "fastestdet" {
		s = loadModel(b, e, name)
		in = poseInput(b, frame, bestPerson(b, run(b, det, in)))
	}
	inputs := []Tensor{in}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Run(context.Background(), inputs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInferFastestDet(b *testing.B) { benchmarkInfer(b, "fastestdet", 1) }
func BenchmarkInferMoveNet(b *testing.B)    { benchmarkInfer(b, "movenet-lightning", 1) }

// BenchmarkInferFastestDetParallel runs the detector from as many goroutines as GOMAXPROCS
// through the default worker pool, for throughput.
func BenchmarkInferFastestDetParallel(b *testing.B) {
	e := openEngine(b, Config{})
	s := loadModel(b, e, "fastestdet")
	inputs := []Tensor{detectorInput(b, walkersFrame(b, walkersTestFrame))}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Run(context.Background(), inputs); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
