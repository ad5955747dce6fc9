// Package track keeps stable identities for people across frames: each track's box is
// predicted forward with its velocity, detections are matched to predictions by overlap (or,
// for small far-away people, by centre distance), and a track survives short occlusions.
package track

import (
	"github.com/vigil-health/vigil/pipelines/geom"
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
	// Jumped says the box moved abruptly from the last frame to this one (it overlaps the
	// last box by under a fifth), or came back from hiding 30% taller or shorter: the track
	// may have passed to someone else, and what was measured of its person should start again.
	Jumped bool
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
	// MinScore is the detection score that may start a track; weaker detections only continue
	// one. Zero lets every detection start a track.
	MinScore float64
	// MaxTracks bounds the tracks followed at once: each holds history, and a camera looking
	// at noise could otherwise start one on every box. A detection over the bound starts none.
	// Zero means DefaultMaxTracks.
	MaxTracks int
	// WeakStart is the least score with which a box that continues no track may still start
	// one, when it is at least as wide as high and found at the same place on Persist frames
	// running (a frame or two unseen between them allowed): a person already lying on the
	// floor when the camera starts scores 0.3-0.6 with FastestDet and is never seen standing.
	// Zero: only MinScore starts a track.
	WeakStart float64
	// Persist is how many frames a weak box must be found on before it starts a track; about
	// a second of frames. Zero means 10.
	Persist int
}

// DefaultMaxTracks is more people than a ward room holds.
const DefaultMaxTracks = 32

// DefaultConfig suits a ward camera at about 10 frames per second.
var DefaultConfig = Config{MaxMissed: 15, MinIoU: 0.25, MaxCentreShift: 0.5}

// Tracker assigns track IDs. It is not safe for concurrent use; each camera stream has one.
type Tracker struct {
	cfg    Config
	next   int64
	tracks []*Track
	// candidates are weak boxes followed until they have persisted long enough to start a track.
	candidates []candidate
	// switches counts the likely identity switches so far.
	switches int
}

// candidate is a weak box seen on hits frames, last missed frames ago.
type candidate struct {
	box          image.Rectangle
	hits, missed int
}

// maxCandidates bounds the weak boxes followed at once: a camera looking at clutter may score
// many.
const maxCandidates = 16

// Switches is how many identity switches the tracker has likely made so far, with no ground
// truth to count them against: a track whose box jumped (it probably passed to someone else),
// and a new track started where one was lost a moment before (probably the same person with a
// new ID).
func (tr *Tracker) Switches() int { return tr.switches }

// New returns a tracker.
func New(cfg Config) *Tracker { return &Tracker{cfg: cfg, next: 1} }

func centre(r image.Rectangle) (float64, float64) {
	return float64(r.Min.X+r.Max.X) / 2, float64(r.Min.Y+r.Max.Y) / 2
}

// predicted is where the track's box should be now.
func (t *Track) predicted() image.Rectangle {
	steps := float64(t.Missed + 1)
	return t.Box.Add(image.Pt(int(math.Round(t.vx*steps)), int(math.Round(t.vy*steps))))
}

// Update matches one frame's detections to tracks and returns, for each observation in order,
// its track. Confident detections are matched first and start new tracks for new people;
// weaker ones (under Config.MinScore) may then only continue a track that is left, by overlap:
// a person lying down or half hidden scores low, and a weak box elsewhere is more often a
// chair than a person (ByteTrack's two passes). A weak observation left unmatched gets nil.
// Tracks unseen for too long end.
func (tr *Tracker) Update(obs []Observation) []*Track {
	out := make([]*Track, len(obs))
	usedT := make([]bool, len(tr.tracks))
	strong := func(o Observation) bool { return o.Score >= tr.cfg.MinScore }
	tr.match(obs, out, usedT, strong, true)
	tr.match(obs, out, usedT, func(o Observation) bool { return !strong(o) }, false)
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
	limit := tr.cfg.MaxTracks
	if limit <= 0 {
		limit = DefaultMaxTracks
	}
	persisted := tr.persist(obs, out)
	for i, o := range obs {
		if out[i] == nil && (strong(o) || persisted[i]) && len(tr.tracks) < limit {
			if tr.lostNear(o.Box) {
				tr.switches++
			}
			t := &Track{ID: tr.next, Box: o.Box, Score: o.Score, Hits: 1}
			tr.next++
			tr.tracks = append(tr.tracks, t)
			out[i] = t
		}
	}
	return out
}

// persist follows the weak boxes that continue no track, and says which have now been found
// at the same place on enough frames to start one.
func (tr *Tracker) persist(obs []Observation, out []*Track) []bool {
	ready := make([]bool, len(obs))
	if tr.cfg.WeakStart <= 0 {
		return ready
	}
	need := tr.cfg.Persist
	if need <= 0 {
		need = 10
	}
	used := make([]bool, len(tr.candidates))
	for i, o := range obs {
		// Only a box at least nine tenths as wide as high: a person lying, or curled up on the
		// floor. A narrow weak box is most often a standing person partly hidden, who should
		// be found again by a confident box (on the walkers clip, such tracks took over a lost
		// walker's history and raised a false fall).
		if out[i] != nil || o.Score >= tr.cfg.MinScore || o.Score < tr.cfg.WeakStart || 10*o.Box.Dx() < 9*o.Box.Dy() || tr.touches(o.Box) {
			continue
		}
		best, bestIoU := -1, 0.3
		for c := range tr.candidates {
			if v := geom.IoU(tr.candidates[c].box, o.Box); !used[c] && v >= bestIoU {
				best, bestIoU = c, v
			}
		}
		if best < 0 {
			if len(tr.candidates) < maxCandidates {
				tr.candidates = append(tr.candidates, candidate{box: o.Box, hits: 1})
				used = append(used, true)
			}
			continue
		}
		c := &tr.candidates[best]
		used[best] = true
		c.box, c.hits, c.missed = o.Box, c.hits+1, 0
		ready[i] = c.hits >= need
	}
	kept := tr.candidates[:0]
	for c, cand := range tr.candidates {
		if !used[c] {
			cand.missed++
		}
		if cand.missed <= 2 && cand.hits < need {
			kept = append(kept, cand)
		}
	}
	tr.candidates = kept
	return ready
}

// match pairs the observations that pass use with the tracks not used yet, best overlap first,
// then (when byCentre) by centre distance.
func (tr *Tracker) match(obs []Observation, out []*Track, usedT []bool, use func(Observation) bool, byCentre bool) {
	type pair struct {
		t, o int
		cost float64
	}
	var pairs []pair
	for ti, t := range tr.tracks {
		if usedT[ti] {
			continue
		}
		p := t.predicted()
		px, py := centre(p)
		for oi, o := range obs {
			if out[oi] != nil || !use(o) {
				continue
			}
			if o := geom.IoU(p, o.Box); o >= tr.cfg.MinIoU {
				pairs = append(pairs, pair{ti, oi, 1 - o})
				continue
			}
			if !byCentre {
				continue
			}
			ox, oy := centre(o.Box)
			if d := math.Hypot(ox-px, oy-py) / math.Max(float64(p.Dy()), 1); d <= tr.cfg.MaxCentreShift {
				pairs = append(pairs, pair{ti, oi, 1 + d}) // after every overlap match
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].cost < pairs[j].cost })
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
		nb := obs[p.o].Box
		t.Jumped = false
		// A person changes shape (sitting, falling) but does not leave their own box from one
		// frame to the next; and after hiding for a while, comes back about as tall.
		r := float64(nb.Dy()) / math.Max(float64(t.Box.Dy()), 1)
		if t.Missed == 0 {
			t.Jumped = geom.IoU(t.Box, nb) < 0.2
		} else {
			t.Jumped = r < 1/1.3 || r > 1.3
		}
		if t.Jumped {
			tr.switches++
		}
		t.Box, t.Score = nb, obs[p.o].Score
		t.Hits++
		t.Missed = 0
		out[p.o] = t
	}
}

// touches says whether a box overlaps a live track's: part of a person already followed (a
// lying person is often found whole and again in parts), not someone new.
func (tr *Tracker) touches(box image.Rectangle) bool {
	for _, t := range tr.tracks {
		if in := box.Intersect(t.predicted()); !in.Empty() && 10*in.Dx()*in.Dy() > box.Dx()*box.Dy() {
			return true
		}
	}
	return false
}

// Started is how many track IDs were given out so far.
func (tr *Tracker) Started() int64 { return tr.next - 1 }

// lostNear says whether a track lost a moment ago was predicted within a box height of box.
func (tr *Tracker) lostNear(box image.Rectangle) bool {
	bx, by := centre(box)
	for _, t := range tr.tracks {
		if t.Missed == 0 || t.Hits < 3 {
			continue
		}
		px, py := centre(t.predicted())
		if math.Hypot(bx-px, by-py) <= float64(max(t.Box.Dy(), box.Dy())) {
			return true
		}
	}
	return false
}

// Active is every live track, seen this frame or not.
func (tr *Tracker) Active() []*Track { return tr.tracks }
