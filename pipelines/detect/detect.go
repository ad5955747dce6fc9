// Package detect finds people in ward frames with a detection model: it prepares the input as
// the manifest says, decodes the model's output (FastestDet's grid of predictions, or
// CenterNet's list of boxes) into boxes in frame pixels, and keeps the best of overlapping
// boxes (non-maximum suppression).
package detect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"slices"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/vision"
)

// The output formats the detector decodes (a manifest's decoder.format).
const (
	// FormatFastestDet is FastestDet's grid: [1, 5+classes, rows, columns].
	FormatFastestDet = "fastestdet"
	// FormatCenterNet is a list of boxes decoded in the graph: [1, n, 6], each x1, y1, x2, y2
	// in the input's pixels, score, class index.
	FormatCenterNet = "centernet"
	// FormatMultiPose is MoveNet MultiPose's list of people: [1, n, 56], each 17 keypoints
	// (y, x, score), then ymin, xmin, ymax, xmax and score, normalised to the input.
	FormatMultiPose = "movenet-multipose"
)

var formats = []string{FormatFastestDet, FormatCenterNet, FormatMultiPose}

// ErrUnsupportedModel means the manifest declares a detector this package cannot decode.
var ErrUnsupportedModel = errors.New("detect: unsupported model")

// Model is what detection needs of a loaded model; *inference.Session is one.
type Model interface {
	Manifest() *models.Manifest
	RunInto(ctx context.Context, inputs, outputs []inference.Tensor) error
}

// Detection is one object found in a frame.
type Detection struct {
	Label string
	Score float64
	// Box is in the frame's pixels.
	Box image.Rectangle
}

// Detector runs one detection model, reusing its buffers between frames: a warm detector
// allocates nothing.
type Detector struct {
	model     Model
	man       *models.Manifest
	w, h      int
	threshold float64
	nmsIoU    float64
	floor     float64
	classes   map[string]bool
	input     []float32
	ints      []int32            // the input instead, for a model that takes integer pixels
	in, out   []inference.Tensor // one each, over input and the model's output, reused
	found     []Detection        // the boxes over the floor, before suppression, reused
	kept      []Detection        // what Detect returns, reused
	small     vision.Frame       // the resized frame, reused
}

// New checks the model's manifest and returns a detector that keeps only the given labels
// (all when none are given).
func New(m Model, labels ...string) (*Detector, error) {
	man := m.Manifest()
	if man.Decoder.Kind != models.DecoderDetection || !slices.Contains(formats, man.Decoder.Format) {
		return nil, fmt.Errorf("%w: %s has a %s/%s decoder, want detection with a format of %v", ErrUnsupportedModel, man.Name, man.Decoder.Kind, man.Decoder.Format, formats)
	}
	in := man.Inputs[0]
	h, w := in.Size()
	if (in.Layout != "NCHW" && in.Layout != "NHWC") || (in.DType != models.Float32 && in.DType != models.Int32) || (in.Color != "BGR" && in.Color != "RGB") {
		return nil, fmt.Errorf("%w: %s input %s %s %s", ErrUnsupportedModel, man.Name, in.DType, in.Layout, in.Color)
	}
	d := &Detector{model: m, man: man, w: int(w), h: int(h), threshold: man.Thresholds["score"], nmsIoU: man.Thresholds["nms_iou"],
		input: make([]float32, 3*w*h)}
	shape := []int64{1, 3, h, w}
	if in.Layout == "NHWC" {
		shape = []int64{1, h, w, 3}
	}
	var input inference.Tensor
	var err error
	if in.DType == models.Int32 {
		d.ints = make([]int32, 3*w*h)
		input, err = inference.NewTensor(shape, d.ints)
	} else {
		input, err = inference.NewTensor(shape, d.input)
	}
	if err != nil {
		return nil, err
	}
	out, err := outputTensor(man)
	if err != nil {
		return nil, err
	}
	d.in, d.out = []inference.Tensor{input}, []inference.Tensor{out}
	if d.threshold == 0 {
		d.threshold = 0.5
	}
	if d.nmsIoU == 0 {
		d.nmsIoU = 0.45
	}
	if len(labels) > 0 {
		d.classes = map[string]bool{}
		for _, l := range labels {
			d.classes[l] = true
		}
	}
	return d, nil
}

// Model is the detection model the detector runs.
func (d *Detector) Model() Model { return d.model }

// Threshold is the score a detection needs to count as found, from the manifest.
func (d *Detector) Threshold() float64 { return d.threshold }

// SetFloor lowers the score down to which Detect reports boxes, below Threshold: a tracker
// may use weaker boxes to keep following a person it already knows (a person lying down, or
// half hidden). Zero means Threshold.
func (d *Detector) SetFloor(score float64) { d.floor = score }

// Detect finds objects in a BGR frame. The slice is the detector's own, valid until its next
// call.
func (d *Detector) Detect(ctx context.Context, f vision.Frame) ([]Detection, error) {
	if _, err := d.Prepare(f); err != nil {
		return nil, err
	}
	if err := d.model.RunInto(ctx, d.in, d.out); err != nil {
		return nil, err
	}
	v, _ := inference.Values[float32](d.out[0])
	switch d.man.Decoder.Format {
	case FormatCenterNet:
		return d.decodeBoxes(v, d.out[0].Shape, f.Width, f.Height)
	case FormatMultiPose:
		return d.decodePeople(v, d.out[0].Shape, f.Width, f.Height)
	}
	return d.decode(v, d.out[0].Shape, f.Width, f.Height)
}

// limit is the lowest score Detect reports.
func (d *Detector) limit() float64 {
	if d.floor > 0 && d.floor < d.threshold {
		return d.floor
	}
	return d.threshold
}

// decodePeople reads MoveNet MultiPose's people: after 17 keypoints, the box (ymin, xmin,
// ymax, xmax, normalised) and its score.
func (d *Detector) decodePeople(v []float32, shape []int64, fw, fh int) ([]Detection, error) {
	if len(shape) != 3 || shape[2] != 56 {
		return nil, fmt.Errorf("%w: output shape %v, want [1, n, 56]", ErrUnsupportedModel, shape)
	}
	limit := d.limit()
	dets := d.found[:0]
	for i := 0; i < int(shape[1]); i++ {
		row := v[56*i : 56*i+56]
		score := float64(row[55])
		if score < limit {
			continue
		}
		box := image.Rect(int(float64(row[52])*float64(fw)), int(float64(row[51])*float64(fh)), int(float64(row[54])*float64(fw)), int(float64(row[53])*float64(fh)))
		dets = clipped(dets, d.man.Labels[0], score, box, fw, fh)
	}
	return d.suppress(dets)
}

// decodeBoxes reads a list of boxes in the input's pixels: x1, y1, x2, y2, score, class.
func (d *Detector) decodeBoxes(v []float32, shape []int64, fw, fh int) ([]Detection, error) {
	if len(shape) != 3 || shape[2] != 6 {
		return nil, fmt.Errorf("%w: output shape %v, want [1, n, 6]", ErrUnsupportedModel, shape)
	}
	sx, sy := float64(fw)/float64(d.w), float64(fh)/float64(d.h)
	limit := d.limit()
	dets := d.found[:0]
	for i := 0; i < int(shape[1]); i++ {
		row := v[6*i : 6*i+6]
		score, class := float64(row[4]), int(row[5])
		if score < limit || class < 0 || class >= len(d.man.Labels) {
			continue
		}
		label := d.man.Labels[class]
		if d.classes != nil && !d.classes[label] {
			continue
		}
		box := image.Rect(int(float64(row[0])*sx), int(float64(row[1])*sy), int(float64(row[2])*sx), int(float64(row[3])*sy))
		dets = clipped(dets, label, score, box, fw, fh)
	}
	return d.suppress(dets)
}

// outputTensor is room for the model's one output, which must be float32 of a fixed shape.
func outputTensor(man *models.Manifest) (inference.Tensor, error) {
	if len(man.Outputs) != 1 || man.Outputs[0].DType != models.Float32 {
		return inference.Tensor{}, fmt.Errorf("%w: %s has %d outputs, want one float32", ErrUnsupportedModel, man.Name, len(man.Outputs))
	}
	t, err := inference.Zeros(man.Outputs[0])
	if err != nil {
		return inference.Tensor{}, fmt.Errorf("%w: %s: %v", ErrUnsupportedModel, man.Name, err)
	}
	return t, nil
}

// Prepare turns a BGR frame into the model's input tensor, as the manifest says: resized,
// planar (NCHW) or interleaved (NHWC), scaled. The tensor shares the detector's buffer: it is valid until the next call.
func (d *Detector) Prepare(f vision.Frame) (inference.Tensor, error) {
	if err := vision.ResizeInto(&d.small, f, d.w, d.h); err != nil {
		return inference.Tensor{}, err
	}
	small := d.small
	in := d.man.Inputs[0]
	plane := d.w * d.h
	order := [3]int{0, 1, 2} // BGR planes from BGR pixels
	if in.Color == "RGB" {
		order = [3]int{2, 1, 0}
	}
	if d.ints != nil { // raw pixel values, interleaved (NHWC) or planar
		for i := 0; i < plane; i++ {
			p := small.BGR[3*i : 3*i+3]
			for c := 0; c < 3; c++ {
				if in.Layout == "NHWC" {
					d.ints[3*i+order[c]] = int32(p[c])
				} else {
					d.ints[order[c]*plane+i] = int32(p[c])
				}
			}
		}
		return d.in[0], nil
	}
	scale := float32(in.Scale)
	if in.Layout == "NHWC" {
		for i := 0; i < plane; i++ {
			p := small.BGR[3*i : 3*i+3]
			d.input[3*i+order[0]] = float32(p[0]) * scale
			d.input[3*i+order[1]] = float32(p[1]) * scale
			d.input[3*i+order[2]] = float32(p[2]) * scale
		}
		return d.in[0], nil
	}
	for i := 0; i < plane; i++ {
		p := small.BGR[3*i : 3*i+3]
		d.input[order[0]*plane+i] = float32(p[0]) * scale
		d.input[order[1]*plane+i] = float32(p[1]) * scale
		d.input[order[2]*plane+i] = float32(p[2]) * scale
	}
	return d.in[0], nil
}

// decode reads FastestDet's grid: per cell, objectness, centre offsets (tanh), width and
// height (sigmoid, relative to the image) and class scores; score = obj^0.6 x cls^0.4.
func (d *Detector) decode(v []float32, shape []int64, fw, fh int) ([]Detection, error) {
	if len(shape) != 4 || int(shape[1]) != 5+len(d.man.Labels) {
		return nil, fmt.Errorf("%w: output shape %v for %d labels", ErrUnsupportedModel, shape, len(d.man.Labels))
	}
	gh, gw := int(shape[2]), int(shape[3])
	cells := gh * gw
	at := func(c, i int) float64 { return float64(v[c*cells+i]) }
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	limit := d.limit()
	dets := d.found[:0]
	for i := 0; i < cells; i++ {
		obj := at(0, i)
		if obj <= 0 {
			continue
		}
		best, bestScore := -1, 0.0
		for c := range d.man.Labels {
			if s := at(5+c, i); s > bestScore {
				best, bestScore = c, s
			}
		}
		if best < 0 {
			continue
		}
		score := math.Pow(obj, 0.6) * math.Pow(bestScore, 0.4)
		label := d.man.Labels[best]
		if score < limit || d.classes != nil && !d.classes[label] {
			continue
		}
		gx, gy := i%gw, i/gw
		cx := (float64(gx) + math.Tanh(at(1, i))) / float64(gw)
		cy := (float64(gy) + math.Tanh(at(2, i))) / float64(gh)
		bw, bh := sigmoid(at(3, i)), sigmoid(at(4, i))
		box := image.Rect(int((cx-bw/2)*float64(fw)), int((cy-bh/2)*float64(fh)), int((cx+bw/2)*float64(fw)), int((cy+bh/2)*float64(fh)))
		dets = clipped(dets, label, score, box, fw, fh)
	}
	return d.suppress(dets)
}

// clipped appends a box, cut to the frame, unless none of it is in the frame.
func clipped(dets []Detection, label string, score float64, box image.Rectangle, fw, fh int) []Detection {
	box = box.Intersect(image.Rect(0, 0, fw, fh))
	if box.Empty() {
		return dets
	}
	return append(dets, Detection{Label: label, Score: score, Box: box})
}

// suppress keeps the best of the boxes found (nms) and returns them; both slices are the
// detector's own, reused.
func (d *Detector) suppress(dets []Detection) ([]Detection, error) {
	d.found = dets
	d.kept = nms(dets, d.nmsIoU, d.kept[:0])
	return d.kept, nil
}

// nms keeps, among boxes of one label that overlap more than limit, the best scored; and it
// drops a box lying for the most part (four fifths) inside a better one of the same label:
// FastestDet often finds a lying person whole and, again, in parts.
func nms(dets []Detection, limit float64, keep []Detection) []Detection {
	slices.SortStableFunc(dets, func(a, b Detection) int { return cmp.Compare(b.Score, a.Score) })
	for _, d := range dets {
		ok := true
		for _, k := range keep {
			if k.Label == d.Label && (geom.IoU(k.Box, d.Box) > limit || geom.Inside(d.Box, k.Box) >= 0.8) {
				ok = false
				break
			}
		}
		if ok {
			keep = append(keep, d)
		}
	}
	return keep
}
