package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/vision"
)

// PerceptionOptions configure a measurement of how well the detector and each keypoint model
// see people lying down after a labelled fall.
type PerceptionOptions struct {
	Engine   inference.Config
	Entries  []models.Entry
	Resolver *models.Resolver
	Labels   []*Labels
	// Detector and Poses name the models to measure.
	Detector string
	Poses    []string
	// After is how long after the end of a fall the person counts as lying: the frames from
	// then to the end of the clip are measured.
	After    time.Duration
	Progress func(string)
}

// PerceptionReport is what the models saw of people lying after a fall, per source.
type PerceptionReport struct {
	Detector string             `json:"detector"`
	Poses    []string           `json:"poses"`
	Sources  []PerceptionSource `json:"sources"`
	Total    PerceptionSource   `json:"total"`
	// DetectMs is the detector's mean time a frame; PoseMs each keypoint model's mean time a
	// person, upright and tried four ways up, in milliseconds on this machine.
	DetectMs     float64   `json:"detect_ms"`
	PoseMs       []float64 `json:"pose_ms"`
	PoseAnyWayMs []float64 `json:"pose_any_way_up_ms"`
}

// PerceptionSource sums one source's lying frames: how often the detector found a person at
// the scores that start a track and that continue one, and the keypoint scores on the best
// box, upright and any way up, per pose model.
type PerceptionSource struct {
	Name   string `json:"name"`
	Falls  int    `json:"falls"`
	Frames int    `json:"frames"`
	// Found is the share of frames with a person box scoring at least Threshold (which starts a
	// track), Weak at least 0.2 (which continues one).
	Found float64 `json:"found_start"`
	Weak  float64 `json:"found_continue"`
	// Score is the median of each frame's best person score (0 when none over 0.1).
	Score float64 `json:"detector_score_median"`
	// Keypoints and AnyWay are the median mean keypoint score on the best box, per pose model,
	// over the frames with a box of 0.2 or more.
	Keypoints []float64 `json:"keypoints_median"`
	AnyWay    []float64 `json:"keypoints_any_way_up_median"`
	scores    []float64
	kps, anys [][]float64
}

// Perception runs the detector and the pose models over the frames after every labelled fall.
func Perception(ctx context.Context, o PerceptionOptions) (*PerceptionReport, error) {
	if len(o.Labels) == 0 || o.Detector == "" || len(o.Poses) == 0 {
		return nil, errors.New("eval: perception needs labels, a detector and a pose model")
	}
	if o.After == 0 {
		o.After = 500 * time.Millisecond
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	engine, err := inference.Open(o.Engine)
	if err != nil {
		return nil, err
	}
	defer engine.Close()
	reg := inference.LoadRegistry(ctx, engine, nil, o.Entries, o.Resolver)
	defer reg.Close()
	detSess, err := reg.Session(o.Detector)
	if err != nil {
		return nil, err
	}
	det, err := detect.New(detSess, "person")
	if err != nil {
		return nil, err
	}
	det.SetFloor(0.1)
	var ests []*pose.Estimator
	for _, name := range o.Poses {
		sess, err := reg.Session(name)
		if err != nil {
			return nil, err
		}
		est, err := pose.New(sess)
		if err != nil {
			return nil, err
		}
		ests = append(ests, est)
	}
	r := &PerceptionReport{Detector: o.Detector, Poses: o.Poses, PoseMs: make([]float64, len(ests)), PoseAnyWayMs: make([]float64, len(ests))}
	total := newPerceptionSource("all", len(ests))
	var detTime time.Duration
	poseTime, anyTime := make([]time.Duration, len(ests)), make([]time.Duration, len(ests))
	detRuns, poseRuns := 0, 0
	for _, l := range o.Labels {
		for _, c := range l.Clips {
			if len(c.Falls) == 0 {
				continue
			}
			name := l.source(c).Name
			i := slices.IndexFunc(r.Sources, func(s PerceptionSource) bool { return s.Name == name })
			if i < 0 {
				r.Sources = append(r.Sources, newPerceptionSource(name, len(ests)))
				i = len(r.Sources) - 1
			}
			src := &r.Sources[i]
			src.Falls++
			total.Falls++
			v, err := vision.OpenVideo(filepath.Join(l.Dir, c.File))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.File, err)
			}
			fps := c.FPS
			if fps == 0 {
				fps = v.FPS()
			}
			from := c.Falls[len(c.Falls)-1].End + o.After.Seconds()
			frames := 0
			for n := 0; ; n++ {
				f, err := v.Read()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					v.Close()
					return nil, fmt.Errorf("%s: %w", c.File, err)
				}
				if float64(n)/fps < from {
					continue
				}
				frames++
				t0 := time.Now()
				dets, err := det.Detect(ctx, f)
				if err != nil {
					v.Close()
					return nil, err
				}
				detTime += time.Since(t0)
				detRuns++
				best := detect.Detection{}
				for _, d := range dets {
					if d.Score > best.Score {
						best = d
					}
				}
				kp, any := make([]float64, len(ests)), make([]float64, len(ests))
				if best.Score >= 0.2 {
					for k, est := range ests {
						t1 := time.Now()
						s, err := est.Estimate(ctx, f, best.Box)
						if err != nil {
							v.Close()
							return nil, err
						}
						t2 := time.Now()
						a, err := est.EstimateAnyWayUp(ctx, f, best.Box)
						if err != nil {
							v.Close()
							return nil, err
						}
						poseTime[k] += t2.Sub(t1)
						anyTime[k] += time.Since(t2)
						kp[k], any[k] = s.MeanScore(), a.MeanScore()
					}
					poseRuns++
				}
				for _, s := range []*PerceptionSource{src, &total} {
					s.add(best.Score, det.Threshold(), kp, any)
				}
			}
			v.Close()
			progress(fmt.Sprintf("%s: %d frames lying", c.File, frames))
		}
	}
	for i := range r.Sources {
		r.Sources[i].finish()
	}
	total.finish()
	r.Total = total
	if detRuns > 0 {
		r.DetectMs = ms(detTime) / float64(detRuns)
	}
	for k := range ests {
		if poseRuns > 0 {
			r.PoseMs[k], r.PoseAnyWayMs[k] = ms(poseTime[k])/float64(poseRuns), ms(anyTime[k])/float64(poseRuns)
		}
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func newPerceptionSource(name string, poses int) PerceptionSource {
	return PerceptionSource{Name: name, kps: make([][]float64, poses), anys: make([][]float64, poses)}
}

// add records one frame: the best person score, and the keypoint scores on its box when it
// scored 0.2 or more.
func (s *PerceptionSource) add(score, threshold float64, kp, any []float64) {
	s.Frames++
	s.scores = append(s.scores, score)
	if score >= threshold {
		s.Found++
	}
	if score < 0.2 {
		return
	}
	s.Weak++
	for k := range kp {
		s.kps[k] = append(s.kps[k], kp[k])
		s.anys[k] = append(s.anys[k], any[k])
	}
}

func (s *PerceptionSource) finish() {
	if s.Frames > 0 {
		s.Found /= float64(s.Frames)
		s.Weak /= float64(s.Frames)
	}
	s.Score = median(s.scores)
	s.Keypoints, s.AnyWay = make([]float64, len(s.kps)), make([]float64, len(s.kps))
	for k := range s.kps {
		s.Keypoints[k], s.AnyWay[k] = median(s.kps[k]), median(s.anys[k])
	}
}

// median is the middle value, 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// WriteTable prints the measurement: a row per source, then the cost.
func (r *PerceptionReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "people lying after a fall: %s, then %v on the best box (upright / turned the best of four ways)\n\n", r.Detector, r.Poses)
	fmt.Fprintf(w, "%-18s %5s %6s %12s %13s %12s", "source", "falls", "frames", "found >=thr", "found >=0.2", "det median")
	for _, p := range r.Poses {
		fmt.Fprintf(w, " %22s", p)
	}
	fmt.Fprintln(w)
	for _, s := range append(r.Sources, r.Total) {
		fmt.Fprintf(w, "%-18s %5d %6d %11.0f%% %12.0f%% %12.2f", s.Name, s.Falls, s.Frames, 100*s.Found, 100*s.Weak, s.Score)
		for k := range r.Poses {
			fmt.Fprintf(w, " %22s", fmt.Sprintf("%.2f / %.2f", s.Keypoints[k], s.AnyWay[k]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\ncost on this machine: %s %.1f ms a frame", r.Detector, r.DetectMs)
	for k, p := range r.Poses {
		fmt.Fprintf(w, "; %s %.1f ms a person (%.1f ms four ways up)", p, r.PoseMs[k], r.PoseAnyWayMs[k])
	}
	fmt.Fprintln(w)
}
