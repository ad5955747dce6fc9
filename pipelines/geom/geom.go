// Package geom is the geometry the pipelines and the server share: how much two boxes
// overlap, how much of one lies inside another, and how a value is rounded for display.
// Each is written once, here.
package geom

import (
	"image"
	"math"
)

// IoU is the intersection over union of two boxes: 0 when they do not meet, 1 when they are
// the same box.
func IoU(a, b image.Rectangle) float64 {
	in := a.Intersect(b)
	if in.Empty() {
		return 0
	}
	shared := area(in)
	return shared / (area(a) + area(b) - shared)
}

// Inside is the share of a's area that lies inside b: 1 when a is within b, 0 when they do
// not meet or a is empty.
func Inside(a, b image.Rectangle) float64 {
	in := a.Intersect(b)
	if in.Empty() || a.Empty() {
		return 0
	}
	return area(in) / area(a)
}

// Round rounds x to the given number of decimal places, halves away from zero (so -1.25
// becomes -1.3, as 1.25 becomes 1.3), for values shown to people and stored in findings.
func Round(x float64, places int) float64 {
	scale := math.Pow(10, float64(places))
	return math.Round(x*scale) / scale
}

func area(r image.Rectangle) float64 { return float64(r.Dx()) * float64(r.Dy()) }
