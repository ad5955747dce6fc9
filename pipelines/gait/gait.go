// Package gait measures walking from a track's keypoints: steps from the feet moving apart
// and together, and from them cadence, step time and its variability, left/right asymmetry
// and speed.
//
// A step is one peak of the distance between the ankles (feet furthest apart at each heel
// strike), so a model that swaps left and right ankles does not add or lose steps.
package gait

import (
	"math"
	"time"

	"github.com/vigil-health/vigil/pipelines/pose"
)

// MinSteps is how many steps a summary needs; with fewer, cadence is noise.
const MinSteps = 6

// sample is one frame of a walking track.
type sample struct {
	t       time.Time
	spread  float64 // ankle distance over body height
	cx      float64 // body centre x, pixels
	height  float64 // body height, pixels (shoulders to ankles)
	quality float64 // the ankles' and shoulders' mean score
}

// Analyzer follows one track's steps.
type Analyzer struct {
	samples []sample
	// PixelsPerMetre converts speed to m/s; 0 leaves speed in body heights per second.
	PixelsPerMetre float64
}

// minScore is the least keypoint confidence a frame needs to count.
const minScore = 0.25

// maxSamples bounds the window: about a minute at 10 frames per second.
const maxSamples = 600

// Add records one frame of the track's skeleton.
func (a *Analyzer) Add(t time.Time, s pose.Skeleton) {
	la, ra := s[pose.LeftAnkle], s[pose.RightAnkle]
	_, sy, okS := s.Mean(minScore, pose.LeftShoulder, pose.RightShoulder)
	hx, _, okH := s.Mean(minScore, pose.LeftHip, pose.RightHip)
	if la.Score < minScore || ra.Score < minScore || !okS || !okH {
		return
	}
	ay := (la.Y + ra.Y) / 2
	height := ay - sy
	if height <= 4 {
		return
	}
	q := (la.Score + ra.Score + s[pose.LeftShoulder].Score + s[pose.RightShoulder].Score) / 4
	a.samples = append(a.samples, sample{t: t, spread: math.Hypot(la.X-ra.X, la.Y-ra.Y) / height, cx: hx, height: height, quality: q})
	if len(a.samples) > maxSamples {
		a.samples = a.samples[len(a.samples)-maxSamples:]
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
	// Confidence combines keypoint scores and the number of steps, 0..1.
	Confidence float64
}

// Summarize returns the gait so far, and false until MinSteps steps are seen.
func (a *Analyzer) Summarize() (Summary, bool) {
	n := len(a.samples)
	if n < 5 {
		return Summary{}, false
	}
	// Smooth the spread over three frames, then find its peaks: a peak must stand out from the
	// lowest point since the previous peak, and peaks closer than a quarter second are one.
	sm := make([]float64, n)
	for i := range sm {
		lo, hi := max(i-1, 0), min(i+1, n-1)
		sum := 0.0
		for j := lo; j <= hi; j++ {
			sum += a.samples[j].spread
		}
		sm[i] = sum / float64(hi-lo+1)
	}
	var peaks []int
	valley := math.Inf(1)
	for i := 1; i < n-1; i++ {
		valley = math.Min(valley, sm[i])
		if sm[i] >= sm[i-1] && sm[i] > sm[i+1] && sm[i]-valley >= 0.08 {
			if len(peaks) > 0 && a.samples[i].t.Sub(a.samples[peaks[len(peaks)-1]].t) < 250*time.Millisecond {
				if sm[i] > sm[peaks[len(peaks)-1]] {
					peaks[len(peaks)-1] = i
				}
				continue
			}
			peaks = append(peaks, i)
			valley = math.Inf(1)
		}
	}
	if len(peaks) < MinSteps {
		return Summary{Steps: len(peaks)}, false
	}
	var times []float64
	for i := 1; i < len(peaks); i++ {
		times = append(times, a.samples[peaks[i]].t.Sub(a.samples[peaks[i-1]].t).Seconds())
	}
	mean, sd := meanSD(times)
	var odd, even []float64
	for i, t := range times {
		if i%2 == 0 {
			even = append(even, t)
		} else {
			odd = append(odd, t)
		}
	}
	mo, _ := meanSD(odd)
	me, _ := meanSD(even)
	s := Summary{Steps: len(peaks), StepTimeMean: mean, Cadence: 60 / mean}
	if mean > 0 {
		s.StepTimeCV = sd / mean
		s.Asymmetry = math.Abs(mo-me) / mean
	}
	first, last := a.samples[peaks[0]], a.samples[peaks[len(peaks)-1]]
	if dt := last.t.Sub(first.t).Seconds(); dt > 0 {
		var h float64
		for _, p := range peaks {
			h += a.samples[p].height
		}
		h /= float64(len(peaks))
		s.SpeedBodyHeights = math.Abs(last.cx-first.cx) / h / dt
		if a.PixelsPerMetre > 0 {
			s.SpeedMetres = math.Abs(last.cx-first.cx) / a.PixelsPerMetre / dt
		}
	}
	var q float64
	for _, p := range peaks {
		q += a.samples[p].quality
	}
	q /= float64(len(peaks))
	s.Confidence = q * math.Min(1, float64(len(peaks))/12) * math.Max(0, 1-s.StepTimeCV)
	return s, true
}

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
