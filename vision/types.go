package vision

import (
	"errors"
	"image"
	"image/color"
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

// Mark is one annotation: a rectangle (in the image's pixels), its colour and a caption.
type Mark struct {
	Rect    image.Rectangle
	Color   color.RGBA
	Caption string
}
