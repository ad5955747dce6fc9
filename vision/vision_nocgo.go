//go:build !cgo

// Package vision is Vigil's only door to OpenCV, which needs cgo. This is the build without
// it: every function returns ErrNoCGO.
package vision

// Video is unavailable without cgo.
type Video struct{}

func Decode([]byte) (Frame, error)                         { return Frame{}, ErrNoCGO }
func DecodeInto(*Frame, []byte) error                      { return ErrNoCGO }
func Resize(Frame, int, int) (Frame, error)                { return Frame{}, ErrNoCGO }
func ResizeInto(*Frame, Frame, int, int) error             { return ErrNoCGO }
func OpenVideo(string) (*Video, error)                     { return nil, ErrNoCGO }
func (v *Video) FPS() float64                              { return 0 }
func (v *Video) Read() (Frame, error)                      { return Frame{}, ErrNoCGO }
func (v *Video) Close() error                              { return nil }
func DecodeJPEG2000([]byte, int, int, int) ([]byte, error) { return nil, ErrNoCGO }
func AnnotatePNG([]byte, int, int, int, []Mark) ([]byte, error) {
	return nil, ErrNoCGO
}
func AnnotateFramePNG(Frame, []Mark, []Line) ([]byte, error) { return nil, ErrNoCGO }

func EncodeJPEG(Frame, int) ([]byte, error) { return nil, ErrNoCGO }

func FitEllipse([][2]float64) (Ellipse, error) { return Ellipse{}, ErrNoCGO }
