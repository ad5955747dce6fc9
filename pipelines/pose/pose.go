// Package pose estimates a person's 17 COCO keypoints top-down: a single-person keypoint
// model (MoveNet's decoder) runs on a square crop around each detected person, and the
// keypoints are mapped back to frame pixels.
package pose

import (
	"context"
	"errors"
	"fmt"
	"image"
	"slices"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/vision"
)

// ErrUnsupportedModel means the manifest declares a keypoint model this package cannot use.
var ErrUnsupportedModel = errors.New("pose: unsupported model")

// COCO-17 keypoint indices.
const (
	Nose = iota
	LeftEye
	RightEye
	LeftEar
	RightEar
	LeftShoulder
	RightShoulder
	LeftElbow
	RightElbow
	LeftWrist
	RightWrist
	LeftHip
	RightHip
	LeftKnee
	RightKnee
	LeftAnkle
	RightAnkle
	Count
)

// Names are the keypoints' names in COCO order, as the API spells them.
var Names = [Count]string{"nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
	"right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
	"right_knee", "left_ankle", "right_ankle"}

// Bones are the pairs of keypoints a skeleton is drawn with.
var Bones = [][2]int{
	{LeftEar, LeftEye}, {LeftEye, Nose}, {Nose, RightEye}, {RightEye, RightEar},
	{LeftShoulder, RightShoulder}, {LeftShoulder, LeftElbow}, {LeftElbow, LeftWrist},
	{RightShoulder, RightElbow}, {RightElbow, RightWrist}, {LeftShoulder, LeftHip},
	{RightShoulder, RightHip}, {LeftHip, RightHip}, {LeftHip, LeftKnee}, {LeftKnee, LeftAnkle},
	{RightHip, RightKnee}, {RightKnee, RightAnkle},
}

// Keypoint is one body point in frame pixels with the model's confidence.
type Keypoint struct {
	X, Y  float64
	Score float64
}

// Skeleton is one person's keypoints in COCO order.
type Skeleton [Count]Keypoint

// Model is what pose needs of a loaded model; *inference.Session is one.
type Model interface {
	Manifest() *models.Manifest
	RunInto(ctx context.Context, inputs, outputs []inference.Tensor) error
}

// Estimator runs one keypoint model, reusing its buffers between calls: a call allocates
// nothing.
type Estimator struct {
	model   Model
	size    int
	rgb     bool
	crop    []byte
	small   vision.Frame // the resized crop, reused
	input   []int32
	in, out []inference.Tensor // one each, over input and the model's output, reused
}

// New checks the model's manifest: MoveNet's NHWC int32 square input and [1,1,17,3] output.
func New(m Model) (*Estimator, error) {
	man := m.Manifest()
	if man.Decoder.Kind != models.DecoderKeypoints || man.Decoder.Format != "movenet" {
		return nil, fmt.Errorf("%w: %s has a %s/%s decoder, want keypoints/movenet", ErrUnsupportedModel, man.Name, man.Decoder.Kind, man.Decoder.Format)
	}
	in := man.Inputs[0]
	h, w := in.Size()
	if in.Layout != "NHWC" || in.DType != models.Int32 || h != w || h <= 0 {
		return nil, fmt.Errorf("%w: %s input %s %s %dx%d, want a square NHWC int32", ErrUnsupportedModel, man.Name, in.DType, in.Layout, w, h)
	}
	e := &Estimator{model: m, size: int(w), rgb: in.Color == "RGB", input: make([]int32, 3*w*h)}
	input, err := inference.NewTensor([]int64{1, h, w, 3}, e.input)
	if err != nil {
		return nil, err
	}
	if len(man.Outputs) != 1 || man.Outputs[0].DType != models.Float32 || !slices.Equal(man.Outputs[0].Shape, []int64{1, 1, Count, 3}) {
		return nil, fmt.Errorf("%w: %s outputs %v, want one float32 [1 1 %d 3]", ErrUnsupportedModel, man.Name, man.Outputs, Count)
	}
	out, err := inference.Zeros(man.Outputs[0])
	if err != nil {
		return nil, err
	}
	e.in, e.out = []inference.Tensor{input}, []inference.Tensor{out}
	return e, nil
}

// Model is the keypoint model the estimator runs.
func (e *Estimator) Model() Model { return e.model }

// SquareAround is the square crop around a person's box: 25% larger than its longer side.
func SquareAround(box image.Rectangle) image.Rectangle {
	side := max(box.Dx(), box.Dy()) * 5 / 4
	c := image.Pt((box.Min.X+box.Max.X)/2, (box.Min.Y+box.Max.Y)/2)
	return image.Rect(c.X-side/2, c.Y-side/2, c.X-side/2+side, c.Y-side/2+side)
}

// Prepare crops the square around box out of a BGR frame and turns it into the model's input
// tensor, and returns the square too. The tensor shares the estimator's buffer: it is valid
// until the next call.
func (e *Estimator) Prepare(f vision.Frame, box image.Rectangle) (inference.Tensor, image.Rectangle, error) {
	sq := SquareAround(box)
	side := sq.Dx()
	if side <= 0 {
		return inference.Tensor{}, sq, fmt.Errorf("pose: empty box %v", box)
	}
	// Copy the square out of the frame; parts outside the frame stay black.
	if cap(e.crop) < side*side*3 {
		e.crop = make([]byte, side*side*3)
	}
	crop := e.crop[:side*side*3]
	clear(crop)
	for y := max(sq.Min.Y, 0); y < min(sq.Max.Y, f.Height); y++ {
		x0, x1 := max(sq.Min.X, 0), min(sq.Max.X, f.Width)
		if x1 <= x0 {
			break
		}
		copy(crop[((y-sq.Min.Y)*side+(x0-sq.Min.X))*3:], f.BGR[(y*f.Width+x0)*3:(y*f.Width+x1)*3])
	}
	if err := vision.ResizeInto(&e.small, vision.Frame{Width: side, Height: side, BGR: crop}, e.size, e.size); err != nil {
		return inference.Tensor{}, sq, err
	}
	small := e.small
	for i := 0; i < e.size*e.size; i++ {
		b, g, r := small.BGR[3*i], small.BGR[3*i+1], small.BGR[3*i+2]
		if e.rgb {
			b, r = r, b
		}
		e.input[3*i], e.input[3*i+1], e.input[3*i+2] = int32(b), int32(g), int32(r)
	}
	return e.in[0], sq, nil
}

// Estimate returns the keypoints of the person in box.
func (e *Estimator) Estimate(ctx context.Context, f vision.Frame, box image.Rectangle) (Skeleton, error) {
	_, sq, err := e.Prepare(f, box)
	if err != nil {
		return Skeleton{}, err
	}
	return e.run(ctx, sq, 0)
}

// EstimateAnyWayUp is Estimate for a person who may be lying down: the model, trained mostly
// on people upright, also sees the crop turned a quarter, a half and three quarters round, and
// the skeleton with the best mean keypoint score is kept. It costs four runs of the model.
func (e *Estimator) EstimateAnyWayUp(ctx context.Context, f vision.Frame, box image.Rectangle) (Skeleton, error) {
	_, sq, err := e.Prepare(f, box)
	if err != nil {
		return Skeleton{}, err
	}
	var best Skeleton
	bestScore := -1.0
	for quarter := range 4 {
		if quarter > 0 {
			e.fill(quarter)
		}
		s, err := e.run(ctx, sq, quarter)
		if err != nil {
			return Skeleton{}, err
		}
		if m := s.MeanScore(); m > bestScore {
			best, bestScore = s, m
		}
	}
	return best, nil
}

// fill writes the resized crop into the input tensor turned quarter quarters clockwise.
func (e *Estimator) fill(quarter int) {
	n := e.size
	for y := range n {
		for x := range n {
			// The input's pixel (x, y) comes from the crop's (sx, sy).
			sx, sy := x, y
			switch quarter {
			case 1:
				sx, sy = y, n-1-x
			case 2:
				sx, sy = n-1-x, n-1-y
			case 3:
				sx, sy = n-1-y, x
			}
			i, j := 3*(y*n+x), 3*(sy*n+sx)
			b, g, r := e.small.BGR[j], e.small.BGR[j+1], e.small.BGR[j+2]
			if e.rgb {
				b, r = r, b
			}
			e.input[i], e.input[i+1], e.input[i+2] = int32(b), int32(g), int32(r)
		}
	}
}

// run runs the model on the input as prepared (turned quarter quarters clockwise) and maps
// the keypoints back to frame pixels.
func (e *Estimator) run(ctx context.Context, sq image.Rectangle, quarter int) (Skeleton, error) {
	if err := e.model.RunInto(ctx, e.in, e.out); err != nil {
		return Skeleton{}, err
	}
	side := float64(sq.Dx())
	v, _ := inference.Values[float32](e.out[0])
	var s Skeleton
	for k := 0; k < Count; k++ {
		y, x, score := float64(v[3*k]), float64(v[3*k+1]), float64(v[3*k+2])
		switch quarter { // from the turned input back to the crop
		case 1:
			x, y = y, 1-x
		case 2:
			x, y = 1-x, 1-y
		case 3:
			x, y = 1-y, x
		}
		s[k] = Keypoint{X: float64(sq.Min.X) + x*side, Y: float64(sq.Min.Y) + y*side, Score: score}
	}
	return s, nil
}

// MeanScore is the mean of the keypoints' scores.
func (s *Skeleton) MeanScore() float64 {
	sum := 0.0
	for _, k := range s {
		sum += k.Score
	}
	return sum / Count
}

// Mean is the average of the given keypoints that score at least min, and whether any did.
func (s *Skeleton) Mean(min float64, points ...int) (x, y float64, ok bool) {
	n := 0
	for _, p := range points {
		if s[p].Score >= min {
			x += s[p].X
			y += s[p].Y
			n++
		}
	}
	if n == 0 {
		return 0, 0, false
	}
	return x / float64(n), y / float64(n), true
}

// Bounds is the smallest rectangle holding the keypoints that score at least min.
func (s *Skeleton) Bounds(min float64) image.Rectangle {
	var r image.Rectangle
	for _, k := range s {
		if k.Score >= min {
			r = r.Union(image.Rect(int(k.X), int(k.Y), int(k.X)+1, int(k.Y)+1))
		}
	}
	return r
}
