package server

import (
	"fmt"
	"testing"
)

// cameraSeries counts the ward frame series on /metrics by camera label.
func cameraSeries(t *testing.T, m *Metrics) map[string]bool {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "vigil_ward_frames_total" {
			continue
		}
		for _, metric := range f.Metric {
			for _, l := range metric.Label {
				if l.GetName() == "camera" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestCameraLabelsAreBounded: 200 invented camera IDs make MaxCameraLabels series and one
// "other"; a camera seen before keeps its own.
func TestCameraLabelsAreBounded(t *testing.T) {
	m := NewMetrics()
	for i := range 200 {
		m.wardFrames.WithLabelValues(m.cameraLabel(fmt.Sprintf("cam-%d", i)), "processed").Inc()
	}
	series := cameraSeries(t, m)
	if len(series) != MaxCameraLabels+1 || !series["other"] || !series["cam-0"] || series["cam-199"] {
		t.Errorf("%d camera series (other %v, cam-0 %v, cam-199 %v), want %d and other", len(series), series["other"], series["cam-0"], series["cam-199"], MaxCameraLabels)
	}
	if label := m.cameraLabel("cam-0"); label != "cam-0" {
		t.Errorf("a camera seen before counts under %q", label)
	}
	if label := m.cameraLabel("other"); label != "other" {
		t.Errorf("a camera named other: %q", label)
	}
}
