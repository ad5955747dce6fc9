package eval

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vigil-health/vigil/vision"
)

// Transform changes a clip before it is sent: a way to see how the rules hold on cameras
// unlike the ones the clips were filmed with. The rules' thresholds were not chosen on any of
// these.
type Transform struct {
	Name string
	// Every keeps one frame in Every: a camera at a lower frame rate. 0 or 1 keeps all.
	Every int
	// Frame changes a kept frame; nil leaves it as it is.
	Frame func(vision.Frame) (vision.Frame, error)
	// Point moves a point of the frame (a zone's corner) as Frame moves it; nil leaves it. A
	// transform that crops (portrait) has none: its zones stay where they were.
	Point func(x, y int) (int, int)
}

var transforms = map[string]struct {
	about string
	t     Transform
}{
	"rate-9": {"every second frame: 9 frames/s", Transform{Every: 2}},
	"rate-6": {"every third frame: 6 frames/s", Transform{Every: 3}},
	"dim":    {"dim, low-contrast and noisy, like CCTV at night", Transform{Frame: dim}},
	"portrait": {"a 9:16 window from the middle of the frame, scaled to 720 rows, like a phone held upright: people are cut by its sides",
		Transform{Frame: portrait}},
	"feet-cut": {"the lowest fifth of the frame cut away: feet out of view, and a person falling towards the camera partly out of it",
		Transform{Frame: feetCut}},
	"small": {"half the width and height: people half as tall in pixels", Transform{Frame: small, Point: func(x, y int) (int, int) { return x / 2, y / 2 }}},
}

// TransformNames lists the transforms for a flag's help.
func TransformNames() string {
	var names []string
	for name, t := range transforms {
		names = append(names, name+" ("+t.about+")")
	}
	sort.Strings(names)
	return strings.Join(names, "; ")
}

// NewTransform finds a transform by name; "" is none.
func NewTransform(name string) (*Transform, error) {
	if name == "" {
		return nil, nil
	}
	t, ok := transforms[name]
	if !ok {
		return nil, fmt.Errorf("no transform named %q: %s", name, TransformNames())
	}
	out := t.t
	out.Name = name
	return &out, nil
}

// crop copies a rectangle of a frame.
func crop(f vision.Frame, x0, y0, w, h int) vision.Frame {
	out := vision.Frame{Width: w, Height: h, BGR: make([]byte, w*h*3)}
	for y := 0; y < h; y++ {
		copy(out.BGR[y*w*3:(y+1)*w*3], f.BGR[((y0+y)*f.Width+x0)*3:])
	}
	return out
}

func portrait(f vision.Frame) (vision.Frame, error) {
	w := min(f.Width, f.Height*9/16)
	c := crop(f, (f.Width-w)/2, 0, w, f.Height)
	return vision.Resize(c, w*720/f.Height, 720)
}

func feetCut(f vision.Frame) (vision.Frame, error) { return crop(f, 0, 0, f.Width, f.Height*4/5), nil }

func small(f vision.Frame) (vision.Frame, error) { return vision.Resize(f, f.Width/2, f.Height/2) }

// dim keeps 30% of the contrast over a dark floor, with noise that is the same on every run.
func dim(f vision.Frame) (vision.Frame, error) {
	out := vision.Frame{Width: f.Width, Height: f.Height, BGR: make([]byte, len(f.BGR))}
	seed := uint32(2463534242)
	for i, v := range f.BGR {
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		x := 25 + 0.3*float64(v) + float64(int(seed%17)-8)
		out.BGR[i] = byte(min(255, max(0, x)))
	}
	return out, nil
}
