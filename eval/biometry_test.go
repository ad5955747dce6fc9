package eval

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/hc18"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
)

// TestHeldApartFetalHeads is the biometry validation: every held-apart HC18 image (subjects
// never trained or tuned on), wrapped as calibrated ultrasound DICOM, through AnalyzeInstance
// with the routes choosing the model. Measured with the committed model: every image measured,
// mean absolute HC error 1.71 mm, none over 10 mm without a low-quality flag.
func TestHeldApartFetalHeads(t *testing.T) {
	folder, err := hc18.Read(testenv.Shared(t, "ultrasound-hc18"))
	if err != nil {
		t.Fatal(err)
	}
	images := folder.Of(hc18.HeldApart)
	if len(images) != 139 {
		t.Fatalf("%d held-apart images, want the 139 of subjects %% 5 == 0", len(images))
	}
	r, err := Biometry(context.Background(), BiometryOptions{Entries: models.Builtin(), Resolver: testenv.Resolver(), Images: images})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	r.WriteTable(&table)
	t.Log("\n" + table.String())
	if r.Measured != r.Count {
		t.Errorf("%d of %d images measured: %v", r.Measured, r.Count, r.NotMeasured)
	}
	if r.All.Mean > 2.0 {
		t.Errorf("mean absolute HC error %.2f mm over every image, want at most 2.0", r.All.Mean)
	}
	if r.SilentOver10 != 0 {
		t.Errorf("%d images more than 10 mm off without a low-quality flag", r.SilentOver10)
	}
	if r.Flagged > r.Count/10 {
		t.Errorf("%d of %d flagged low quality: the flag says little when it is on a tenth", r.Flagged, r.Count)
	}
}

func TestErrorStats(t *testing.T) {
	s := stats([]float64{4, 1, 3, 2, 10})
	if s.N != 5 || s.Mean != 4 || s.Median != 3 || s.P90 != 10 || s.Worst != 10 {
		t.Errorf("stats %+v", s)
	}
	if (stats(nil) != ErrorStats{}) {
		t.Error("no errors, yet figures")
	}
}
