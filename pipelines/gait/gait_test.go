package gait

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-health/vigil/pipelines/pose"
)

// walker makes the skeleton of a person walking side-on at a given step time: the ankles swing
// in antiphase, each step one swing; the body moves at speed px/s.
func walker(t float64, stepTime, speed float64, swap bool) pose.Skeleton {
	var s pose.Skeleton // the points gait does not use stay unseen (score 0)
	cx := 100 + speed*t
	phase := math.Pi * t / stepTime // one half cycle per step
	swing := 18 * math.Sin(phase)
	s[pose.LeftShoulder] = pose.Keypoint{X: cx, Y: 100, Score: 0.8}
	s[pose.RightShoulder] = pose.Keypoint{X: cx, Y: 100, Score: 0.8}
	s[pose.LeftHip] = pose.Keypoint{X: cx, Y: 140, Score: 0.8}
	s[pose.RightHip] = pose.Keypoint{X: cx, Y: 140, Score: 0.8}
	l := pose.Keypoint{X: cx + swing, Y: 190, Score: 0.8}
	r := pose.Keypoint{X: cx - swing, Y: 190, Score: 0.8}
	if swap {
		l, r = r, l
	}
	s[pose.LeftAnkle], s[pose.RightAnkle] = l, r
	return s
}

func TestCadenceOfASyntheticWalker(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 1))
	for _, stepTime := range []float64{0.46, 0.55, 0.65, 0.9} {
		var a Analyzer
		swapped := false
		for f := 0; f < 150; f++ { // 15 s at 10 fps
			ts := float64(f) / 10
			// MoveNet swaps left and right on about one frame in 70 of the walkers clip,
			// mostly a frame at a time: here one in 12, never two in a row. Its points
			// jitter by a pixel or two.
			swapped = !swapped && rng.IntN(12) == 0
			w := walker(ts, stepTime, 60, swapped)
			for _, k := range []int{pose.LeftAnkle, pose.RightAnkle, pose.LeftHip, pose.RightHip} {
				w[k].X += rng.NormFloat64() * 1.5
				w[k].Y += rng.NormFloat64() * 1.5
			}
			a.Add(start.Add(time.Duration(ts*float64(time.Second))), w, w.Bounds(0.5))
		}
		s, ok := a.Summarize()
		want := 60 / stepTime
		if !ok || math.Abs(s.Cadence-want) > 0.08*want {
			t.Errorf("step time %.2f s: cadence %.1f (ok %v, %d steps), want %.1f within 8%%", stepTime, s.Cadence, ok, s.Steps, want)
		}
		if s.SpeedBodyHeights < 0.6 || s.SpeedBodyHeights > 0.7 { // 60 px/s over 90 px of body
			t.Errorf("speed %.2f body heights/s, want about 0.67", s.SpeedBodyHeights)
		}
		if s.StepTimeCV > 0.2 || s.Asymmetry > 0.2 {
			t.Errorf("step time %.2f s: a regular synthetic walk has CV %.2f and asymmetry %.2f", stepTime, s.StepTimeCV, s.Asymmetry)
		}
	}
}

func TestTooFewStepsGiveNoSummary(t *testing.T) {
	var a Analyzer
	start := time.Now()
	for f := 0; f < 20; f++ { // 2 s: about 3 steps
		ts := float64(f) / 10
		w := walker(ts, 0.55, 60, false)
		a.Add(start.Add(time.Duration(ts*float64(time.Second))), w, w.Bounds(0.5))
	}
	if s, ok := a.Summarize(); ok {
		t.Errorf("a summary from %d steps, want none under %d", s.Steps, MinSteps)
	}
}

func TestStandingStillHasNoSteps(t *testing.T) {
	var a Analyzer
	start := time.Now()
	for f := 0; f < 100; f++ {
		ts := float64(f) / 10
		w := walker(0, 0.55, 0, false)
		a.Add(start.Add(time.Duration(ts*float64(time.Second))), w, w.Bounds(0.5))
	}
	if s, _ := a.Summarize(); s.Steps != 0 {
		t.Errorf("standing still: %d steps", s.Steps)
	}
}

// TestShufflingIsNoGait: quick small movements of the feet while the body drifts slowly are
// not a walk (steps of 0.08 body heights), whatever their rhythm.
func TestShufflingIsNoGait(t *testing.T) {
	var a Analyzer
	start := time.Now()
	for f := 0; f < 150; f++ {
		ts := float64(f) / 10
		w := walker(ts, 0.35, 20, false)
		a.Add(start.Add(time.Duration(ts*float64(time.Second))), w, w.Bounds(0.5))
	}
	if s, ok := a.Summarize(); ok {
		t.Errorf("shuffling gave a gait: %+v", s)
	}
}

// TestSpeedOnTheFloor: with a floor homography (here 100 pixels a metre along x, with an
// offset), speed is the feet's way over the floor in m/s: 60 px/s is 0.6 m/s.
func TestSpeedOnTheFloor(t *testing.T) {
	a := Analyzer{Floor: func(x, y float64) (float64, float64, bool) { return x/100 + 3, y / 100, true }}
	start := time.Now()
	for f := 0; f < 100; f++ {
		ts := float64(f) / 10
		w := walker(ts, 0.55, 60, false)
		a.Add(start.Add(time.Duration(ts*float64(time.Second))), w, w.Bounds(0.5))
	}
	s, ok := a.Summarize()
	if !ok || math.Abs(s.SpeedMetres-0.6) > 0.03 {
		t.Errorf("speed %.3f m/s (summary %v), want 0.6", s.SpeedMetres, ok)
	}
	// A point the homography cannot map (behind the camera's horizon) leaves speed unknown.
	a.Floor = func(x, y float64) (float64, float64, bool) { return 0, 0, false }
	if s, _ := a.Summarize(); s.SpeedMetres != 0 {
		t.Errorf("speed %.3f m/s from unmappable points, want none", s.SpeedMetres)
	}
}

// TestHistoryBoundedByCount: a client whose clock stands still sends every frame at the same
// time; the frames kept stay within the bound.
func TestHistoryBoundedByCount(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := Analyzer{MaxSamples: 50}
	for f := range 1000 {
		w := walker(float64(f)/10, 0.5, 60, false)
		a.Add(at, w, w.Bounds(0.5))
	}
	if len(a.samples) != 50 || cap(a.samples) > 4*50 {
		t.Errorf("kept %d samples (capacity %d) of 1000 frames, want 50", len(a.samples), cap(a.samples))
	}
}
