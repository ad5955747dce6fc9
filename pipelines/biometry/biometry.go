// Package biometry measures the fetal head on ultrasound. A segmentation model outlines the
// skull; an ellipse is fitted to the outline (OpenCV's fitEllipse); the head circumference
// (HC), biparietal diameter (BPD) and occipitofrontal diameter (OFD) follow in millimetres
// from the image's calibration, and a gestational age from HC. Every measurement carries how
// far it can be trusted, and a measurement that cannot be is flagged or left out: a wrong
// number said with confidence is the failure this package exists to avoid.
package biometry

import (
	"context"
	"errors"
	"fmt"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"image"
	"image/color"
	"io"
	"math"
	"slices"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/vision"
)

var (
	// ErrNotUltrasound means the instance is not an ultrasound image.
	ErrNotUltrasound = errors.New("biometry: not an ultrasound instance")
	// ErrUnsupportedModel means the model is not a one-channel segmentation model on grey input.
	ErrUnsupportedModel = errors.New("biometry: unsupported model")
)

// Model is what biometry needs of a loaded model, the same as triage; *inference.Session is one.
type Model = usframe.Model

// Quality says how far a head's measurements can be trusted.
type Quality struct {
	// MaskScore is the model's mean probability over the head it outlined (0..1).
	MaskScore float64
	// FitResidual is the root mean square distance of the outline from the fitted ellipse,
	// as a share of the ellipse's size (0.01 is 1%).
	FitResidual float64
	// Coverage is the share of the ellipse's circumference along which the outline was seen
	// (0..1); a head cut by the edge of the image, or half found, has less.
	Coverage float64
	// FlipSpread is how much HC differs between the image and its mirror image, measured
	// apart, as a share of HC (with flip_average; 0 otherwise).
	FlipSpread float64
	// Reasons say why the measurements are of low quality; empty when they are not.
	Reasons []string
}

// Low says whether the measurements must not be taken without a look.
func (q Quality) Low() bool { return len(q.Reasons) > 0 }

// Head is the fetal head found on one frame.
type Head struct {
	Frame int // 1-based
	// Box bounds the ellipse, clipped to the image; Ellipse is the fit, in the image's pixels.
	Box     image.Rectangle
	Ellipse vision.Ellipse
	Quality Quality
	// HC, BPD and OFD are in mm, set only when the image is calibrated. BPD and OFD are the
	// fitted ellipse's short and long axes, outer edge to outer edge (the outline a
	// sonographer draws around the skull), so BPD reads a little above an outer-to-inner BPD.
	HC, BPD, OFD float64
	// GestationalAge is set when HC is, and is in the formula's range.
	GestationalAge GestationalAge
	// Overlay is the frame with the ellipse and its box drawn on it, as PNG.
	Overlay []byte

	perimeter float64 // the ellipse's, in square pixels (those of x)
}

// Result is an instance's measurement.
type Result struct {
	Instance dicomio.Instance
	Frames   int
	// Calibration is where the mm per pixel came from ("ultrasound region" or "pixel
	// spacing"); empty when the image carries none, and then no value is in mm.
	Calibration string
	MMPerPixel  [2]float64 // x, y
	// Head is the best head of the instance; nil when no frame shows one, and NoHead says why.
	Head   *Head
	NoHead string
}

// A fetal head's circumference from the end of the first trimester (about 11 weeks, when HC is
// first measured) to beyond term: outside this, the ellipse is not a fetal head.
const minHC, maxHC = 35.0, 400.0

// Config holds the quality limits; the manifest's thresholds set them (see Limits).
type Config struct {
	// MinMaskScore, MaxFitResidual and MinCoverage flag a head as low quality.
	MinMaskScore, MaxFitResidual, MinCoverage float64
	// MinAxisRatio flags an ellipse flatter than any fetal head: short over long axis.
	MinAxisRatio float64
	// MinAreaShare is the smallest head, as a share of the image, that is measured at all.
	MinAreaShare float64
	// FlipAverage also runs the image mirrored left to right and averages the two outlines
	// (threshold flip_average: 1): twice the model's time for a steadier outline.
	FlipAverage bool
	// MaxFlipSpread flags a head whose HC differs by more than this share between the image
	// and its mirror image, measured apart (with FlipAverage).
	MaxFlipSpread float64
}

// Limits reads the quality limits from the manifest's thresholds, with defaults for those it
// leaves out.
func Limits(man *models.Manifest) Config {
	get := func(name string, def float64) float64 {
		if v, ok := man.Thresholds[name]; ok {
			return v
		}
		return def
	}
	return Config{
		MinMaskScore:   get("min_mask_score", 0.8),
		MaxFitResidual: get("max_fit_residual", 0.03),
		MinCoverage:    get("min_coverage", 0.7),
		MinAxisRatio:   get("min_axis_ratio", 0.55),
		MinAreaShare:   get("min_area_share", 0.005),
		FlipAverage:    get("flip_average", 0) == 1,
		MaxFlipSpread:  get("max_flip_spread", 0.03),
	}
}

// Analyze measures the fetal head on every frame of an opened instance and keeps the best.
func Analyze(ctx context.Context, m Model, r *dicomio.Reader) (Result, error) {
	inst := r.Instance()
	if inst.Modality != "US" {
		modality := inst.Modality
		if modality == "" {
			modality = "none"
		}
		return Result{}, fmt.Errorf("%w: modality is %s, not US", ErrNotUltrasound, modality)
	}
	man := m.Manifest()
	if len(man.Inputs) != 1 || len(man.Outputs) != 1 || man.Decoder.Kind != models.DecoderSegmentation || len(man.Labels) != 1 {
		return Result{}, fmt.Errorf("%w: %s must be a segmentation model with one input, one output and one label", ErrUnsupportedModel, man.Name)
	}
	in := man.Inputs[0]
	ih, iw := in.Size()
	if ih <= 0 || iw <= 0 || in.Layout != "NCHW" || in.Color != "GRAY" || in.DType != models.Float32 {
		return Result{}, fmt.Errorf("%w: %s wants %s %s %s input; biometry feeds float32 NCHW grey", ErrUnsupportedModel, man.Name, in.DType, in.Layout, in.Color)
	}
	cfg := Limits(man)
	res := Result{Instance: inst}
	var crop usframe.Rect
	var best *Head
	var bestPix []byte
	var bestSamples int
	reasonsSeen := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Result{}, err
		}
		grey := usframe.Grey(f)
		if res.Frames == 0 {
			crop = cropOf(inst, f.Width, f.Height)
			res.Calibration, res.MMPerPixel = calibration(inst)
		}
		res.Frames++
		pix := usframe.Resize(grey, f.Width, crop, int(iw), int(ih))
		mean := 0.0
		if len(in.Mean) > 0 {
			mean = in.Mean[0]
		}
		for i := range pix {
			pix[i] = float32((float64(pix[i]) - mean) * in.Scale)
		}
		logits, err := segment(ctx, m, pix, int(iw), int(ih))
		if err != nil {
			return Result{}, err
		}
		var spread float64 // how far the two views' perimeters differ, as a share
		if cfg.FlipAverage {
			// The image mirrored left to right, its logits mirrored back and averaged in. The
			// two views measured apart say how steady the outline is.
			flipped := make([]float32, len(pix))
			mirror(flipped, pix, int(iw))
			second, err := segment(ctx, m, flipped, int(iw), int(ih))
			if err != nil {
				return Result{}, err
			}
			mirror(flipped, second, int(iw))
			a, _ := measure(logits, int(iw), int(ih), crop, res.MMPerPixel, cfg)
			b, _ := measure(flipped, int(iw), int(ih), crop, res.MMPerPixel, cfg)
			for i := range logits {
				logits[i] = (logits[i] + flipped[i]) / 2
			}
			if a == nil || b == nil {
				spread = 1
			} else {
				spread = math.Abs(a.perimeter-b.perimeter) / ((a.perimeter + b.perimeter) / 2)
			}
		}
		h, why := measure(logits, int(iw), int(ih), crop, res.MMPerPixel, cfg)
		if h == nil {
			reasonsSeen[why] = true
			continue
		}
		if cfg.FlipAverage {
			h.Quality.FlipSpread = spread
			if spread > cfg.MaxFlipSpread {
				h.Quality.Reasons = append(h.Quality.Reasons, fmt.Sprintf("the outline changes when the image is mirrored (HC differs by %.1f%%, over %.1f%%)", 100*spread, 100*cfg.MaxFlipSpread))
			}
		}
		h.Frame = f.Number
		if best == nil || better(h, best) {
			best = h
			if f.Pix16 != nil {
				bestPix, bestSamples = grey, 1
			} else {
				bestPix, bestSamples = f.Pix, f.Samples
			}
		}
	}
	if best == nil {
		res.NoHead = "no fetal head was found"
		for why := range reasonsSeen {
			res.NoHead = why // one frame's reason stands for all; a loop rarely differs
			break
		}
		return res, nil
	}
	best.Box = boundingBox(best.Ellipse).Intersect(image.Rect(0, 0, inst.Columns, inst.Rows))
	if err := best.draw(bestPix, inst.Columns, inst.Rows, bestSamples); err != nil {
		return Result{}, err
	}
	res.Head = best
	return res, nil
}

// segment runs the model on one prepared frame and returns a copy of its logits.
func segment(ctx context.Context, m Model, pix []float32, w, h int) ([]float32, error) {
	input, err := inference.NewTensor([]int64{1, 1, int64(h), int64(w)}, pix)
	if err != nil {
		return nil, err
	}
	out, err := m.Run(ctx, []inference.Tensor{input})
	if err != nil {
		return nil, err
	}
	logits, err := inference.Values[float32](out[0])
	if err != nil {
		return nil, err
	}
	if len(logits) != w*h {
		return nil, fmt.Errorf("%w: %s gives %d values for %d x %d", ErrUnsupportedModel, m.Manifest().Name, len(logits), w, h)
	}
	return slices.Clone(logits), nil
}

// mirror writes src mirrored left to right into dst, rows of width w.
func mirror(dst, src []float32, w int) {
	for y := 0; y < len(src)/w; y++ {
		row, out := src[y*w:(y+1)*w], dst[y*w:(y+1)*w]
		for x := range row {
			out[w-1-x] = row[x]
		}
	}
}

// better prefers a head of good quality, then the model's surer outline.
func better(a, b *Head) bool {
	if a.Quality.Low() != b.Quality.Low() {
		return !a.Quality.Low()
	}
	return a.Quality.MaskScore > b.Quality.MaskScore
}

// cropOf is the part of the image the model sees: the first 2D ultrasound region, or the
// whole image (as the model was trained).
func cropOf(inst dicomio.Instance, width, height int) usframe.Rect {
	for _, reg := range inst.Regions {
		r := usframe.Rect{X0: max(reg.X0, 0), Y0: max(reg.Y0, 0), X1: min(reg.X1+1, width), Y1: min(reg.Y1+1, height)}
		if reg.SpatialFormat == 1 && r.Dx() >= 16 && r.Dy() >= 16 {
			return r
		}
	}
	return usframe.Rect{X1: width, Y1: height}
}

// calibration is the image's mm per pixel (x, y): the first 2D ultrasound region in cm, or
// else Pixel Spacing.
func calibration(inst dicomio.Instance) (string, [2]float64) {
	for _, reg := range inst.Regions {
		if reg.SpatialFormat != 1 {
			continue
		}
		if x, y, ok := reg.MillimetresPerPixel(); ok {
			return "ultrasound region", [2]float64{x, y}
		}
	}
	if s := inst.PixelSpacing; s[0] > 0 && s[1] > 0 {
		return "pixel spacing", [2]float64{s[1], s[0]}
	}
	return "", [2]float64{}
}

// measure finds the head on one frame's logits: the largest area the model calls head, the
// points along its edge where the logit crosses 0 (between a pixel inside and its neighbour
// outside, linearly, which keeps a fraction of a model pixel), those points in the image's
// pixels, and the ellipse through them. It returns why when there is no head to measure.
func measure(logits []float32, w, h int, crop usframe.Rect, mm [2]float64, cfg Config) (*Head, string) {
	inside, area, total, sum := largestComponent(logits, w, h)
	if area == 0 {
		return nil, "the model outlined no fetal head"
	}
	if float64(area) < cfg.MinAreaShare*float64(w*h) {
		return nil, fmt.Sprintf("the largest area the model outlined is %.1f%% of the image: too small for a fetal head", 100*float64(area)/float64(w*h))
	}
	sx, sy := float64(crop.Dx())/float64(w), float64(crop.Dy())/float64(h)
	// Points are fitted in pixels made square: y is scaled by the ratio of the calibration,
	// so that the ellipse is the true shape on an anisotropic image.
	aspect := 1.0
	if mm[0] > 0 && mm[1] > 0 {
		aspect = mm[1] / mm[0]
	}
	var pts [][2]float64
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			if !inside[i] {
				continue
			}
			for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				if nx < 0 || ny < 0 || nx >= w || ny >= h {
					continue // the image's edge is not the head's
				}
				j := ny*w + nx
				if logits[j] > 0 {
					continue
				}
				t := float64(logits[i]) / float64(logits[i]-logits[j])
				mx, my := float64(x)+t*float64(d[0]), float64(y)+t*float64(d[1])
				px := float64(crop.X0) + (mx+0.5)*sx - 0.5
				py := float64(crop.Y0) + (my+0.5)*sy - 0.5
				pts = append(pts, [2]float64{px, py * aspect})
			}
		}
	}
	e, err := vision.FitEllipse(pts)
	if err != nil {
		return nil, "the outline is too small to fit an ellipse"
	}
	if !finite(e.CX, e.CY, e.Width, e.Height, e.Angle) || e.Width <= 0 || e.Height <= 0 {
		return nil, "the ellipse fit failed"
	}
	q := Quality{MaskScore: sum / float64(area)}
	q.FitResidual, q.Coverage = agreement(pts, e)
	// Where the outline strays from the skull (a bright structure beside it, a gap), those
	// points pull the fit: it is fitted again without the points far from the first ellipse.
	// The quality figures stay those of the whole outline.
	if inliers := near(pts, e); len(inliers) >= len(pts)/2 && len(inliers) < len(pts) {
		if refit, err := vision.FitEllipse(inliers); err == nil && finite(refit.CX, refit.CY, refit.Width, refit.Height) && refit.Width > 0 && refit.Height > 0 {
			e = refit
		}
	}
	long, short := math.Max(e.Width, e.Height), math.Min(e.Width, e.Height)
	switch {
	case q.MaskScore < cfg.MinMaskScore:
		q.Reasons = append(q.Reasons, fmt.Sprintf("the model is unsure of the outline (mean probability %.2f, below %.2f)", q.MaskScore, cfg.MinMaskScore))
	}
	if q.FitResidual > cfg.MaxFitResidual {
		q.Reasons = append(q.Reasons, fmt.Sprintf("the outline is not an ellipse (fit residual %.1f%%, over %.1f%%)", 100*q.FitResidual, 100*cfg.MaxFitResidual))
	}
	if q.Coverage < cfg.MinCoverage {
		q.Reasons = append(q.Reasons, fmt.Sprintf("only %.0f%% of the skull's outline was seen (at least %.0f%% needed)", 100*q.Coverage, 100*cfg.MinCoverage))
	}
	if short/long < cfg.MinAxisRatio {
		q.Reasons = append(q.Reasons, fmt.Sprintf("the ellipse is flatter than a fetal head (axes %.2f to 1)", short/long))
	}
	if total > area*5/4 {
		q.Reasons = append(q.Reasons, fmt.Sprintf("the model outlined other areas too (%.0f%% of what it outlined is elsewhere)", 100*float64(total-area)/float64(total)))
	}
	// The measurements are taken on the ellipse in square pixels; the ellipse drawn is mapped
	// back to the image's pixels.
	head := &Head{Quality: q, Ellipse: e, perimeter: ramanujan(e.Width/2, e.Height/2)}
	if aspect != 1 {
		head.Ellipse = unstretch(e, aspect)
	}
	if mm[0] > 0 {
		a, c := e.Width/2*mm[0], e.Height/2*mm[0]
		head.HC = ramanujan(a, c)
		head.BPD, head.OFD = 2*math.Min(a, c), 2*math.Max(a, c)
		head.GestationalAge = Hadlock1984(head.HC)
		if head.HC < minHC || head.HC > maxHC {
			head.Quality.Reasons = append(head.Quality.Reasons, fmt.Sprintf("HC %.0f mm is outside any fetal head's (%.0f to %.0f mm)", head.HC, minHC, maxHC))
		}
	}
	return head, ""
}

// largestComponent marks the largest 8-connected area of logits above 0. It also returns its
// area, the area above 0 in all, and the sum of the sigmoid over the largest area.
func largestComponent(logits []float32, w, h int) (inside []bool, area, total int, sum float64) {
	label := make([]int32, w*h)
	var stack []int
	best, bestArea := int32(0), 0
	next := int32(0)
	for start, v := range logits {
		if v <= 0 || label[start] != 0 {
			continue
		}
		next++
		n := 0
		stack = append(stack[:0], start)
		label[start] = next
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n++
			x, y := i%w, i/w
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					if j := ny*w + nx; label[j] == 0 && logits[j] > 0 {
						label[j] = next
						stack = append(stack, j)
					}
				}
			}
		}
		total += n
		if n > bestArea {
			best, bestArea = next, n
		}
	}
	inside = make([]bool, w*h)
	if bestArea == 0 {
		return inside, 0, 0, 0
	}
	for i, l := range label {
		if l == best {
			inside[i] = true
			sum += 1 / (1 + math.Exp(-float64(logits[i])))
		}
	}
	return inside, bestArea, total, sum
}

// agreement measures how well points follow an ellipse: the root mean square of their
// distance from it along the ray from its centre, as a share of the mean semi-axis, and the
// share of 72 equal sectors around it (by the ellipse's own angle) that hold a point.
func agreement(pts [][2]float64, e vision.Ellipse) (residual, coverage float64) {
	a, b := e.Width/2, e.Height/2
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	const sectors = 72
	var seen [sectors]bool
	sq := 0.0
	for _, p := range pts {
		dx, dy := p[0]-e.CX, p[1]-e.CY
		u, v := dx*cos+dy*sin, -dx*sin+dy*cos
		r := math.Hypot(u/a, v/b)
		sq += (r - 1) * (r - 1)
		k := int((math.Atan2(v/b, u/a) + math.Pi) / (2 * math.Pi) * sectors)
		seen[min(max(k, 0), sectors-1)] = true
	}
	n := 0
	for _, s := range seen {
		if s {
			n++
		}
	}
	return math.Sqrt(sq / float64(len(pts))), float64(n) / sectors
}

// near keeps the points whose radial distance from the ellipse is within four times the
// median of all points' distances (and at least 1% of its size).
func near(pts [][2]float64, e vision.Ellipse) [][2]float64 {
	d := make([]float64, len(pts))
	for i, p := range pts {
		d[i] = math.Abs(radial(p, e) - 1)
	}
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	limit := max(4*sorted[len(sorted)/2], 0.01)
	var out [][2]float64
	for i, p := range pts {
		if d[i] <= limit {
			out = append(out, p)
		}
	}
	return out
}

// radial is where a point is along the ray from the ellipse's centre: 1 on the ellipse.
func radial(p [2]float64, e vision.Ellipse) float64 {
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	dx, dy := p[0]-e.CX, p[1]-e.CY
	u, v := dx*cos+dy*sin, -dx*sin+dy*cos
	return math.Hypot(u/(e.Width/2), v/(e.Height/2))
}

// unstretch maps an ellipse fitted in pixels whose y was multiplied by aspect back to the
// image's pixels, through its conic form.
func unstretch(e vision.Ellipse, aspect float64) vision.Ellipse {
	a, b := e.Width/2, e.Height/2
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	// Quadratic form of the fitted ellipse: A x^2 + 2B xy + C y^2 = 1 about its centre.
	A := cos*cos/(a*a) + sin*sin/(b*b)
	B := cos * sin * (1/(a*a) - 1/(b*b))
	C := sin*sin/(a*a) + cos*cos/(b*b)
	// y_fit = aspect * y_image.
	B, C = B*aspect, C*aspect*aspect
	tr, det := A+C, A*C-B*B
	disc := math.Sqrt(math.Max(tr*tr/4-det, 0))
	l1, l2 := tr/2-disc, tr/2+disc // l1 <= l2: the long axis goes with l1
	angle := 0.5 * math.Atan2(2*B, A-C)
	// the eigenvector for l1 ... the axis at angle has the value A cos^2 + 2B cos sin + C sin^2
	s2, c2 := math.Sincos(angle)
	along := A*c2*c2 + 2*B*c2*s2 + C*s2*s2
	w, h := 2/math.Sqrt(l1), 2/math.Sqrt(l2)
	if math.Abs(along-l2) < math.Abs(along-l1) {
		w, h = h, w
	}
	return vision.Ellipse{CX: e.CX, CY: e.CY / aspect, Width: w, Height: h, Angle: angle * 180 / math.Pi}
}

// boundingBox is the box around an ellipse.
func boundingBox(e vision.Ellipse) image.Rectangle {
	a, b := e.Width/2, e.Height/2
	sin, cos := math.Sincos(e.Angle * math.Pi / 180)
	hx := math.Sqrt(a*a*cos*cos + b*b*sin*sin)
	hy := math.Sqrt(a*a*sin*sin + b*b*cos*cos)
	return image.Rect(int(math.Floor(e.CX-hx)), int(math.Floor(e.CY-hy)), int(math.Ceil(e.CX+hx))+1, int(math.Ceil(e.CY+hy))+1)
}

// ramanujan is the perimeter of an ellipse with semi-axes a and b (Ramanujan's second
// approximation; its error is below 1e-9 of the perimeter for any fetal head's shape).
func ramanujan(a, b float64) float64 {
	h := (a - b) * (a - b) / ((a + b) * (a + b))
	return math.Pi * (a + b) * (1 + 3*h/(10+math.Sqrt(4-3*h)))
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// Colour of the head's marks: green, as a measurement rather than a lesion.
var headColour = color.RGBA{R: 80, G: 230, B: 80, A: 255}

func (h *Head) draw(pix []byte, width, height, samples int) error {
	caption := "fetal head"
	if h.HC > 0 {
		caption = fmt.Sprintf("fetal head HC %.1f mm", h.HC)
	}
	if h.Quality.Low() {
		caption += " (low quality)"
	}
	e := h.Ellipse
	var err error
	h.Overlay, err = vision.AnnotatePNG(pix, width, height, samples, []vision.Mark{{Rect: h.Box, Color: headColour, Caption: caption, Ellipse: &e}})
	return err
}
