package risk

import (
	"testing"
	"time"

	"github.com/vigil-health/vigil/pipelines/gait"
)

func byName(ins []Indicator) map[string]Indicator {
	m := map[string]Indicator{}
	for _, in := range ins {
		m[in.Name] = in
	}
	return m
}

func TestGaitIndicators(t *testing.T) {
	steady := gait.Summary{Steps: 20, Cadence: 105, StepTimeMean: 0.57, StepTimeCV: 0.18, SpeedBodyHeights: 0.7, Sway: 0.04}
	if up := Elevated(FromGait(steady)); len(up) != 0 {
		t.Errorf("a steady walk has %v elevated", up)
	}
	frail := gait.Summary{Steps: 12, Cadence: 80, StepTimeMean: 0.75, StepTimeCV: 0.45, SpeedBodyHeights: 0.35, Sway: 0.14}
	ins := byName(FromGait(frail))
	for _, name := range []string{"slow gait", "step-time variability", "unsteadiness"} {
		in, ok := ins[name]
		if !ok || !in.Elevated || in.Reason == "" {
			t.Errorf("%s: %+v, want elevated with a reason", name, in)
		}
	}
	if ins["slow gait"].Unit != "{body_height}/s" {
		t.Errorf("without a calibration speed is in body heights/s, got %q", ins["slow gait"].Unit)
	}
	// With a calibration, the line is 0.8 m/s.
	cal := byName(FromGait(gait.Summary{Steps: 12, SpeedBodyHeights: 0.4, SpeedMetres: 0.95}))
	if in := cal["slow gait"]; in.Unit != "m/s" || in.Elevated || in.Value != 0.95 {
		t.Errorf("0.95 m/s: %+v, want not elevated, in m/s", in)
	}
}

func TestRiseTime(t *testing.T) {
	if in := RiseTime(6 * time.Second); in.Elevated || in.Value != 6 {
		t.Errorf("6 s to get up: %+v, want not elevated", in)
	}
	if in := RiseTime(25 * time.Second); !in.Elevated || in.Unit != "s" {
		t.Errorf("25 s to get up: %+v, want elevated", in)
	}
}
