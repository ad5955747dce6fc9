package triage

import (
	"bytes"
	"context"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"testing"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
)

// BenchmarkTriage times the whole pipeline per frame (DICOM decode, crop, preprocessing, the
// model, decoding, tracking; overlays once per finding) beside the bare model run on the same
// prepared input, in one run. ns/op is per frame in both.
func BenchmarkTriage(b *testing.B) {
	m := demoModel(b)
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 4242, Rows: 480, Cols: 640, Frames: 8, Lesions: 2})
	data, err := dicomio.PhantomDICOM(&p)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("pipeline", func(b *testing.B) {
		b.ReportAllocs()
		frames := 0
		for b.Loop() {
			r, err := dicomio.Open(bytes.NewReader(data), dicomio.Options{})
			if err != nil {
				b.Fatal(err)
			}
			res, err := Analyze(context.Background(), m, r, Options{})
			if err != nil {
				b.Fatal(err)
			}
			frames += res.Frames
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
	})
	b.Run("model-only", func(b *testing.B) {
		b.ReportAllocs()
		pix := usframe.Resize(p.Frames[0], 640, usframe.Rect{X1: 640, Y1: 480}, 128, 128)
		for i := range pix {
			pix[i] /= 255
		}
		in, err := inference.NewTensor([]int64{1, 1, 128, 128}, pix)
		if err != nil {
			b.Fatal(err)
		}
		frames := 0
		for b.Loop() {
			if _, err := m.Run(context.Background(), []inference.Tensor{in}); err != nil {
				b.Fatal(err)
			}
			frames++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
	})
}
