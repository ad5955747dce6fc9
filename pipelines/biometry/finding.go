package biometry

import (
	"fmt"
	"math"

	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/review"
)

// Label is the finding's label.
const Label = "fetal head"

// Measurement names; the SR export codes them with LOINC (DICOM CID 12005).
const (
	NameHC  = "HC"
	NameBPD = "BPD"
	NameOFD = "OFD"
	NameGA  = "GA"
)

// Finding is the head as a finding for the review queue: its box, the ellipse's outline,
// HC, BPD, OFD and gestational age with their quality, and in evidence how it was measured
// and what was not. notes are the same "not measured" reasons, for the analysis. It returns
// nil when there is no head (notes then say why).
func (r Result) Finding(ref review.ModelRef) (f *review.Finding, notes []string) {
	if r.Head == nil {
		return nil, []string{"no fetal head measured: " + r.NoHead}
	}
	h := r.Head
	q := h.Quality
	quality := fmt.Sprintf("model %.2f, fit residual %.1f%%, skull outline seen %.0f%%", q.MaskScore, 100*q.FitResidual, 100*q.Coverage)
	if q.FlipSpread > 0 {
		quality += fmt.Sprintf(", mirrored view differs %.1f%%", 100*q.FlipSpread)
	}
	f = &review.Finding{
		Pipeline: review.PipelineTriage, Label: Label, Score: q.MaskScore, Priority: 1,
		Box:        &review.Box{X: float64(h.Box.Min.X), Y: float64(h.Box.Min.Y), Width: float64(h.Box.Dx()), Height: float64(h.Box.Dy())},
		Outline:    outline(h, 48),
		FirstFrame: h.Frame, LastFrame: h.Frame, BestFrame: h.Frame,
		Model: ref,
	}
	if q.Low() {
		// A measurement to correct comes before one to confirm.
		f.Priority = 2
		for _, why := range q.Reasons {
			f.Evidence = append(f.Evidence, "low quality: "+why)
		}
	}
	f.Evidence = append(f.Evidence, "ellipse fitted to the skull outline the model drew; "+quality)
	if r.Calibration == "" {
		why := "not measured in mm: the image carries no calibration (no ultrasound region in cm, no Pixel Spacing)"
		f.Evidence = append(f.Evidence, why)
		return f, []string{why}
	}
	f.Evidence = append(f.Evidence, fmt.Sprintf("calibration from the %s: %.4f x %.4f mm per pixel", r.Calibration, r.MMPerPixel[0], r.MMPerPixel[1]),
		"HC is the fitted ellipse's perimeter (Ramanujan); BPD and OFD are its short and long axes, outer edge to outer edge")
	m := func(name string, v float64, unit string) review.Measurement {
		return review.Measurement{Name: name, Value: geom.Round(v, 1), Unit: unit, LowQuality: q.Low(), Quality: quality}
	}
	f.Measurements = []review.Measurement{m(NameHC, h.HC, "mm"), m(NameBPD, h.BPD, "mm"), m(NameOFD, h.OFD, "mm")}
	ga := h.GestationalAge
	if ga.InRange {
		f.Measurements = append(f.Measurements, m(NameGA, ga.Weeks, "wk"))
		f.Evidence = append(f.Evidence, "gestational age from HC by "+ga.Formula)
	} else {
		why := fmt.Sprintf("no gestational age: HC %.1f mm gives %.1f weeks, outside the range of %s", h.HC, ga.Weeks, ga.Formula)
		f.Evidence = append(f.Evidence, why)
		notes = append(notes, why)
	}
	return f, notes
}

// outline is the ellipse as n points in the image's pixels, for the page to draw.
func outline(h *Head, n int) []review.Point {
	e := h.Ellipse
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	pts := make([]review.Point, n)
	for i := range pts {
		t := 2 * math.Pi * float64(i) / float64(n)
		u, v := e.Width/2*math.Cos(t), e.Height/2*math.Sin(t)
		pts[i] = review.Point{X: geom.Round(e.CX+u*cos-v*sin, 1), Y: geom.Round(e.CY+u*sin+v*cos, 1)}
	}
	return pts
}
