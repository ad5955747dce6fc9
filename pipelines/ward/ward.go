// Package ward is the per-camera pipeline: people are detected, their skeletons estimated on
// crops, followed by the tracker, and each track's gait measured.
package ward

import (
	"context"
	"image"
	"time"

	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/gait"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/track"
	"github.com/vigil-health/vigil/vision"
)

// Config tunes one camera's pipeline.
type Config struct {
	Track track.Config
	Fall  fall.Config
	// PixelsPerMetre, when known, turns gait speed into m/s.
	PixelsPerMetre float64
	// Beds are polygons (frame pixels) where lying down raises no fall alert.
	Beds [][]image.Point
}

// Fall is a fall alert for a track.
type Fall struct {
	TrackID int64
	fall.Alert
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
	det     *detect.Detector
	est     *pose.Estimator
	tracker *track.Tracker
	gait    map[int64]*gait.Analyzer
	falls   map[int64]*fall.Detector
	cfg     Config
	// Last is the last frame's timings; Falls the alerts confirmed on it.
	Last  Timings
	Falls []Fall
}

// New builds a camera's pipeline.
func New(det *detect.Detector, est *pose.Estimator, cfg Config) *Pipeline {
	if cfg.Track == (track.Config{}) {
		cfg.Track = track.DefaultConfig
	}
	if cfg.Fall == (fall.Config{}) {
		cfg.Fall = fall.DefaultConfig
	}
	return &Pipeline{det: det, est: est, tracker: track.New(cfg.Track), gait: map[int64]*gait.Analyzer{},
		falls: map[int64]*fall.Detector{}, cfg: cfg}
}

// Process runs one frame captured at t.
func (p *Pipeline) Process(ctx context.Context, f vision.Frame, t time.Time) ([]Person, error) {
	t0 := time.Now()
	dets, err := p.det.Detect(ctx, f)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	obs := make([]track.Observation, len(dets))
	for i, d := range dets {
		obs[i] = track.Observation{Box: d.Box, Score: d.Score}
	}
	tracks := p.tracker.Update(obs)
	t2 := time.Now()
	people := make([]Person, len(dets))
	for i, d := range dets {
		s, err := p.est.Estimate(ctx, f, d.Box)
		if err != nil {
			return nil, err
		}
		people[i] = Person{TrackID: tracks[i].ID, Box: d.Box, Score: d.Score, Skeleton: s}
	}
	t3 := time.Now()
	p.Falls = p.Falls[:0]
	for _, person := range people {
		id := person.TrackID
		g := p.gait[id]
		if g == nil {
			g = &gait.Analyzer{PixelsPerMetre: p.cfg.PixelsPerMetre}
			p.gait[id] = g
		}
		g.Add(t, person.Skeleton)
		fd := p.falls[id]
		if fd == nil {
			fd = fall.New(p.cfg.Fall, p.cfg.Beds)
			p.falls[id] = fd
		}
		if a, ok := fd.Add(t, person.Skeleton); ok {
			p.Falls = append(p.Falls, Fall{TrackID: id, Alert: a})
		}
	}
	// Forget the gait of tracks that have ended.
	live := map[int64]bool{}
	for _, tr := range p.tracker.Active() {
		live[tr.ID] = true
	}
	for id := range p.gait {
		if !live[id] {
			delete(p.gait, id)
			delete(p.falls, id)
		}
	}
	p.Last = Timings{Detect: t1.Sub(t0), Track: t2.Sub(t1), Pose: t3.Sub(t2), Analyze: time.Since(t3)}
	return people, nil
}

// Gait is a live track's gait summary so far.
func (p *Pipeline) Gait(trackID int64) (gait.Summary, bool) {
	g, ok := p.gait[trackID]
	if !ok {
		return gait.Summary{}, false
	}
	return g.Summarize()
}
