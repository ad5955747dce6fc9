// Package track keeps stable identities for people across frames: each track's box is
// predicted forward with its velocity, detections are matched to predictions by overlap (or,
// for small far-away people, by centre distance), and a track survives short occlusions.
package track

import (
	"image"
	"math"
	"sort"
)

// Observation is one detection handed to the tracker.
type Observation struct {
	Box   image.Rectangle
	Score float64
}

// Track is one person followed through frames.
type Track struct {
	ID    int64
	Box   image.Rectangle
	Score float64
	// Hits counts the frames the track was matched on; Missed the frames since the last one.
	Hits   int
	Missed int
	// vx, vy is the centre's velocity in pixels per frame.
	vx, vy float64
}

// Config tunes the tracker.
type Config struct {
	// MaxMissed is how many frames a track may go unseen (an occlusion) before it ends.
	MaxMissed int
	// MinIoU is the least overlap between a prediction and a detection to match them.
	MinIoU float64
	// MaxCentreShift is the largest centre distance, as a fraction of the track's height, that
	// still matches when boxes barely overlap (small, fast walkers).
	MaxCentreShift float64
}

// DefaultConfig suits a ward camera at about 10 frames per second.
var DefaultConfig = Config{MaxMissed: 15, MinIoU: 0.25, MaxCentreShift: 0.5}

// Tracker assigns track IDs. It is not safe for concurrent use; each camera stream has one.
type Tracker struct {
	cfg    Config
	next   int64
	tracks []*Track
}

// New returns a tracker.
func New(cfg Config) *Tracker { return &Tracker{cfg: cfg, next: 1} }

func centre(r image.Rectangle) (float64, float64) {
	return float64(r.Min.X+r.Max.X) / 2, float64(r.Min.Y+r.Max.Y) / 2
}

func iou(a, b image.Rectangle) float64 {
	in := a.Intersect(b)
	if in.Empty() {
		return 0
	}
	ia := float64(in.Dx() * in.Dy())
	return ia / (float64(a.Dx()*a.Dy()+b.Dx()*b.Dy()) - ia)
}

// predicted is where the track's box should be now.
func (t *Track) predicted() image.Rectangle {
	steps := float64(t.Missed + 1)
	return t.Box.Add(image.Pt(int(math.Round(t.vx*steps)), int(math.Round(t.vy*steps))))
}

// Update matches one frame's detections to tracks and returns, for each observation in order,
// its track. New people get new tracks; tracks unseen for too long end.
func (tr *Tracker) Update(obs []Observation) []*Track {
	type pair struct {
		t, o int
		cost float64
	}
	var pairs []pair
	for ti, t := range tr.tracks {
		p := t.predicted()
		px, py := centre(p)
		for oi, o := range obs {
			if o := iou(p, o.Box); o >= tr.cfg.MinIoU {
				pairs = append(pairs, pair{ti, oi, 1 - o})
				continue
			}
			ox, oy := centre(o.Box)
			if d := math.Hypot(ox-px, oy-py) / math.Max(float64(p.Dy()), 1); d <= tr.cfg.MaxCentreShift {
				pairs = append(pairs, pair{ti, oi, 1 + d}) // after every overlap match
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].cost < pairs[j].cost })
	out := make([]*Track, len(obs))
	usedT := make([]bool, len(tr.tracks))
	for _, p := range pairs {
		if usedT[p.t] || out[p.o] != nil {
			continue
		}
		usedT[p.t] = true
		t := tr.tracks[p.t]
		ox, oy := centre(obs[p.o].Box)
		cx, cy := centre(t.Box)
		steps := float64(t.Missed + 1)
		// Smoothed velocity: half the new displacement, half the old estimate.
		t.vx = 0.5*t.vx + 0.5*(ox-cx)/steps
		t.vy = 0.5*t.vy + 0.5*(oy-cy)/steps
		t.Box, t.Score = obs[p.o].Box, obs[p.o].Score
		t.Hits++
		t.Missed = 0
		out[p.o] = t
	}
	kept := tr.tracks[:0]
	for i, t := range tr.tracks {
		if !usedT[i] {
			t.Missed++
		}
		if t.Missed <= tr.cfg.MaxMissed {
			kept = append(kept, t)
		}
	}
	tr.tracks = kept
	for i, o := range obs {
		if out[i] == nil {
			t := &Track{ID: tr.next, Box: o.Box, Score: o.Score, Hits: 1}
			tr.next++
			tr.tracks = append(tr.tracks, t)
			out[i] = t
		}
	}
	return out
}

// Active is every live track, seen this frame or not.
func (tr *Tracker) Active() []*Track { return tr.tracks }
