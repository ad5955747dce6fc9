package triage

import (
	"context"
	"errors"
	"fmt"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"image"
	"image/color"
	"io"
	"math"
	"runtime"
	"sort"
	"sync"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/panics"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/vision"
)

var (
	// ErrNotUltrasound means the instance is not an ultrasound image.
	ErrNotUltrasound = errors.New("triage: not an ultrasound instance")
	// ErrUnsupportedModel means the model's manifest declares a decoder triage cannot use.
	ErrUnsupportedModel = errors.New("triage: unsupported model")
)

// Model is what triage needs of a loaded model; *inference.Session is one.
type Model = usframe.Model

// Lesion is one finding: a lesion followed through consecutive frames.
type Lesion struct {
	Label      string
	Score      float64 // the best frame's
	FirstFrame int
	LastFrame  int
	BestFrame  int
	// Box is the lesion on its best frame, in the original image's pixels.
	Box image.Rectangle
	// LongAxisMM and AreaMM2 are set when the image is calibrated.
	LongAxisMM float64
	AreaMM2    float64
	Priority   int
	// Overlay is the best frame with the lesion drawn on it, as PNG.
	Overlay []byte
}

// Result is an instance's analysis.
type Result struct {
	Instance   dicomio.Instance
	Frames     int
	Crop       usframe.Rect
	Calibrated bool
	MMPerPixel [2]float64
	Lesions    []Lesion
}

// Progress is called after each frame.
type Progress func(framesDone, framesTotal, candidates int)

// candidate is one component on one frame.
type candidate struct {
	label  string
	score  float64
	box    image.Rectangle
	areaPx float64
}

// track follows one lesion through consecutive frames.
type track struct {
	label       string
	first, last int
	lastBox     image.Rectangle
	best        candidate
	bestFrame   int
	bestPix     []byte // the best frame, for the overlay
	bestSamples int
	frames      int
}

// DefaultMaxTracks is how many lesions one loop may follow at once, unless Options say.
const DefaultMaxTracks = 32

// Options observe and bound one analysis.
type Options struct {
	// Progress, when set, is called after each frame.
	Progress Progress
	// MaxTracks bounds the lesions followed through one loop: each keeps its best frame for
	// its overlay, so a noisy loop could otherwise keep every frame it has. Beyond the bound
	// the weakest go. Zero means DefaultMaxTracks.
	MaxTracks int
}

// Analyze reads every frame of an opened instance, runs the model and returns the lesions,
// most urgent first. Only ultrasound instances are accepted.
func Analyze(ctx context.Context, m Model, r *dicomio.Reader, opts Options) (Result, error) {
	progress, maxTracks := opts.Progress, opts.MaxTracks
	if maxTracks <= 0 {
		maxTracks = DefaultMaxTracks
	}
	inst := r.Instance()
	if inst.Modality != "US" {
		modality := inst.Modality
		if modality == "" {
			modality = "none"
		}
		return Result{}, fmt.Errorf("%w: modality is %s, not US", ErrNotUltrasound, modality)
	}
	man := m.Manifest()
	if len(man.Inputs) != 1 || len(man.Outputs) != 1 {
		return Result{}, fmt.Errorf("%w: %s has %d inputs and %d outputs, triage needs one each", ErrUnsupportedModel, man.Name, len(man.Inputs), len(man.Outputs))
	}
	in := man.Inputs[0]
	ih, iw := in.Size()
	if ih <= 0 || iw <= 0 || in.Layout != "NCHW" || in.Color != "GRAY" || in.DType != models.Float32 {
		return Result{}, fmt.Errorf("%w: %s wants %s %s %s input; triage feeds float32 NCHW grey", ErrUnsupportedModel, man.Name, in.DType, in.Layout, in.Color)
	}
	if man.Decoder.Kind != models.DecoderSegmentation && man.Decoder.Kind != models.DecoderClassification {
		return Result{}, fmt.Errorf("%w: %s has a %s decoder", ErrUnsupportedModel, man.Name, man.Decoder.Kind)
	}
	res := Result{Instance: inst}
	var tracks []*track
	candidates := 0
	// Frames are read and prepared one ahead, on a goroutine of their own, while the model
	// runs on the frame before: on an idle core that work costs no time.
	stop := make(chan struct{})
	defer close(stop)
	frames := prepareFrames(r, in, stop)
	for p := range frames {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if p.err != nil {
			return Result{}, p.err
		}
		f := p.frame
		if res.Frames == 0 {
			res.Crop, res.Calibrated, res.MMPerPixel = p.crop, p.calibrated, p.mmPerPixel
		}
		res.Frames++
		out, err := m.Run(ctx, []inference.Tensor{p.input})
		if err != nil {
			return Result{}, err
		}
		cands, err := decode(man, out[0], res.Crop, int(iw), int(ih))
		if err != nil {
			return Result{}, err
		}
		candidates += len(cands)
		tracks = keep(follow(tracks, cands, f.Number, f), f.Number, leastFrames(inst.Frames), maxTracks)
		if progress != nil {
			progress(res.Frames, inst.Frames, candidates)
		}
	}
	minFrames := leastFrames(res.Frames)
	var bestPix [][]byte
	var bestSamples []int
	for _, t := range tracks {
		if t.frames < minFrames {
			continue
		}
		l := Lesion{Label: t.label, Score: t.best.score, FirstFrame: t.first, LastFrame: t.last, BestFrame: t.bestFrame, Box: t.best.box}
		if res.Calibrated {
			l.LongAxisMM = math.Max(float64(l.Box.Dx())*res.MMPerPixel[0], float64(l.Box.Dy())*res.MMPerPixel[1])
			l.AreaMM2 = t.best.areaPx * res.MMPerPixel[0] * res.MMPerPixel[1]
		}
		l.Priority = priority(l, res)
		res.Lesions = append(res.Lesions, l)
		bestPix, bestSamples = append(bestPix, t.bestPix), append(bestSamples, t.bestSamples)
	}
	// The overlays are drawn side by side, one per core: at the end of an instance the model
	// is done and the cores are free.
	errs := make([]error, len(res.Lesions))
	var wg sync.WaitGroup
	next := make(chan int, len(res.Lesions))
	for i := range res.Lesions {
		next <- i
	}
	close(next)
	for range min(runtime.NumCPU(), len(res.Lesions)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				l := &res.Lesions[i]
				errs[i] = panics.Catch("triage overlay", func() (err error) {
					l.Overlay, err = vision.AnnotatePNG(bestPix[i], inst.Columns, inst.Rows, bestSamples[i], []vision.Mark{{
						Rect: l.Box, Color: labelColor(l.Label), Caption: caption(*l),
					}})
					return err
				})
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	sort.SliceStable(res.Lesions, func(i, j int) bool {
		a, b := res.Lesions[i], res.Lesions[j]
		return a.Priority > b.Priority || a.Priority == b.Priority && a.Score > b.Score
	})
	return res, nil
}

// preparedFrame is a frame read and turned into the model's input.
type preparedFrame struct {
	frame      dicomio.Frame
	input      inference.Tensor
	crop       usframe.Rect // chosen on the first frame, used for all
	calibrated bool
	mmPerPixel [2]float64
	err        error
}

// prepareFrames reads the instance's frames and prepares each (grey, the crop chosen on the
// first frame, resized, scaled), one frame ahead of the caller, until the frames end, a frame
// fails, or stop closes.
func prepareFrames(r *dicomio.Reader, in models.InputSpec, stop <-chan struct{}) <-chan preparedFrame {
	out := make(chan preparedFrame, 1)
	ih, iw := in.Size()
	go func() {
		defer close(out)
		var crop usframe.Rect
		first := true
		for {
			var p preparedFrame
			end := false
			// Hostile pixel data is decoded here, outside the handler's goroutine: a panic
			// becomes this frame's error.
			if err := panics.Catch("triage frame reader", func() error {
				f, err := r.Next()
				if err == io.EOF {
					end = true
					return nil
				}
				if err != nil {
					return err
				}
				grey := usframe.Grey(f)
				if first {
					var mx, my float64
					crop, mx, my, p.calibrated = usframe.CropRect(r.Instance(), grey, f.Width, f.Height)
					p.mmPerPixel, first = [2]float64{mx, my}, false
				}
				pix := usframe.Resize(grey, f.Width, crop, int(iw), int(ih))
				for i := range pix {
					pix[i] = float32((float64(pix[i]) - mean(in)) * in.Scale)
				}
				p.frame, p.crop = f, crop
				p.input, err = inference.NewTensor([]int64{1, 1, ih, iw}, pix)
				return err
			}); err != nil {
				p.err = err
			} else if end {
				return
			}
			select {
			case out <- p:
			case <-stop:
				return
			}
			if p.err != nil {
				return
			}
		}
	}()
	return out
}

func mean(in models.InputSpec) float64 {
	if len(in.Mean) > 0 {
		return in.Mean[0]
	}
	return 0
}

// decode turns the model's output into candidates in original pixels.
func decode(man *models.Manifest, out inference.Tensor, crop usframe.Rect, w, h int) ([]candidate, error) {
	v, err := inference.Values[float32](out)
	if err != nil {
		return nil, err
	}
	threshold := man.Thresholds["score"]
	if threshold == 0 {
		threshold = 0.5
	}
	activate := func(x float32) float64 { return float64(x) }
	// cut is the threshold in the model's own units: a logit is above logit(t) exactly when
	// its sigmoid is above t, so only the pixels that pass are ever put through the sigmoid.
	cut := float32(threshold)
	if man.Decoder.Format == "logits" {
		activate = func(x float32) float64 { return 1 / (1 + math.Exp(-float64(x))) }
		cut = float32(math.Log(threshold / (1 - threshold)))
	}
	sx, sy := float64(crop.Dx())/float64(w), float64(crop.Dy())/float64(h)
	toImage := func(x0, y0, x1, y1 int) image.Rectangle {
		return image.Rect(crop.X0+int(math.Floor(float64(x0)*sx)), crop.Y0+int(math.Floor(float64(y0)*sy)),
			crop.X0+int(math.Ceil(float64(x1)*sx)), crop.Y0+int(math.Ceil(float64(y1)*sy)))
	}
	var out2 []candidate
	switch man.Decoder.Kind {
	case models.DecoderClassification:
		for c, label := range man.Labels {
			if c >= len(v) || label == "normal" || label == "background" {
				continue
			}
			if s := activate(v[c]); s >= threshold {
				out2 = append(out2, candidate{label: label, score: s, box: toImage(0, 0, w, h), areaPx: float64(crop.Dx() * crop.Dy())})
			}
		}
	case models.DecoderSegmentation:
		channels := len(v) / (w * h)
		if channels != len(man.Labels) || channels*w*h != len(v) {
			return nil, fmt.Errorf("%w: %s gives %d values for %d labels of %d x %d", ErrUnsupportedModel, man.Name, len(v), len(man.Labels), w, h)
		}
		minArea := int(man.Thresholds["min_area"])
		seen := make([]bool, w*h)
		for c := 0; c < channels; c++ {
			clear(seen)
			for _, comp := range components(v[c*w*h:(c+1)*w*h], seen, w, h, cut, activate) {
				if comp.area < max(minArea, 1) {
					continue
				}
				out2 = append(out2, candidate{label: man.Labels[c], score: comp.sum / float64(comp.area),
					box: toImage(comp.x0, comp.y0, comp.x1, comp.y1), areaPx: float64(comp.area) * sx * sy})
			}
		}
	}
	return out2, nil
}

type component struct {
	area           int
	sum            float64
	x0, y0, x1, y1 int // x1, y1 exclusive
}

// components labels the 8-connected areas of the outputs at or above cut, and sums the
// activation of their pixels. seen must be all false.
func components(out []float32, seen []bool, w, h int, cut float32, activate func(float32) float64) []component {
	var comps []component
	var stack []int
	for start, p := range out {
		if p < cut || seen[start] {
			continue
		}
		c := component{x0: w, y0: h}
		stack = append(stack[:0], start)
		seen[start] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := i%w, i/w
			c.area++
			c.sum += activate(out[i])
			c.x0, c.y0, c.x1, c.y1 = min(c.x0, x), min(c.y0, y), max(c.x1, x+1), max(c.y1, y+1)
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					j := ny*w + nx
					if !seen[j] && out[j] >= cut {
						seen[j] = true
						stack = append(stack, j)
					}
				}
			}
		}
		comps = append(comps, c)
	}
	return comps
}

// leastFrames is the fewest frames a lesion must be seen on: a lesion lasts, and on a loop
// of four frames or more a component seen on a single frame is speckle.
func leastFrames(frames int) int {
	if frames >= 4 {
		return 2
	}
	return 1
}

// keep drops the tracks that ended before frame on fewer than minFrames frames (speckle: they
// can never become a lesion), and then, over max, the tracks with the weakest best scores.
func keep(tracks []*track, frame, minFrames, max int) []*track {
	kept := tracks[:0]
	for _, t := range tracks {
		if t.last < frame && t.frames < minFrames {
			continue
		}
		kept = append(kept, t)
	}
	clear(tracks[len(kept):])
	if len(kept) > max {
		sort.SliceStable(kept, func(i, j int) bool { return kept[i].best.score > kept[j].best.score })
		clear(kept[max:])
		kept = kept[:max]
	}
	return kept
}

// follow extends tracks seen on the previous frame with this frame's candidates of the same
// label that overlap them, and starts a track for every other candidate.
func follow(tracks []*track, cands []candidate, frame int, f dicomio.Frame) []*track {
	used := make([]bool, len(cands))
	// The frame's pixels are copied once, whatever the number of tracks that keep it.
	var pix []byte
	samples := 0
	framePix := func() ([]byte, int) {
		if pix == nil {
			pix, samples = framePixels(f)
		}
		return pix, samples
	}
	for _, t := range tracks {
		if t.last != frame-1 {
			continue
		}
		best, bestIoU := -1, 0.3
		for i, c := range cands {
			if !used[i] && c.label == t.label {
				if o := geom.IoU(t.lastBox, c.box); o >= bestIoU {
					best, bestIoU = i, o
				}
			}
		}
		if best < 0 {
			continue
		}
		used[best] = true
		c := cands[best]
		t.last, t.lastBox = frame, c.box
		t.frames++
		if c.score > t.best.score {
			t.best, t.bestFrame = c, frame
			t.bestPix, t.bestSamples = framePix()
		}
	}
	for i, c := range cands {
		if used[i] {
			continue
		}
		pix, samples := framePix()
		tracks = append(tracks, &track{label: c.label, first: frame, last: frame, lastBox: c.box, best: c, bestFrame: frame,
			bestPix: pix, bestSamples: samples, frames: 1})
	}
	return tracks
}

// framePixels keeps a frame's 8-bit pixels for an overlay.
func framePixels(f dicomio.Frame) ([]byte, int) {
	if f.Pix16 != nil {
		return usframe.Grey(f), 1
	}
	return f.Pix, f.Samples
}

// priority orders the worklist: confident and large lesions first (0 to 6).
func priority(l Lesion, res Result) int {
	p := 0
	switch {
	case l.Score >= 0.9:
		p = 3
	case l.Score >= 0.75:
		p = 2
	default:
		p = 1
	}
	switch {
	case res.Calibrated && l.LongAxisMM >= 10, !res.Calibrated && l.Box.Dx()*l.Box.Dy()*25 >= res.Crop.Dx()*res.Crop.Dy():
		p += 2
	case res.Calibrated && l.LongAxisMM >= 5, !res.Calibrated && l.Box.Dx()*l.Box.Dy()*100 >= res.Crop.Dx()*res.Crop.Dy():
		p++
	}
	if l.Label == "hypoechoic lesion" {
		p++ // hypoechoic solid lesions are the ones that most often need a second look
	}
	return min(p, 6)
}

func labelColor(label string) color.RGBA {
	if label == "hyperechoic lesion" {
		return color.RGBA{R: 255, G: 160, B: 0, A: 255}
	}
	return color.RGBA{R: 0, G: 220, B: 255, A: 255}
}

func caption(l Lesion) string {
	s := fmt.Sprintf("%s %.2f", l.Label, l.Score)
	if l.LongAxisMM > 0 {
		s += fmt.Sprintf(" %.1f mm", l.LongAxisMM)
	}
	return s
}
