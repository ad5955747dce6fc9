package ward

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"strings"

	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/gait"
	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/risk"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

var (
	fallColour     = color.RGBA{R: 230, G: 40, B: 40, A: 255}
	skeletonColour = color.RGBA{R: 255, G: 210, B: 0, A: 255}
)

// FloorLabel is the label of a person found lying on the floor with no fall seen: a reviewer
// tells it from a seen "fall" at a glance.
const FloorLabel = "person on the floor"

// FallFinding is a fall for the review queue, at the top priority: the frame that confirmed it
// with the person's box and skeleton drawn on it, the frames from the start of the descent to
// the confirmation, and the rules that fired.
func FallFinding(camera string, f Fall, img vision.Frame, ref review.ModelRef) (review.Finding, error) {
	var bones []vision.Line
	s := f.Person.Skeleton
	for _, b := range pose.Bones {
		p, q := s[b[0]], s[b[1]]
		if p.Score < 0.2 || q.Score < 0.2 {
			continue
		}
		bones = append(bones, vision.Line{From: image.Pt(int(p.X), int(p.Y)), To: image.Pt(int(q.X), int(q.Y)), Color: skeletonColour})
	}
	box := f.Person.Box
	label := "fall"
	var m []review.Measurement
	switch f.Kind {
	case fall.OnFloor:
		label = FloorLabel
		m = append(m, review.Measurement{Name: "time seen lying", Value: round2(f.At.Sub(f.Start).Seconds()), Unit: "s"})
	default:
		m = append(m,
			review.Measurement{Name: "hip drop", Value: round2(f.Drop), Unit: "{body_height}"},
			review.Measurement{Name: "descent speed", Value: round2(f.Speed), Unit: "{body_height}/s"},
			review.Measurement{Name: "depth below standing", Value: round2(f.Depth), Unit: "{body_height}"})
	}
	png, err := vision.AnnotateFramePNG(img, []vision.Mark{{Rect: box, Color: fallColour, Caption: fmt.Sprintf("%s: track %d", label, f.TrackID)}}, bones)
	if err != nil {
		return review.Finding{}, err
	}
	if !math.IsNaN(f.Torso) {
		m = append(m, review.Measurement{Name: "torso from vertical", Value: math.Round(f.Torso), Unit: "deg"})
	}
	return review.Finding{
		Pipeline: review.PipelineFall, Label: label, Score: f.Strength, Priority: review.PriorityFall,
		Box:          &review.Box{X: float64(box.Min.X), Y: float64(box.Min.Y), Width: float64(box.Dx()), Height: float64(box.Dy())},
		Measurements: m, Evidence: f.Reasons, Model: ref,
		Source: review.Source{CameraID: camera, TrackID: f.TrackID, StartTime: f.Start, EndTime: f.At,
			FirstSequence: f.FirstSeq, LastSequence: f.LastSeq},
		Overlay: &review.Image{MediaType: "image/png", Data: png, Width: img.Width, Height: img.Height},
	}, nil
}

// GaitFinding is a track's gait for a therapist to accept or reject: routine, or a little
// higher when fall-risk indicators are elevated. It has no picture: the figures are the
// finding.
func GaitFinding(camera string, s Summary, ref review.ModelRef) review.Finding {
	g := s.Gait
	m := []review.Measurement{
		{Name: "steps", Value: float64(g.Steps), Unit: "{steps}"},
		{Name: "cadence", Value: math.Round(g.Cadence), Unit: "/min"},
		{Name: "step time", Value: round2(g.StepTimeMean), Unit: "s"},
		{Name: "step time CV", Value: round2(g.StepTimeCV), Unit: "1"},
		{Name: "asymmetry", Value: round2(g.Asymmetry), Unit: "1"},
		{Name: "speed", Value: round2(g.SpeedBodyHeights), Unit: "{body_height}/s"},
		{Name: "sway", Value: round3(g.Sway), Unit: "{body_height}"},
	}
	if g.SpeedMetres > 0 {
		m = append(m, review.Measurement{Name: "speed", Value: round2(g.SpeedMetres), Unit: "m/s"})
	}
	label := fmt.Sprintf("gait: %.0f steps/min over %d steps", g.Cadence, g.Steps)
	pipeline, priority := review.PipelineGait, review.PriorityGait
	var evidence []string
	for _, in := range s.Risk {
		mark := "not elevated"
		if in.Elevated {
			mark = "ELEVATED"
		}
		evidence = append(evidence, fmt.Sprintf("%s (%s): %s", in.Name, mark, in.Reason))
	}
	if up := risk.Elevated(s.Risk); len(up) > 0 {
		label = "fall risk: " + strings.Join(up, ", ")
		pipeline, priority = review.PipelineFallRisk, review.PriorityFallRisk
	}
	return review.Finding{
		Pipeline: pipeline, Label: label, Score: g.Heuristic, Priority: priority,
		Measurements: m, Evidence: evidence, Model: ref,
		Source: review.Source{CameraID: camera, TrackID: s.TrackID, StartTime: s.First, EndTime: s.Last,
			FirstSequence: s.FirstSeq, LastSequence: s.LastSeq},
	}
}

// Reportable says whether a track's summary is worth a finding: a gait of enough steps.
func (s Summary) Reportable() bool { return s.Gait.Steps >= gait.MinSteps }

func round2(x float64) float64 { return geom.Round(x, 2) }
func round3(x float64) float64 { return geom.Round(x, 3) }
