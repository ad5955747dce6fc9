// Package eval measures Vigil's fall alerts against labelled clips: every clip goes through
// the real Ward path (a server on loopback, JPEG frames down a gRPC stream, as a bridge sends
// them), and each alert is matched to the falls a person marked by eye.
package eval

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Labels is a labels file: the clips, where they are, and when their falls happen.
type Labels struct {
	// Root is the clips' folder: absolute, or relative to the shared data folder.
	Root  string `yaml:"root"`
	Clips []Clip `yaml:"clips"`
}

// Clip is one labelled video.
type Clip struct {
	File string `yaml:"file"`
	// FPS is the rate the clip was filmed at; 0 takes the rate its header gives.
	FPS      float64 `yaml:"fps"`
	Activity string  `yaml:"activity"`
	Camera   string  `yaml:"camera"`
	// Note says what happens when, as the labeller saw it.
	Note string `yaml:"note"`
	// Falls are the clip's falls, from the moment the person starts to go down to the moment
	// the body reaches the ground, in seconds from the clip's start; none for daily activities.
	Falls []Interval `yaml:"falls"`
}

// Interval is a span of a clip, in seconds from its start.
type Interval struct {
	Start float64 `yaml:"start" json:"start_s"`
	End   float64 `yaml:"end" json:"end_s"`
}

// ReadLabels reads and checks a labels file.
func ReadLabels(path string) (*Labels, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l Labels
	if err := yaml.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(l.Clips) == 0 {
		return nil, fmt.Errorf("%s: no clips", path)
	}
	seen := map[string]bool{}
	for i, c := range l.Clips {
		var problem error
		switch {
		case c.File == "" || filepath.IsAbs(c.File):
			problem = errors.New("file must be a path relative to root")
		case seen[c.File]:
			problem = errors.New("listed twice")
		case c.FPS < 0 || c.FPS > 240:
			problem = fmt.Errorf("fps %v is not within 0..240", c.FPS)
		}
		for _, f := range c.Falls {
			if !(f.Start >= 0 && f.End > f.Start) {
				problem = fmt.Errorf("fall %v..%v s: start must be at least 0 and before end", f.Start, f.End)
			}
		}
		if problem != nil {
			return nil, fmt.Errorf("%s: clip %d (%s): %w", path, i+1, c.File, problem)
		}
		seen[c.File] = true
	}
	return &l, nil
}
