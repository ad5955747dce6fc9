package biometry

import (
	"fmt"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"math"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

const modelW, modelH = 320, 224

// ellipseLogits is what a perfect model gives for an ellipse in an 800 x 540 image seen at
// 320 x 224: a logit that falls through 0 on the ellipse, as steeply as a trained model's.
// The ellipse is in pixels scaled by (1, aspect), as the pipeline fits it.
func ellipseLogits(e vision.Ellipse, aspect float64) []float32 {
	crop := usframe.Rect{X1: 800, Y1: 540}
	sx, sy := float64(crop.Dx())/modelW, float64(crop.Dy())/modelH
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	out := make([]float32, modelW*modelH)
	for y := range modelH {
		for x := range modelW {
			px, py := (float64(x)+0.5)*sx-0.5, ((float64(y)+0.5)*sy-0.5)*aspect
			dx, dy := px-e.CX, py-e.CY
			u, v := dx*cos+dy*sin, -dx*sin+dy*cos
			r := math.Hypot(u/(e.Width/2), v/(e.Height/2))
			out[y*modelW+x] = float32(8 * (1 - r) * (e.Width + e.Height) / 4 / sx) // about 8 per model pixel
		}
	}
	return out
}

func limits() Config {
	return Limits(&models.Manifest{})
}

func TestMeasureRecoversTheEllipse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		e      vision.Ellipse
		mm     [2]float64
		aspect float64
	}{
		{"upright", vision.Ellipse{CX: 400, CY: 270, Width: 300, Height: 240, Angle: 0}, [2]float64{0.1, 0.1}, 1},
		{"tilted", vision.Ellipse{CX: 380, CY: 250, Width: 420, Height: 330, Angle: 35}, [2]float64{0.15, 0.15}, 1},
		{"small", vision.Ellipse{CX: 300, CY: 300, Width: 120, Height: 100, Angle: -60}, [2]float64{0.3, 0.3}, 1},
		// Pixels 1.5 times taller than wide: the head is measured in mm, not in pixels.
		{"anisotropic", vision.Ellipse{CX: 400, CY: 400, Width: 360, Height: 280, Angle: 20}, [2]float64{0.1, 0.15}, 1.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, why := measure(ellipseLogits(tc.e, tc.aspect), modelW, modelH, usframe.Rect{X1: 800, Y1: 540}, tc.mm, limits())
			if h == nil {
				t.Fatalf("no head: %s", why)
			}
			want := ramanujan(tc.e.Width/2*tc.mm[0], tc.e.Height/2*tc.mm[0])
			if math.Abs(h.HC-want) > 0.005*want {
				t.Errorf("HC %.2f mm, want %.2f (within 0.5%%)", h.HC, want)
			}
			if bpd := math.Min(tc.e.Width, tc.e.Height) * tc.mm[0]; math.Abs(h.BPD-bpd) > 0.01*bpd {
				t.Errorf("BPD %.2f mm, want %.2f", h.BPD, bpd)
			}
			if ofd := math.Max(tc.e.Width, tc.e.Height) * tc.mm[0]; math.Abs(h.OFD-ofd) > 0.01*ofd {
				t.Errorf("OFD %.2f mm, want %.2f", h.OFD, ofd)
			}
			if h.Quality.Low() || h.Quality.FitResidual > 0.01 || h.Quality.Coverage < 0.99 {
				t.Errorf("a clean ellipse got quality %+v", h.Quality)
			}
			// The ellipse drawn is in the image's own pixels.
			if cy := tc.e.CY / tc.aspect; math.Abs(h.Ellipse.CY-cy) > 1 || math.Abs(h.Ellipse.CX-tc.e.CX) > 1 {
				t.Errorf("centre %.1f,%.1f, want %.1f,%.1f", h.Ellipse.CX, h.Ellipse.CY, tc.e.CX, cy)
			}
		})
	}
}

func TestMeasureFlagsWhatCannotBeTrusted(t *testing.T) {
	whole := usframe.Rect{X1: 800, Y1: 540}
	mm := [2]float64{0.1, 0.1}

	// Half the head out of the image: the fit extrapolates, so it is flagged.
	cut, _ := measure(ellipseLogits(vision.Ellipse{CX: 760, CY: 270, Width: 400, Height: 320}, 1), modelW, modelH, whole, mm, limits())
	if cut == nil || !cut.Quality.Low() || !strings.Contains(strings.Join(cut.Quality.Reasons, " "), "outline was seen") {
		t.Errorf("a head cut by the image's edge: %+v", cut)
	}

	// Two heads' worth of outline: the largest is measured, and the other is said.
	two := ellipseLogits(vision.Ellipse{CX: 200, CY: 270, Width: 300, Height: 260}, 1)
	other := ellipseLogits(vision.Ellipse{CX: 620, CY: 270, Width: 280, Height: 240}, 1)
	for i := range two {
		two[i] = max(two[i], other[i])
	}
	h, _ := measure(two, modelW, modelH, whole, mm, limits())
	if h == nil || !h.Quality.Low() || !strings.Contains(strings.Join(h.Quality.Reasons, " "), "other areas") {
		t.Errorf("two outlines: %+v", h)
	}

	// An unsure model.
	faint := ellipseLogits(vision.Ellipse{CX: 400, CY: 270, Width: 300, Height: 240}, 1)
	for i := range faint {
		faint[i] = faint[i]/400 - 0.01
	}
	h, _ = measure(faint, modelW, modelH, whole, mm, limits())
	if h == nil || !h.Quality.Low() || !strings.Contains(strings.Join(h.Quality.Reasons, " "), "unsure") {
		t.Errorf("a faint outline: %+v", h)
	}

	// Nothing, and a speck.
	none := make([]float32, modelW*modelH)
	for i := range none {
		none[i] = -5
	}
	if h, why := measure(none, modelW, modelH, whole, mm, limits()); h != nil || why == "" {
		t.Errorf("no outline: %+v %q", h, why)
	}
	none[100*modelW+100], none[100*modelW+101] = 3, 3
	if h, why := measure(none, modelW, modelH, whole, mm, limits()); h != nil || !strings.Contains(why, "too small") {
		t.Errorf("a speck: %+v %q", h, why)
	}
}

func TestUncalibratedHasNoMillimetres(t *testing.T) {
	h, why := measure(ellipseLogits(vision.Ellipse{CX: 400, CY: 270, Width: 300, Height: 240}, 1), modelW, modelH, usframe.Rect{X1: 800, Y1: 540}, [2]float64{}, limits())
	if h == nil {
		t.Fatal(why)
	}
	if h.HC != 0 || h.BPD != 0 || h.OFD != 0 || h.GestationalAge.Weeks != 0 {
		t.Errorf("uncalibrated head has mm values: %+v", h)
	}
	f, notes := Result{Head: h}.Finding(refForTest)
	if len(f.Measurements) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "no calibration") {
		t.Errorf("finding %+v, notes %q", f.Measurements, notes)
	}
}

func TestHadlock1984(t *testing.T) {
	// Hadlock's table: HC 17.7 cm at 20 weeks, 34.6 cm at 40; the cubic gives within a week.
	for _, tc := range []struct{ hc, weeks float64 }{{177, 20}, {346, 40}, {97, 14}} {
		ga := Hadlock1984(tc.hc)
		if math.Abs(ga.Weeks-tc.weeks) > 0.5 || !ga.InRange {
			t.Errorf("HC %.0f mm: %.2f weeks (in range %v), want about %.0f", tc.hc, ga.Weeks, ga.InRange, tc.weeks)
		}
	}
	// First-trimester heads are outside the formula's range: no age is given for them.
	if ga := Hadlock1984(60); ga.InRange {
		t.Errorf("HC 60 mm is in range: %+v", ga)
	}
	// The whole range, up to term: its edges are where the cubic gives 14 and 42 weeks, and
	// the range the finding states holds them.
	lo, hi := HadlockHC(14), HadlockHC(42)
	if math.Abs(hadlockWeeks(lo)-14) > 0.001 || math.Abs(hadlockWeeks(hi)-42) > 0.001 {
		t.Errorf("HC range %.2f-%.2f mm gives %.3f-%.3f weeks", lo, hi, hadlockWeeks(lo), hadlockWeeks(hi))
	}
	stated := fmt.Sprintf("(HC %d-%d mm)", int(math.Floor(lo)), int(math.Ceil(hi)))
	if !strings.Contains(hadlockFormula, stated) {
		t.Errorf("the formula states %q, want %s", hadlockFormula, stated)
	}
	for _, tc := range []struct {
		hc float64
		in bool
	}{{lo - 0.1, false}, {lo + 0.1, true}, {330, true}, {hi - 0.1, true}, {hi + 0.1, false}} {
		if ga := Hadlock1984(tc.hc); ga.InRange != tc.in {
			t.Errorf("HC %.1f mm: %.2f weeks, in range %v, want %v", tc.hc, ga.Weeks, ga.InRange, tc.in)
		}
	}
}

func TestRamanujan(t *testing.T) {
	if got := ramanujan(10, 10); math.Abs(got-2*math.Pi*10) > 1e-9 {
		t.Errorf("circle: %v", got)
	}
	// a = 2b: the perimeter is 9.68844822 b (series value).
	if got := ramanujan(2, 1); math.Abs(got-9.68844822) > 1e-6 {
		t.Errorf("2:1 ellipse: %v", got)
	}
}

var refForTest = review.ModelRef{Name: "fetal-head", Version: "1"}

func TestCalibrationSource(t *testing.T) {
	region := dicomio.Region{SpatialFormat: 1, UnitsX: 3, UnitsY: 3, DeltaX: 0.01, DeltaY: 0.02, X1: 99, Y1: 99}
	for _, tc := range []struct {
		name string
		inst dicomio.Instance
		from string
		mm   [2]float64
	}{
		{"region", dicomio.Instance{Regions: []dicomio.Region{region}, PixelSpacing: [2]float64{0.5, 0.5}}, "ultrasound region", [2]float64{0.1, 0.2}},
		// Pixel Spacing is row spacing (y) then column spacing (x).
		{"pixel spacing", dicomio.Instance{PixelSpacing: [2]float64{0.3, 0.2}}, "pixel spacing", [2]float64{0.2, 0.3}},
		{"a region in other units", dicomio.Instance{Regions: []dicomio.Region{{SpatialFormat: 1, UnitsX: 4, UnitsY: 4, DeltaX: 1, DeltaY: 1}}}, "", [2]float64{}},
		{"nothing", dicomio.Instance{}, "", [2]float64{}},
	} {
		from, mm := calibration(tc.inst)
		if from != tc.from || math.Abs(mm[0]-tc.mm[0]) > 1e-12 || math.Abs(mm[1]-tc.mm[1]) > 1e-12 {
			t.Errorf("%s: %q %v, want %q %v", tc.name, from, mm, tc.from, tc.mm)
		}
	}
}
