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

// TestCameraLabelsAreBounded: 200 invented camera IDs make at most MaxCameraLabels series and
// one "other"; when their streams end, their series leave.
func TestCameraLabelsAreBounded(t *testing.T) {
	m := NewMetrics()
	var releases []func()
	for i := range 200 {
		label, done := m.cameraLabel(fmt.Sprintf("cam-%d", i))
		m.wardFrames.WithLabelValues(label, "processed").Inc()
		releases = append(releases, done)
	}
	series := cameraSeries(t, m)
	if len(series) != MaxCameraLabels+1 || !series["other"] || !series["cam-0"] || series["cam-199"] {
		t.Errorf("%d camera series (other %v, cam-0 %v, cam-199 %v), want %d and other", len(series), series["other"], series["cam-0"], series["cam-199"], MaxCameraLabels)
	}
	// Two streams of one camera: the series stays until the second ends.
	again, doneAgain := m.cameraLabel("cam-0")
	if again != "cam-0" {
		t.Errorf("a second stream of cam-0 counts under %q", again)
	}
	for _, done := range releases {
		done()
	}
	if series := cameraSeries(t, m); !series["cam-0"] || series["cam-1"] {
		t.Errorf("after the streams ended: cam-0 %v (one stream open), cam-1 %v", series["cam-0"], series["cam-1"])
	}
	doneAgain()
	if series := cameraSeries(t, m); series["cam-0"] {
		t.Error("cam-0's series outlived its last stream")
	}
	if label, _ := m.cameraLabel("cam-500"); label != "cam-500" {
		t.Errorf("a freed slot is not reused: %q", label)
	}
}
