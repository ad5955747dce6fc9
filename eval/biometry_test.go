package eval

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/hc18"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
)

// TestHeldApartFetalHeads is the biometry validation: every held-apart image of both shared HC18
// folders (subjects never trained or tuned on: 139 of earlier and 29 of later pregnancy),
// wrapped as calibrated ultrasound DICOM, through AnalyzeInstance with the routes choosing the
// model, each folder reported apart. The earlier folder is held to the model card's figures
// (mean absolute HC error at most 2.0 mm, none over 10 mm without a flag, at most 5% flagged).
// The later folder is only required to be measured whole: issue 24's targets for it (2.5 mm,
// none silently over 10 mm) are not met by the committed model (docs: its model card).
func TestHeldApartFetalHeads(t *testing.T) {
	var images []hc18.Image
	want := map[string]int{"ultrasound-hc18": 139, "ultrasound-hc18-late": 29} // subjects % 5 == 0
	for _, name := range hc18.SharedFolders {
		folder, err := hc18.Read(testenv.Shared(t, name))
		if err != nil {
			t.Fatal(err)
		}
		held := folder.Of(hc18.HeldApart)
		if len(held) != want[name] {
			t.Fatalf("%s: %d held-apart images, want %d", name, len(held), want[name])
		}
		images = append(images, held...)
	}
	r, err := Biometry(context.Background(), BiometryOptions{Entries: models.Builtin(), Resolver: testenv.Resolver(), Images: images})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	r.WriteTable(&table)
	t.Log("\n" + table.String())
	if len(r.Folders) != len(want) {
		t.Fatalf("%d folders reported, want %d", len(r.Folders), len(want))
	}
	for _, f := range r.Folders {
		if f.Count != want[f.Folder] || f.Measured != f.Count {
			t.Errorf("%s: %d of %d images measured (%d held apart): %v", f.Folder, f.Measured, f.Count, want[f.Folder], f.NotMeasured)
		}
		if f.Folder != "ultrasound-hc18" {
			continue
		}
		if f.All.Mean > 2.0 {
			t.Errorf("%s: mean absolute HC error %.2f mm over every image, want at most 2.0", f.Folder, f.All.Mean)
		}
		if f.SilentOver10 != 0 {
			t.Errorf("%s: %d images more than 10 mm off without a low-quality flag", f.Folder, f.SilentOver10)
		}
		// A flag on everything is no answer: at most one measurement in twenty.
		if f.Flagged*20 > f.Measured {
			t.Errorf("%s: %d of %d flagged low quality, want at most 5%%", f.Folder, f.Flagged, f.Measured)
		}
	}
}

// TestBiometrySummaryByFolder checks the sums on made-up results, each folder apart.
func TestBiometrySummaryByFolder(t *testing.T) {
	results := []BiometryResult{
		{Folder: "a", TruthHC: 100, HC: 102, Error: 2},
		{Folder: "a", TruthHC: 200, HC: 212, Error: 12},
		{Folder: "b", TruthHC: 300, HC: 330, Error: 30, LowQuality: true},
		{Folder: "b", TruthHC: 300, Why: "no head"},
	}
	s := summarise(results)
	if s.Count != 4 || s.Measured != 3 || s.Flagged != 1 || s.SilentOver10 != 1 || s.NotMeasured["no head"] != 1 {
		t.Errorf("summary %+v", s)
	}
	if s.FlaggedShare != 0.333 || s.RelativeMean != 0.06 || s.Trusted.N != 2 || s.All.Worst != 30 {
		t.Errorf("flagged share %v, relative %v, trusted %+v, all %+v", s.FlaggedShare, s.RelativeMean, s.Trusted, s.All)
	}
	if b := summarise(results[2:]); b.Measured != 1 || b.SilentOver10 != 0 || b.FlaggedShare != 1 {
		t.Errorf("folder b %+v", b)
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
