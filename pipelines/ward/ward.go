// Package ward is the per-camera pipeline: people are detected, their skeletons estimated on
// crops, followed by the tracker, and each track's gait measured.
package ward

import (
	"context"
	"errors"
	"image"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/vigil-health/vigil/internal/panics"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/gait"
	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/risk"
	"github.com/vigil-health/vigil/pipelines/track"
	"github.com/vigil-health/vigil/vision"
)

// Config tunes one camera's pipeline.
type Config struct {
	Track track.Config
	Fall  fall.Config
	// PixelsPerMetre, when known, turns gait speed into m/s.
	PixelsPerMetre float64
	// Floor, when set, maps image pixels on the floor to metres: gait speed in m/s from the
	// feet's way over the floor. It takes the place of PixelsPerMetre.
	Floor *Homography
	// Beds are polygons (frame pixels) where lying down raises no fall alert; Chairs where
	// sitting (or slumping) raises no "on the floor" alert.
	Beds, Chairs [][]image.Point
	// FrameRate is the camera's, in frames per second (0 when unknown): it turns the seconds a
	// weak box must persist to start a track into frames.
	FrameRate float64
	// WeakScore is the least detection score that may continue a track the detector's own
	// threshold started (ByteTrack's second pass): a person lying on the floor scores 0.2-0.6
	// with FastestDet, at the frame's edge 0.2-0.3, where a person standing scores over 0.8.
	WeakScore float64
	// MaxTracks bounds the people followed at once (track.DefaultMaxTracks when zero), and
	// MaxHistory the gait frames kept per person (gait.DefaultMaxSamples when zero; the fall
	// rules keep their own four seconds).
	MaxTracks, MaxHistory int
}

// Homography is a row-major 3x3 projective map from image pixels to floor metres.
type Homography [9]float64

// Map takes an image point to the floor; ok is false for a point the map sends to infinity
// (on or beyond the horizon).
func (h *Homography) Map(x, y float64) (mx, my float64, ok bool) {
	w := h[6]*x + h[7]*y + h[8]
	if math.Abs(w) < 1e-12 {
		return 0, 0, false
	}
	return (h[0]*x + h[1]*y + h[2]) / w, (h[3]*x + h[4]*y + h[5]) / w, true
}

// Fall is a fall alert for a track, with the person as seen on the frame that confirmed it.
type Fall struct {
	TrackID int64
	fall.Alert
	// Person is who was seen down on the confirming frame; FirstSeq is the sequence number of
	// the frame the descent started on, LastSeq the confirming frame's.
	Person            Person
	FirstSeq, LastSeq int64
}

// Summary is what was measured of one track over its life: its gait (when it took enough
// steps) and its fall-risk indicators.
type Summary struct {
	TrackID int64
	// First and Last are when the track was first and last seen, with their sequence numbers.
	First, Last       time.Time
	FirstSeq, LastSeq int64
	Gait              gait.Summary
	Risk              []risk.Indicator
}

// Person is one tracked person on one frame.
type Person struct {
	TrackID  int64
	Box      image.Rectangle
	Score    float64
	Skeleton pose.Skeleton
}

// Timings is where the last frame's time went.
type Timings struct {
	Detect, Pose, Track, Analyze time.Duration
}

// Pipeline processes one camera's frames in order. It is not safe for concurrent use.
type Pipeline struct {
	det *detect.Detector
	// ests are one keypoint estimator per worker of the pose model: the people of a frame
	// are estimated side by side.
	ests    []*pose.Estimator
	tracker *track.Tracker
	gait    map[int64]*gait.Analyzer
	falls   map[int64]*fall.Detector
	// lastSeen is how each track with a fall detector was last seen: a fall confirmed while
	// the person is lost is drawn where they were.
	lastSeen map[int64]Person
	spans    map[int64]*Summary
	// recent maps the capture times of the last frames to their sequence numbers: the last
	// 10 s, and never more than maxRecent frames (a client's clock may stand still).
	recent []stamp
	cfg    Config
	// A frame's working memory, reused frame after frame.
	obs       []track.Observation
	people    []Person
	skeletons []pose.Skeleton
	anyWay    []bool
	errs      []error
	seen      map[int64]bool
	live      map[int64]bool
	// raised are the alerts of the last cooldown, by place.
	raised []raised
	// confirmed and ended are the frame's Result.Falls and Result.Ended, reused.
	confirmed []Fall
	ended     []Summary
}

// Result is what one frame gave: the people on it, the falls confirmed on it, the gait of
// the people whose tracks ended on it, and what each step took. Its slices are valid until
// the next frame.
type Result struct {
	People  []Person
	Falls   []Fall
	Ended   []Summary
	Timings Timings
}

type stamp struct {
	at  time.Time
	seq int64
}

// New builds a camera's pipeline.
func New(det *detect.Detector, est *pose.Estimator, cfg Config) *Pipeline {
	if cfg.Track == (track.Config{}) {
		cfg.Track = track.DefaultConfig
	}
	if cfg.MaxTracks > 0 {
		cfg.Track.MaxTracks = cfg.MaxTracks
	}
	if cfg.Fall == (fall.Config{}) {
		cfg.Fall = fall.DefaultConfig
	}
	if cfg.WeakScore == 0 {
		cfg.WeakScore = 0.2
	}
	if cfg.Track.MinScore == 0 {
		cfg.Track.MinScore = det.Threshold()
	}
	if cfg.Track.WeakStart == 0 {
		// A person lying when the camera starts, never seen standing, scores 0.3-0.6: a box of
		// 0.3 or more found at the same place for a second starts a track.
		cfg.Track.WeakStart = max(0.3, cfg.WeakScore)
		if cfg.FrameRate > 0 {
			cfg.Track.Persist = max(3, int(math.Ceil(cfg.FrameRate)))
		}
	}
	det.SetFloor(cfg.WeakScore)
	ests := []*pose.Estimator{est}
	if w, ok := est.Model().(interface{ Workers() int }); ok {
		for len(ests) < w.Workers() {
			more, err := pose.New(est.Model())
			if err != nil {
				break // the first estimator was made from the same model: this cannot fail
			}
			ests = append(ests, more)
		}
	}
	return &Pipeline{det: det, ests: ests, tracker: track.New(cfg.Track), gait: map[int64]*gait.Analyzer{},
		falls: map[int64]*fall.Detector{}, lastSeen: map[int64]Person{}, spans: map[int64]*Summary{}, cfg: cfg,
		errs: make([]error, len(ests)), seen: map[int64]bool{}, live: map[int64]bool{}}
}

// Process runs one frame captured at t, with the sequence number seq. The people it returns
// are the pipeline's own slice, valid until the next call.
func (p *Pipeline) Process(ctx context.Context, f vision.Frame, t time.Time, seq int64) (Result, error) {
	t0 := time.Now()
	dets, err := p.Detect(ctx, f)
	if err != nil {
		return Result{}, err
	}
	took := time.Since(t0)
	res, err := p.ProcessDetected(ctx, f, dets, t, seq)
	res.Timings.Detect = took
	return res, err
}

// Detect finds the people on a frame: the first step of Process, which may run ahead, on
// another goroutine, while ProcessDetected works on the frame before. Only one Detect may run
// at a time, and its slice is valid until the next.
func (p *Pipeline) Detect(ctx context.Context, f vision.Frame) ([]detect.Detection, error) {
	return p.det.Detect(ctx, f)
}

// ProcessDetected is Process for a frame whose people Detect has already found: tracking, pose
// and the gait and fall rules. Its Timings.Detect is zero: the caller timed the detection.
func (p *Pipeline) ProcessDetected(ctx context.Context, f vision.Frame, dets []detect.Detection, t time.Time, seq int64) (Result, error) {
	t1 := time.Now()
	p.obs = p.obs[:0]
	for _, d := range dets {
		p.obs = append(p.obs, track.Observation{Box: d.Box, Score: d.Score})
	}
	tracks := p.tracker.Update(p.obs)
	t2 := time.Now()
	skeletons, err := p.estimate(ctx, f, dets, tracks)
	if err != nil {
		return Result{}, err
	}
	people := p.people[:0]
	for i, d := range dets {
		if tracks[i] == nil {
			continue // a weak box that continues no one
		}
		people = append(people, Person{TrackID: tracks[i].ID, Box: d.Box, Score: d.Score, Skeleton: skeletons[i]})
		if tracks[i].Jumped {
			delete(p.gait, tracks[i].ID) // probably someone else now: measure their gait afresh
		}
	}
	t3 := time.Now()
	p.confirmed, p.ended = p.confirmed[:0], p.ended[:0]
	p.remember(t, seq)
	p.people = people
	seen := p.seen
	clear(seen)
	for _, person := range people {
		id := person.TrackID
		seen[id] = true
		if w := p.spans[id]; w == nil {
			p.spans[id] = &Summary{TrackID: id, First: t, FirstSeq: seq, Last: t, LastSeq: seq}
		} else {
			w.Last, w.LastSeq = t, seq
		}
		g := p.gait[id]
		if g == nil {
			g = &gait.Analyzer{PixelsPerMetre: p.cfg.PixelsPerMetre, MaxSamples: p.cfg.MaxHistory}
			if p.cfg.Floor != nil {
				g.Floor = p.cfg.Floor.Map
			}
			p.gait[id] = g
		}
		fd := p.falls[id]
		if fd == nil || fd.Standing() == 0 {
			// A new track, or one never seen standing: perhaps a person just lost.
			if lost := p.lostNear(t, person, seen); lost != nil {
				fd = lost
			} else if fd == nil {
				fd = fall.New(p.cfg.Fall, p.cfg.Beds, p.cfg.Chairs)
			}
			p.falls[id] = fd
		}
		p.lastSeen[id] = person
		if overlapped(person, people) {
			// Someone in front or behind: the box is cut short and the keypoints mix two
			// people's legs, so this frame says nothing of this person's steps or of a fall;
			// a fall seen before it is still judged.
			if a, ok := fd.Tick(t); ok {
				p.raise(a, person, seq)
			}
			continue
		}
		if cut := person.Box.Min.X <= 1 || person.Box.Max.X >= f.Width-1 || person.Box.Max.Y >= f.Height-1; !cut {
			// Feet at the frame's edge are guessed by the keypoint model, not seen.
			g.Add(t, person.Skeleton, person.Box)
		}
		if a, ok := fd.Add(t, person.Skeleton, person.Box); ok {
			p.raise(a, person, seq)
		}
	}
	p.handOver(t, people, seen, seq)
	// A person unseen on this frame may be down and lost by the detector: their descent is
	// judged all the same.
	for id, fd := range p.falls {
		if seen[id] {
			continue
		}
		if a, ok := fd.Tick(t); ok {
			last := p.lastSeen[id]
			last.TrackID = id
			p.raise(a, last, seq)
		}
	}
	// Forget the tracks that have ended, but not a descent still waiting for confirmation.
	live := p.live
	clear(live)
	for _, tr := range p.tracker.Active() {
		live[tr.ID] = true
	}
	for id, w := range p.spans {
		if !live[id] {
			p.ended = append(p.ended, p.summary(w))
			delete(p.spans, id)
			delete(p.gait, id)
		}
	}
	for id, fd := range p.falls {
		if _, pending := fd.Pending(); !live[id] && !pending {
			delete(p.falls, id)
			delete(p.lastSeen, id)
		}
	}
	return Result{People: people, Falls: p.confirmed, Ended: p.ended,
		Timings: Timings{Track: t2.Sub(t1), Pose: t3.Sub(t2), Analyze: time.Since(t3)}}, nil
}

// estimate finds the skeleton of every tracked person on the frame, the estimators working
// side by side (each on every n-th person, so the result does not depend on timing).
func (p *Pipeline) estimate(ctx context.Context, f vision.Frame, dets []detect.Detection, tracks []*track.Track) ([]pose.Skeleton, error) {
	if cap(p.skeletons) < len(dets) {
		p.skeletons = make([]pose.Skeleton, len(dets))
	}
	skeletons := p.skeletons[:len(dets)]
	clear(skeletons)
	errs := p.errs[:len(p.ests)]
	clear(errs)
	// A person coming down (a descent waiting for confirmation) whose box is as wide as high
	// may be lying: the keypoint model sees them far better turned upright. Only then, for it
	// costs four runs of the model. Not for the floor rule: turned every way, the model finds
	// a lying torso in a desk or a bed that the detector scores weakly as a person (measured
	// on the UP-Fall Cam2 clips: five false "on the floor" alerts on its desk).
	if cap(p.anyWay) < len(dets) {
		p.anyWay = make([]bool, len(dets))
	}
	anyWay := p.anyWay[:len(dets)]
	for i, d := range dets {
		anyWay[i] = false
		if tracks[i] == nil || 10*d.Box.Dx() < 9*d.Box.Dy() {
			continue
		}
		if fd := p.falls[tracks[i].ID]; fd != nil {
			_, anyWay[i] = fd.Pending()
		}
	}
	// Each worker estimates every len(p.ests)-th person. A panic in one (on a goroutine of its
	// own, outside the server's interceptors) becomes its error.
	work := func(w int) {
		errs[w] = panics.Catch("ward pose worker", func() error {
			for i := w; i < len(dets); i += len(p.ests) {
				if tracks[i] == nil {
					continue
				}
				estimate := p.ests[w].Estimate
				if anyWay[i] {
					estimate = p.ests[w].EstimateAnyWayUp
				}
				s, err := estimate(ctx, f, dets[i].Box)
				if err != nil {
					return err
				}
				skeletons[i] = s
			}
			return nil
		})
	}
	if len(dets) < 2 || len(p.ests) == 1 {
		for w := range p.ests {
			work(w)
		}
	} else {
		var wg sync.WaitGroup
		for w := range p.ests {
			wg.Add(1)
			go func() { defer wg.Done(); work(w) }()
		}
		wg.Wait()
	}
	return skeletons, errors.Join(errs...)
}

// handOver checks a descent whose person was not seen on this frame against the people first
// seen within the last second near where it happened: the detector often loses a person coming
// down (the box changes shape fast) and finds them again as someone new, or finds only part of
// them.
func (p *Pipeline) handOver(t time.Time, people []Person, seen map[int64]bool, seq int64) {
	for id, fd := range p.falls {
		at, pending := fd.Pending()
		if seen[id] || !pending {
			continue
		}
		best, bestDist := -1, fd.Standing()
		for i, person := range people {
			if w := p.spans[person.TrackID]; w != nil && t.Sub(w.First) > p.cfg.Fall.Confirm {
				continue // someone followed for a while, such as a carer beside the person: not them
			}
			if d := p.distance(person, at); d <= bestDist {
				best, bestDist = i, d
			}
		}
		if best < 0 {
			continue
		}
		seen[id] = true
		p.lastSeen[id] = people[best]
		if a, ok := fd.Add(t, people[best].Skeleton, people[best].Box); ok {
			p.raise(a, people[best], seq)
		}
	}
}

// lostNear finds the fall detector of a person lost a moment ago near where a new track
// starts, and takes it over for the new track: the detector loses a falling person, whose box
// changes shape and place faster than the tracker follows, and finds them again as someone
// new. The fall is judged on the whole of the movement, not on its second half alone.
func (p *Pipeline) lostNear(t time.Time, person Person, seen map[int64]bool) *fall.Detector {
	bestID, bestDist := int64(0), math.Inf(1)
	for id, fd := range p.falls {
		last, at := fd.LastSeen()
		if seen[id] || last.IsZero() || t.Sub(last) > p.cfg.Fall.Confirm || fd.Standing() == 0 {
			continue
		}
		if d := p.distance(person, at); d <= fd.Standing() && d < bestDist {
			bestID, bestDist = id, d
		}
	}
	if math.IsInf(bestDist, 1) {
		return nil
	}
	fd := p.falls[bestID]
	delete(p.falls, bestID)
	delete(p.lastSeen, bestID)
	return fd
}

// overlapped says whether another person covers more than a fifth of this person's box, or
// whether this box is a looser second box around a better-scored person. Two boxes one of
// which holds four fifths of the other are one person found twice (the detector finds a
// person coming down both whole and in part): the better scored is the person.
func overlapped(person Person, people []Person) bool {
	for _, o := range people {
		if o.TrackID == person.TrackID {
			continue
		}
		mine, theirs := geom.Inside(person.Box, o.Box), geom.Inside(o.Box, person.Box)
		if max(mine, theirs) >= 0.8 {
			if o.Score > person.Score {
				return true // the same person, better found by the other box
			}
			continue
		}
		if mine > 0.2 {
			return true
		}
	}
	return false
}

// distance is how far a person's hips (or, unseen, the middle of their box) are from a point,
// in pixels.
func (p *Pipeline) distance(person Person, at image.Point) float64 {
	x, y, ok := person.Skeleton.Mean(p.cfg.Fall.MinScore, pose.LeftHip, pose.RightHip)
	if !ok {
		x, y = float64(person.Box.Min.X+person.Box.Max.X)/2, float64(person.Box.Min.Y+person.Box.Max.Y)/2
	}
	return math.Hypot(x-float64(at.X), y-float64(at.Y))
}

// raise adds an alert to the frame's, unless one was raised at the same place (within the
// longer side of either person's box) within the fall rules' cooldown: a person on the floor
// is often followed as two or three tracks in turn, each with its own rules, and is still one
// person to go to.
func (p *Pipeline) raise(a fall.Alert, person Person, seq int64) {
	c := centreOf(person.Box)
	long := float64(max(person.Box.Dx(), person.Box.Dy()))
	kept := p.raised[:0]
	for _, r := range p.raised {
		if a.At.Sub(r.at) < p.cfg.Fall.Cooldown {
			kept = append(kept, r)
		}
	}
	p.raised = kept
	for _, r := range p.raised {
		if math.Hypot(c.X-r.where.X, c.Y-r.where.Y) <= math.Max(long, r.long) {
			return
		}
	}
	p.raised = append(p.raised, raised{at: a.At, where: c, long: long})
	p.confirmed = append(p.confirmed, p.fall(a, person, seq))
}

// floorPoint is a point of the frame, in pixels.
type floorPoint struct{ X, Y float64 }

// raised is an alert already raised: when, where (the middle of the person's box) and the
// longer side of that box.
type raised struct {
	at    time.Time
	where floorPoint
	long  float64
}

func centreOf(r image.Rectangle) floorPoint {
	return floorPoint{float64(r.Min.X+r.Max.X) / 2, float64(r.Min.Y+r.Max.Y) / 2}
}

// fall dresses an alert with the person and the frames it spans.
func (p *Pipeline) fall(a fall.Alert, person Person, seq int64) Fall {
	f := Fall{TrackID: person.TrackID, Alert: a, Person: person, FirstSeq: seq, LastSeq: seq}
	for _, s := range p.recent {
		if !s.at.Before(a.Start) {
			f.FirstSeq = s.seq
			break
		}
	}
	return f
}

// summary completes a track's record with its gait and fall-risk indicators.
func (p *Pipeline) summary(w *Summary) Summary {
	out := *w
	out.Risk = nil
	if g, ok := p.gait[w.TrackID]; ok {
		if s, ok := g.Summarize(); ok {
			out.Gait = s
			out.Risk = risk.FromGait(s)
		}
	}
	if fd, ok := p.falls[w.TrackID]; ok {
		if d, rose := fd.Rise(); rose {
			out.Risk = append(out.Risk, risk.RiseTime(d))
		}
	}
	return out
}

// Summaries is what was measured so far of every live track: for a stream that ends, its last
// summaries.
func (p *Pipeline) Summaries() []Summary {
	var out []Summary
	for _, w := range p.spans {
		out = append(out, p.summary(w))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TrackID < out[j].TrackID })
	return out
}

// ActiveTracks is how many tracks are live, seen on the last frame or briefly unseen.
func (p *Pipeline) ActiveTracks() int { return len(p.tracker.Active()) }

// TracksStarted is how many track IDs were given out so far.
func (p *Pipeline) TracksStarted() int64 { return p.tracker.Started() }

// Switches is how many identity switches the tracker has likely made so far (see
// track.Tracker.Switches).
func (p *Pipeline) Switches() int { return p.tracker.Switches() }

// Gait is a live track's gait summary so far.
func (p *Pipeline) Gait(trackID int64) (gait.Summary, bool) {
	g, ok := p.gait[trackID]
	if !ok {
		return gait.Summary{}, false
	}
	return g.Summarize()
}

// maxRecent bounds the frames remembered by capture time: 10 s at 60 frames a second.
const maxRecent = 600

// remember records a frame's capture time and sequence number, and forgets those over 10 s
// older, or beyond maxRecent.
func (p *Pipeline) remember(t time.Time, seq int64) {
	p.recent = append(p.recent, stamp{t, seq})
	drop := 0
	for drop < len(p.recent) && (t.Sub(p.recent[drop].at) > 10*time.Second || len(p.recent)-drop > maxRecent) {
		drop++
	}
	if drop > 0 {
		p.recent = append(p.recent[:0], p.recent[drop:]...)
	}
}
