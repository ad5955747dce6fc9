package vision

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // DecodeConfig reads JPEG headers
	_ "image/png"  // and PNG headers
)

// ErrDecode means bytes could not be decoded as an image.
var ErrDecode = errors.New("vision: cannot decode image")

// ErrNoCGO is returned by every function of a binary built without cgo: OpenCV is a C++
// library.
var ErrNoCGO = errors.New("vision: this binary was built without cgo (CGO_ENABLED=0), so OpenCV is unavailable")

// Frame is an 8-bit BGR image, rows top to bottom, no padding: len(BGR) == Width*Height*3.
type Frame struct {
	Width, Height int
	BGR           []byte
}

// At returns the blue, green and red values at (x, y).
func (f Frame) At(x, y int) (b, g, r byte) {
	i := (y*f.Width + x) * 3
	return f.BGR[i], f.BGR[i+1], f.BGR[i+2]
}

// Mark is one annotation: a rectangle (in the image's pixels), its colour and a caption, and
// an ellipse when one was fitted.
type Mark struct {
	Rect    image.Rectangle
	Color   color.RGBA
	Caption string
	Ellipse *Ellipse
}

// Ellipse is an ellipse in image pixels: its centre, its full axes (Width along the direction
// Angle gives, Height across it) and Angle in degrees, clockwise from the x axis as OpenCV
// has it (y points down).
type Ellipse struct {
	CX, CY, Width, Height, Angle float64
}

// ErrTooFewPoints means an ellipse was asked of fewer than five points.
var ErrTooFewPoints = errors.New("vision: an ellipse needs at least five points")

// Line is a straight line to draw, such as a bone of a skeleton.
type Line struct {
	From, To image.Point
	Color    color.RGBA
}

// ErrTooLarge means an image's header declares more pixels than allowed.
var ErrTooLarge = errors.New("vision: image too large")

// CheckSize reads a JPEG or PNG header (without decoding the pixels) and refuses an image
// wider or taller than maxSide, so that a forged header cannot make the decoder allocate.
func CheckSize(data []byte, maxSide int) (width, height int, err error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, 0, fmt.Errorf("%w: header says %d x %d", ErrDecode, cfg.Width, cfg.Height)
	}
	if cfg.Width > maxSide || cfg.Height > maxSide {
		return 0, 0, fmt.Errorf("%w: %d x %d is over %d x %d", ErrTooLarge, cfg.Width, cfg.Height, maxSide, maxSide)
	}
	return cfg.Width, cfg.Height, nil
}
