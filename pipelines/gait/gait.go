// Package gait measures walking from a track's keypoints: steps from the feet moving apart
// and together, and from them cadence, step time and its variability, left/right asymmetry
// and speed.
//
// A step is one passing of the feet: the left ankle's lead over the right, measured along the
// direction of travel, changes sign once per step (ahead, level, behind, level, ahead: two
// steps). A sign change must swing past a margin to count, and one undone within a quarter
// second is a model swapping the left and right ankles for a frame or two, not two steps.
package gait

import (
	"cmp"
	"image"
	"math"
	"slices"
	"time"

	"github.com/vigil-health/vigil/pipelines/pose"
)

// MinSteps is how many steps a summary needs; with fewer, cadence is noise.
const MinSteps = 6

// sample is one frame of a walking track.
type sample struct {
	t       time.Time
	dx, dy  float64 // left ankle minus right ankle, pixels
	hx, hy  float64 // hip centre, pixels
	fx, fy  float64 // the feet's midpoint, pixels
	height  float64 // body height, pixels (shoulders to ankles)
	quality float64 // the ankles' and shoulders' mean score
}

// Analyzer follows one track's steps.
type Analyzer struct {
	samples []sample
	// PixelsPerMetre converts speed to m/s; 0 leaves speed in body heights per second.
	PixelsPerMetre float64
	// Floor, when set, maps a point of the image on the floor to metres on it (a floor
	// homography): speed is then the feet's way over the floor, in m/s, which holds for
	// people walking towards the camera too. It takes the place of PixelsPerMetre.
	Floor func(x, y float64) (mx, my float64, ok bool)
	// MaxSamples bounds the frames kept, whatever the clock says; zero means DefaultMaxSamples.
	MaxSamples int
}

// minScore is the least keypoint confidence a frame needs to count.
const minScore = 0.25

// minHeight is the least body height, in pixels, worth measuring: a keypoint model working on
// a person smaller than this guesses.
const minHeight = 40

// DefaultMaxSamples bounds the window: about a minute at 10 frames per second.
const DefaultMaxSamples = 600

// maxGap is the longest a track may go unmeasured inside one walk: longer, and a step could be
// missed unseen, so step times are not taken across it.
const maxGap = 300 * time.Millisecond

// Add records one frame of the track: its skeleton and the box it was found in. A skeleton
// that does not fit its box (a model guessing on a poor crop) is left out.
func (a *Analyzer) Add(t time.Time, s pose.Skeleton, box image.Rectangle) {
	la, ra := s[pose.LeftAnkle], s[pose.RightAnkle]
	_, sy, okS := s.Mean(minScore, pose.LeftShoulder, pose.RightShoulder)
	hx, hy, okH := s.Mean(minScore, pose.LeftHip, pose.RightHip)
	if la.Score < minScore || ra.Score < minScore || !okS || !okH {
		return
	}
	height := (la.Y+ra.Y)/2 - sy
	if height < minHeight || height > 1.1*float64(box.Dy()) || height < 0.5*float64(box.Dy()) {
		return
	}
	q := (la.Score + ra.Score + s[pose.LeftShoulder].Score + s[pose.RightShoulder].Score) / 4
	a.samples = append(a.samples, sample{t: t, dx: la.X - ra.X, dy: la.Y - ra.Y, hx: hx, hy: hy,
		fx: (la.X + ra.X) / 2, fy: (la.Y + ra.Y) / 2, height: height, quality: q})
	if limit := cmp.Or(a.MaxSamples, DefaultMaxSamples); len(a.samples) > limit {
		a.samples = append(a.samples[:0], a.samples[len(a.samples)-limit:]...)
	}
}

// Summary is a track's gait so far.
type Summary struct {
	Steps int
	// Cadence is steps per minute.
	Cadence float64
	// StepTimeMean is in seconds; StepTimeCV is its coefficient of variation.
	StepTimeMean float64
	StepTimeCV   float64
	// Asymmetry is |mean(odd steps) - mean(even steps)| / mean step time.
	Asymmetry float64
	// SpeedBodyHeights is body heights per second; SpeedMetres is m/s with a calibration.
	SpeedBodyHeights float64
	SpeedMetres      float64
	// Sway is how far the hip centre strays across the direction of travel while walking:
	// the root mean square of its distance from the line through the neighbouring second, in
	// body heights. Seen side-on it is mostly the body's rise and fall.
	Sway float64
	// Heuristic combines keypoint scores, the number of steps and their regularity, 0..1: how
	// much the figures can be relied on, by rule of thumb; not a probability.
	Heuristic float64
}

// Summarize returns the gait so far, and false until MinSteps steps are seen.
func (a *Analyzer) Summarize() (Summary, bool) {
	dirs := a.directions()
	steps := a.steps(dirs)
	if len(steps) < MinSteps {
		return Summary{Steps: len(steps)}, false
	}
	// Step times come from steps seen one after the other, with no gap between them.
	var times []float64
	var odd, even []float64
	for i := 1; i < len(steps); i++ {
		if steps[i].run != steps[i-1].run {
			continue
		}
		dt := steps[i].t.Sub(steps[i-1].t).Seconds()
		times = append(times, dt)
		if steps[i].n%2 == 0 {
			even = append(even, dt)
		} else {
			odd = append(odd, dt)
		}
	}
	if len(times) < MinSteps-1 {
		return Summary{Steps: len(steps)}, false
	}
	mean, sd := meanSD(times)
	mo, _ := meanSD(odd)
	me, _ := meanSD(even)
	s := Summary{Steps: len(steps), StepTimeMean: mean, Cadence: 60 / mean, StepTimeCV: sd / mean}
	if len(odd) > 0 && len(even) > 0 {
		s.Asymmetry = math.Abs(mo-me) / mean
	}
	// Speed: the hip centre's way over the walk, second by second (a path through every
	// frame would add the keypoints' jitter), in body heights.
	var dist, metres, dur, h, q float64
	floorOK := a.Floor != nil
	from := 0
	for i := 1; i <= len(a.samples); i++ {
		if i < len(a.samples) && a.samples[i].t.Sub(a.samples[i-1].t) <= maxGap && a.samples[i].t.Sub(a.samples[from].t) < time.Second {
			continue
		}
		p, c := a.samples[from], a.samples[i-1]
		if i < len(a.samples) && a.samples[i].t.Sub(a.samples[i-1].t) <= maxGap {
			c = a.samples[i] // the next second starts where this one ends
		}
		dist += math.Hypot(c.hx-p.hx, c.hy-p.hy)
		dur += c.t.Sub(p.t).Seconds()
		if floorOK {
			px, py, ok1 := a.Floor(p.fx, p.fy)
			cx, cy, ok2 := a.Floor(c.fx, c.fy)
			metres += math.Hypot(cx-px, cy-py)
			floorOK = ok1 && ok2
		}
		from = i
	}
	for _, x := range a.samples {
		h += x.height
		q += x.quality
	}
	h /= float64(len(a.samples))
	q /= float64(len(a.samples))
	if dur > 0 {
		s.SpeedBodyHeights = dist / h / dur
		switch {
		case a.Floor != nil:
			if floorOK {
				s.SpeedMetres = metres / dur
			}
		case a.PixelsPerMetre > 0:
			s.SpeedMetres = dist / a.PixelsPerMetre / dur
		}
	}
	s.Sway = a.sway(dirs)
	if s.SpeedBodyHeights*s.StepTimeMean < minStepLength {
		return Summary{Steps: len(steps)}, false
	}
	s.Heuristic = q * math.Min(1, float64(len(steps))/12) * math.Max(0, 1-s.StepTimeCV)
	return s, true
}

// sway is Summary.Sway.
func (a *Analyzer) sway(dirs []heading) float64 {
	var sum float64
	n := 0
	for i, c := range a.samples {
		ux, uy, walking := dirs[i].ux, dirs[i].uy, dirs[i].walking
		if !walking {
			continue
		}
		var mx, my float64
		k := 0
		for _, o := range a.samples {
			if d := o.t.Sub(c.t); d >= -time.Second && d <= time.Second {
				mx, my, k = mx+o.hx, my+o.hy, k+1
			}
		}
		mx, my = mx/float64(k), my/float64(k)
		d := ((c.hx-mx)*uy - (c.hy-my)*ux) / c.height
		sum += d * d
		n++
	}
	if n == 0 {
		return 0
	}
	return math.Sqrt(sum / float64(n))
}

// step is one passing of the feet: when, in which unbroken run of frames, and its number there.
type step struct {
	t      time.Time
	run, n int
}

// stepMargin is how far, in body heights, the lead must swing past level for a step to count:
// keypoint jitter is about 0.03. Seen side-on the lead swings 0.3 to 0.5 each way; a person
// walking towards the camera or away from it shows it foreshortened, and the margin shrinks
// with the swing, to a third of it, but not under minMargin.
const (
	stepMargin = 0.08
	minMargin  = 0.04
)

// margins is each sample's step margin, from the largest lead within a second of it.
func (a *Analyzer) margins(leads []float64) []float64 {
	out := make([]float64, len(leads))
	for i := range leads {
		amp := 0.0
		for j := i; j >= 0 && a.samples[i].t.Sub(a.samples[j].t) <= time.Second; j-- {
			amp = max(amp, math.Abs(leads[j]))
		}
		for j := i; j < len(leads) && a.samples[j].t.Sub(a.samples[i].t) <= time.Second; j++ {
			amp = max(amp, math.Abs(leads[j]))
		}
		out[i] = max(minMargin, min(stepMargin, amp/3))
	}
	return out
}

// minStep is the shortest step: 0.3 s is 200 steps a minute, faster than anyone walks (a
// sprint is about 0.25 s). A sign change sooner after a step is a swap or jitter.
const minStep = 300 * time.Millisecond

// minStepLength is the shortest mean step, in body heights, of a walk: walking steps are 0.3
// to 0.5 (a slow shuffle about 0.2). Shorter, the "steps" are feet shuffling on the spot or
// the keypoints jittering, and there is no gait to report.
const minStepLength = 0.15

// maxStep is the longest step: a slow, frail walker takes about 1.2 s. Longer is a pause, which
// ends one walk and may start another, and is no step time.
const maxStep = 1500 * time.Millisecond

// leads is the left ankle's lead over the right along the direction of travel, in body
// heights, per sample, with left/right swaps undone, and whether the person was walking.
//
// The lead changes sign once a step, and a step takes at least a third of a second: a lone
// frame whose lead has the other sign from the clear leads (beyond stepMargin) on both sides
// of it is a swap, and is flipped back. Longer swaps are left to minStep.
func (a *Analyzer) leads(dirs []heading) ([]float64, []bool) {
	raw := make([]float64, len(a.samples))
	walking := make([]bool, len(a.samples))
	for i, c := range a.samples {
		d := dirs[i]
		raw[i], walking[i] = (c.dx*d.ux+c.dy*d.uy)/c.height, d.walking
	}
	leads := unswap(a.samples, raw, 1)
	return leads, walking
}

// unswap flips back each lone lead whose sign differs from that of the first clear leads
// (beyond stepMargin) on both sides of it, each within reach frames.
func unswap(samples []sample, leads []float64, reach int) []float64 {
	// sideOf is the sign of the first clear lead from i going by (-1 or +1), 0 if none.
	sideOf := func(i, by int) float64 {
		for k := 1; k <= reach; k++ {
			j := i + by*k
			if j < 0 || j >= len(leads) || samples[max(i, j)].t.Sub(samples[min(i, j)].t) > time.Duration(k)*maxGap {
				return 0
			}
			if math.Abs(leads[j]) > stepMargin {
				return math.Copysign(1, leads[j])
			}
		}
		return 0
	}
	out := slices.Clone(leads)
	for i, c := range leads {
		if math.Abs(c) <= stepMargin {
			continue
		}
		if p, n := sideOf(i, -1), sideOf(i, 1); p != 0 && p == n && p != math.Copysign(1, c) {
			out[i] = -c
		}
	}
	return out
}

// steps finds the passings of the feet.
func (a *Analyzer) steps(dirs []heading) []step {
	leads, walking := a.leads(dirs)
	margin := a.margins(leads)
	var steps []step
	run, side, n := 0, 0, 0
	for i, c := range a.samples {
		if i > 0 && c.t.Sub(a.samples[i-1].t) > maxGap || !walking[i] {
			// A gap, or standing: a new run, with no step time across it.
			if side != 0 {
				run, side, n = run+1, 0, 0
			}
			if !walking[i] {
				continue
			}
		}
		lead := leads[i]
		now := 0
		switch {
		case lead > margin[i]:
			now = 1
		case lead < -margin[i]:
			now = -1
		}
		if now == 0 || now == side {
			continue
		}
		if side == 0 {
			side = now
			continue
		}
		// The feet passed between the previous frame and this one: interpolate when.
		at := c.t
		if p, pl := a.samples[i-1], leads[i-1]; pl != lead {
			f := math.Max(0, math.Min(1, pl/(pl-lead)))
			at = p.t.Add(time.Duration(f * float64(c.t.Sub(p.t))))
		}
		if k := len(steps); k > 0 && steps[k-1].run == run {
			if dt := at.Sub(steps[k-1].t); dt < minStep {
				// Too soon after the last step: a swap or jitter. The side stays as it was,
				// so the step is counted once, whichever of the two changes was real.
				continue
			} else if dt > maxStep {
				run, n = run+1, 0 // a pause
			}
		}
		side = now
		n++
		steps = append(steps, step{t: at, run: run, n: n})
	}
	return steps
}

// heading is a sample's direction of travel (a unit vector) and whether the person walks.
type heading struct {
	ux, uy  float64
	walking bool
}

// directions is every sample's heading, worked out once for a summary.
func (a *Analyzer) directions() []heading {
	out := make([]heading, len(a.samples))
	for i := range a.samples {
		out[i].ux, out[i].uy, out[i].walking = a.direction(i)
	}
	return out
}

// direction is the unit direction of travel around sample i, from the hip centre's
// displacement over the two seconds around it, and whether the person is walking at all: the
// hips move at least minSpeed.
func (a *Analyzer) direction(i int) (ux, uy float64, walking bool) {
	c := a.samples[i]
	lo, hi := i, i
	for lo > 0 && c.t.Sub(a.samples[lo-1].t) <= time.Second {
		lo--
	}
	for hi < len(a.samples)-1 && a.samples[hi+1].t.Sub(c.t) <= time.Second {
		hi++
	}
	dx, dy := a.samples[hi].hx-a.samples[lo].hx, a.samples[hi].hy-a.samples[lo].hy
	d := math.Hypot(dx, dy)
	dt := a.samples[hi].t.Sub(a.samples[lo].t).Seconds()
	if d == 0 || dt == 0 {
		return 1, 0, false
	}
	return dx / d, dy / d, d/c.height/dt >= minSpeed
}

// minSpeed is the least speed, in body heights per second, that counts as walking (a slow
// walk is about 0.4): below it, feet shuffling on the spot or a keypoint model's jitter
// would make steps.
const minSpeed = 0.2

func meanSD(xs []float64) (mean, sd float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(xs)))
}
