package usframe

import (
	"testing"

	"github.com/vigil-health/vigil/dicomio"
)

func TestCropFindsTheSectorWithoutRegions(t *testing.T) {
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 5, Rows: 480, Cols: 640, Frames: 1, Lesions: 1})
	r := findSector(p.Frames[0], 640, 480)
	want := p.Truth.Region
	// The fan starts a little below its apex (the region's top): allow that gap at the top.
	near := func(got, want, slack int) bool { return got >= want-12 && got <= want+slack }
	if !near(r.X0, want[0], 12) || !near(r.X1-1, want[2], 12) || !near(r.Y1-1, want[3], 12) || !near(r.Y0, want[1], 40) {
		t.Errorf("sector box %+v, want about %v (burned-in text left out)", r, want)
	}
}
