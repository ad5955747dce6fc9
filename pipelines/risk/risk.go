// Package risk turns what was measured of one person into fall-risk indicators a therapist can
// check one by one: each has its value, the line it is judged against, and the reason the line
// matters. There is no combined score.
package risk

import (
	"fmt"
	"time"

	"github.com/vigil-health/vigil/pipelines/gait"
)

// Indicator is one fall-risk sign.
type Indicator struct {
	Name  string
	Value float64
	// Unit is UCUM: "m/s", "{body_height}/s", "1" for a ratio, "s".
	Unit string
	// Elevated says the value is on the risky side of its line.
	Elevated bool
	// Reason says what the line is and why it counts.
	Reason string
}

// Lines the indicators are judged against.
const (
	// SlowMetres: walking slower than 0.8 m/s goes with falls and frailty in older adults.
	SlowMetres = 0.8
	// SlowBodyHeights is the same line without a calibration: 0.8 m/s over the 1.45 m from
	// shoulders to ankles of an adult of 1.75 m.
	SlowBodyHeights = 0.55
	// VariableCV: a camera at 7 to 10 frames/s times steps to about a frame, so steady walkers
	// measure 0.15 to 0.25 here; clinical gait labs, timing to a millisecond, draw the line
	// near 0.05. Over 0.35 is irregular beyond what the measurement adds.
	VariableCV = 0.35
	// Sway: steady walkers sway 0.02 to 0.07 body heights on the footage this line was set
	// on, and 0.024 and 0.038 on footage it was not (another subject, room and two other
	// cameras: the UP-Fall walking clips, measured through vigil bridge); over 0.1 is twice the
	// usual.
	Sway = 0.1
	// SlowToRise: healthy adults get up from the floor within about 10 s; longer points to
	// weakness, and to the risk of lying long after a fall.
	SlowToRise = 10 * time.Second
)

// FromGait returns the indicators a gait summary supports: speed, step-time variability and
// sway.
func FromGait(g gait.Summary) []Indicator {
	var out []Indicator
	if g.SpeedMetres > 0 {
		out = append(out, Indicator{Name: "slow gait", Value: g.SpeedMetres, Unit: "m/s", Elevated: g.SpeedMetres < SlowMetres,
			Reason: fmt.Sprintf("walking speed %.2f m/s; under %.1f m/s goes with falls and frailty", g.SpeedMetres, SlowMetres)})
	} else {
		out = append(out, Indicator{Name: "slow gait", Value: g.SpeedBodyHeights, Unit: "{body_height}/s", Elevated: g.SpeedBodyHeights < SlowBodyHeights,
			Reason: fmt.Sprintf("walking speed %.2f body heights/s (no calibration); under %.2f is about 0.8 m/s, the line for falls and frailty", g.SpeedBodyHeights, SlowBodyHeights)})
	}
	out = append(out,
		Indicator{Name: "step-time variability", Value: g.StepTimeCV, Unit: "1", Elevated: g.StepTimeCV > VariableCV,
			Reason: fmt.Sprintf("step times vary by %.0f%% of their mean over %d steps; irregular stepping goes with falls (over %.0f%% here, where the camera's timing adds about 20%%)", 100*g.StepTimeCV, g.Steps, 100*VariableCV)},
		Indicator{Name: "unsteadiness", Value: g.Sway, Unit: "{body_height}", Elevated: g.Sway > Sway,
			Reason: fmt.Sprintf("the hips stray %.3f body heights across the way walked; over %.2f is twice what steady walkers show", g.Sway, Sway)},
	)
	return out
}

// RiseTime is the indicator of how long a person took to get up after being down.
func RiseTime(d time.Duration) Indicator {
	return Indicator{Name: "time to get up", Value: d.Seconds(), Unit: "s", Elevated: d > SlowToRise,
		Reason: fmt.Sprintf("took %.1f s to get up after being down; over %.0f s points to weakness and to lying long after a fall", d.Seconds(), SlowToRise.Seconds())}
}

// Elevated is the names of the elevated indicators.
func Elevated(ins []Indicator) []string {
	var names []string
	for _, in := range ins {
		if in.Elevated {
			names = append(names, in.Name)
		}
	}
	return names
}
