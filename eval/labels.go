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
	Root string `yaml:"root"`
	// Sources are where the clips come from: one camera, room and set of people each. Every
	// clip names one; figures are reported per source.
	Sources []Source `yaml:"sources"`
	Clips   []Clip   `yaml:"clips"`
	// Dir is where the clips are read from: Root resolved by the caller.
	Dir string `yaml:"-"`
}

// Source is one origin of clips: a dataset's camera, a home, a room.
type Source struct {
	Name   string `yaml:"name" json:"name"`
	Camera string `yaml:"camera" json:"camera"`
	// Tuned says whether the fall rules were ever looked at or changed on this source's clips.
	// Only the figures of sources never tuned on are held out.
	Tuned bool `yaml:"tuned" json:"tuned"`
}

// Zone is a region of a clip's frame where lying (a bed) or sitting (a chair) is normal, as a
// camera's configuration would draw it.
type Zone struct {
	Name string `yaml:"name"`
	// Kind is "bed" or "chair".
	Kind string `yaml:"kind"`
	// Polygon is in the clip's pixels.
	Polygon [][2]int `yaml:"polygon"`
}

// Clip is one labelled video.
type Clip struct {
	File   string `yaml:"file"`
	Source string `yaml:"source"`
	// FPS is the rate the clip was filmed at; 0 takes the rate its header gives.
	FPS      float64 `yaml:"fps"`
	Activity string  `yaml:"activity"`
	Camera   string  `yaml:"camera"`
	// Note says what happens when, as the labeller saw it.
	Note string `yaml:"note"`
	// Falls are the clip's falls, from the moment the person starts to go down to the moment
	// the body reaches the ground, in seconds from the clip's start; none for daily activities.
	Falls []Interval `yaml:"falls"`
	// Zones are the beds and chairs of the camera's configuration.
	Zones []Zone `yaml:"zones"`
	// From and Until, when set, send only that part of the clip, in seconds from its start:
	// a camera that starts late, after a fall, say. Times stay the clip's own.
	From  float64 `yaml:"from"`
	Until float64 `yaml:"until"`
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
	sources := map[string]bool{}
	for i, src := range l.Sources {
		if src.Name == "" || sources[src.Name] {
			return nil, fmt.Errorf("%s: source %d: a name of its own is required", path, i+1)
		}
		sources[src.Name] = true
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
		case c.From < 0 || (c.Until != 0 && c.Until <= c.From):
			problem = fmt.Errorf("from %v s and until %v s: from must be at least 0 and before until", c.From, c.Until)
		case len(l.Sources) > 0 && !sources[c.Source]:
			problem = fmt.Errorf("source %q is not among the file's sources", c.Source)
		}
		for _, z := range c.Zones {
			if (z.Kind != "bed" && z.Kind != "chair") || len(z.Polygon) < 3 {
				problem = fmt.Errorf("zone %q: kind must be bed or chair, with a polygon of 3 points or more", z.Name)
			}
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

// source is the clip's source as the labels describe it; a file without sources is one
// source, named by its root.
func (l *Labels) source(c Clip) Source {
	for _, s := range l.Sources {
		if s.Name == c.Source {
			return s
		}
	}
	return Source{Name: filepath.Base(l.Root), Tuned: true}
}
