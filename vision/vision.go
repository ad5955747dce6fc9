//go:build cgo

// Package vision is Vigil's only door to OpenCV (through gocv): decoding images, reading
// video, resizing. Every other package sees Frame, plain Go bytes.
//
// gocv reports many failures with empty results rather than errors (an empty Mat from
// IMDecode, false from Read); this package turns each into an error. Every Mat it creates is
// closed before the function returns.
package vision

import (
	"fmt"
	"image"
	"io"
	"math"
	"strings"

	"gocv.io/x/gocv"
)

func fromMat(m gocv.Mat) (Frame, error) {
	var f Frame
	err := copyMat(&f, m)
	return f, err
}

func toMat(f Frame) (gocv.Mat, error) {
	if f.Width <= 0 || f.Height <= 0 || len(f.BGR) != f.Width*f.Height*3 {
		return gocv.Mat{}, fmt.Errorf("vision: frame %dx%d with %d bytes is not 8-bit BGR", f.Width, f.Height, len(f.BGR))
	}
	return gocv.NewMatFromBytes(f.Height, f.Width, gocv.MatTypeCV8UC3, f.BGR)
}

// Decode decodes a JPEG, PNG or other image OpenCV reads into a BGR frame.
func Decode(data []byte) (Frame, error) {
	var out Frame
	err := DecodeInto(&out, data)
	return out, err
}

// DecodeInto is Decode into dst, whose pixels are reused when they are big enough: a stream
// decoding every frame allocates nothing in Go once warm.
func DecodeInto(dst *Frame, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: no bytes", ErrDecode)
	}
	m, err := gocv.IMDecode(data, gocv.IMReadColor)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	defer m.Close()
	return copyMat(dst, m)
}

// copyMat copies an 8-bit BGR Mat into dst, reusing dst's pixels when they are big enough.
func copyMat(dst *Frame, m gocv.Mat) error {
	if m.Empty() {
		return ErrDecode
	}
	if m.Type() != gocv.MatTypeCV8UC3 {
		return fmt.Errorf("%w: got OpenCV type %v, want 8-bit BGR", ErrDecode, m.Type())
	}
	pix, err := m.DataPtrUint8()
	if err != nil {
		return err
	}
	w, h := m.Cols(), m.Rows()
	n := w * h * 3
	if len(pix) < n {
		return fmt.Errorf("%w: %dx%d image with %d bytes", ErrDecode, w, h, len(pix))
	}
	if cap(dst.BGR) < n {
		dst.BGR = make([]byte, n)
	}
	dst.Width, dst.Height, dst.BGR = w, h, dst.BGR[:n]
	copy(dst.BGR, pix)
	return nil
}

// Resize scales a frame to width x height with bilinear interpolation.
func Resize(f Frame, width, height int) (Frame, error) {
	var out Frame
	err := ResizeInto(&out, f, width, height)
	return out, err
}

// ResizeInto is Resize into dst, whose pixels are reused when they are big enough: a caller
// resizing every frame allocates nothing in Go once warm.
func ResizeInto(dst *Frame, f Frame, width, height int) error {
	src, err := toMat(f)
	if err != nil {
		return err
	}
	defer src.Close()
	small := gocv.NewMat()
	defer small.Close()
	gocv.Resize(src, &small, image.Pt(width, height), 0, 0, gocv.InterpolationLinear)
	return copyMat(dst, small)
}

// Video reads frames from a file, a stream URL or a device.
type Video struct {
	capture *gocv.VideoCapture
	mat     gocv.Mat
}

// OpenVideo opens a video file, an rtsp:// URL or a /dev/videoN device.
func OpenVideo(source string) (*Video, error) {
	open := gocv.VideoCaptureFile
	if strings.HasPrefix(source, "rtsp://") {
		// FFmpeg reads RTSP; without this, a camera that refuses is tried again with
		// GStreamer, which only adds noise to the log.
		open = func(uri string) (*gocv.VideoCapture, error) {
			return gocv.VideoCaptureFileWithAPI(uri, gocv.VideoCaptureFFmpeg)
		}
	}
	vc, err := open(source)
	if err != nil {
		return nil, fmt.Errorf("vision: open video: %w", err)
	}
	if !vc.IsOpened() {
		vc.Close()
		return nil, fmt.Errorf("vision: cannot open video %s", source)
	}
	return &Video{capture: vc, mat: gocv.NewMat()}, nil
}

// FPS is the frame rate the source declares, or 0.
func (v *Video) FPS() float64 { return v.capture.Get(gocv.VideoCaptureFPS) }

// Read returns the next frame, or io.EOF at the end.
func (v *Video) Read() (Frame, error) {
	if !v.capture.Read(&v.mat) || v.mat.Empty() {
		return Frame{}, io.EOF
	}
	return fromMat(v.mat)
}

// Close releases the capture.
func (v *Video) Close() error {
	v.mat.Close()
	return v.capture.Close()
}

// DecodeJPEG2000 decodes a JPEG 2000 codestream (a DICOM frame) with OpenCV's OpenJPEG to
// 8-bit grey or RGB, interleaved, once its size (read from its header) matches what the
// instance declares.
func DecodeJPEG2000(data []byte, width, height, samples int) ([]byte, error) {
	// The codestream's own size is read first: OpenJPEG would allocate whatever it claims.
	w, h, err := JPEG2000Size(data)
	if err != nil {
		return nil, err
	}
	if w != width || h != height {
		return nil, fmt.Errorf("%w: JPEG 2000 frame says %d x %d, the DICOM header %d x %d", ErrDecode, w, h, width, height)
	}
	flag := gocv.IMReadColor
	if samples == 1 {
		flag = gocv.IMReadGrayScale
	}
	m, err := gocv.IMDecode(data, flag)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	defer m.Close()
	if m.Empty() {
		return nil, fmt.Errorf("%w: OpenCV could not decode the JPEG 2000 frame", ErrDecode)
	}
	if m.Cols() != width || m.Rows() != height {
		return nil, fmt.Errorf("%w: JPEG 2000 frame is %d x %d, want %d x %d", ErrDecode, m.Cols(), m.Rows(), width, height)
	}
	if samples == 1 {
		return m.ToBytes(), nil
	}
	rgb := gocv.NewMat()
	defer rgb.Close()
	gocv.CvtColor(m, &rgb, gocv.ColorBGRToRGB)
	return rgb.ToBytes(), nil
}

// AnnotatePNG draws the marks on an 8-bit grey or RGB image and encodes it as PNG. A grey
// image becomes an 8-bit palette PNG (its grey levels and the marks' colours): a third of the
// bytes of an RGB PNG, encoded three times faster.
func AnnotatePNG(pix []byte, width, height, samples int, marks []Mark) ([]byte, error) {
	var bgr []byte
	switch samples {
	case 1:
		bgr = make([]byte, 3*width*height)
		for i, v := range pix[:width*height] {
			bgr[3*i], bgr[3*i+1], bgr[3*i+2] = v, v, v
		}
		drawn, err := draw(Frame{Width: width, Height: height, BGR: bgr}, marks, nil)
		if err != nil {
			return nil, err
		}
		return greyWithMarksPNG(drawn, marks)
	case 3:
		bgr = make([]byte, 3*width*height)
		for i := 0; i < width*height; i++ {
			bgr[3*i], bgr[3*i+1], bgr[3*i+2] = pix[3*i+2], pix[3*i+1], pix[3*i]
		}
	default:
		return nil, fmt.Errorf("vision: %d samples per pixel", samples)
	}
	return annotate(Frame{Width: width, Height: height, BGR: bgr}, marks, nil)
}

// AnnotateFramePNG draws boxes and lines (a skeleton's bones, with a dot at each end) on a copy
// of a BGR frame and encodes it as PNG.
func AnnotateFramePNG(f Frame, marks []Mark, lines []Line) ([]byte, error) {
	return annotate(Frame{Width: f.Width, Height: f.Height, BGR: append([]byte(nil), f.BGR...)}, marks, lines)
}

// annotate draws on f and encodes it as PNG.
func annotate(f Frame, marks []Mark, lines []Line) ([]byte, error) {
	m, err := drawMat(f, marks, lines)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	buf, err := gocv.IMEncode(gocv.PNGFileExt, m)
	if err != nil {
		return nil, fmt.Errorf("vision: encode PNG: %w", err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}

// draw is f with the marks and lines drawn on it.
func draw(f Frame, marks []Mark, lines []Line) (Frame, error) {
	m, err := drawMat(f, marks, lines)
	if err != nil {
		return Frame{}, err
	}
	defer m.Close()
	return Frame{Width: f.Width, Height: f.Height, BGR: m.ToBytes()}, nil
}

// drawMat draws the marks and lines on a Mat holding f; the caller closes it.
func drawMat(f Frame, marks []Mark, lines []Line) (gocv.Mat, error) {
	m, err := toMat(f)
	if err != nil {
		return m, err
	}
	// gocv turns a color.RGBA into OpenCV's BGR order itself.
	for _, mk := range marks {
		c := mk.Color
		gocv.Rectangle(&m, mk.Rect, c, 2)
		if e := mk.Ellipse; e != nil {
			gocv.Ellipse(&m, image.Pt(int(math.Round(e.CX)), int(math.Round(e.CY))),
				image.Pt(int(math.Round(e.Width/2)), int(math.Round(e.Height/2))), e.Angle, 0, 360, c, 2)
		}
		if mk.Caption != "" {
			at := image.Pt(mk.Rect.Min.X, max(mk.Rect.Min.Y-6, 12))
			gocv.PutText(&m, mk.Caption, at, gocv.FontHersheySimplex, 0.45, c, 1)
		}
	}
	for _, l := range lines {
		c := l.Color
		gocv.Line(&m, l.From, l.To, c, 2)
		gocv.Circle(&m, l.From, 3, c, -1)
		gocv.Circle(&m, l.To, 3, c, -1)
	}
	return m, nil
}

// ellipseScale is how finely FitEllipse keeps its points: gocv v0.32 passes and returns
// whole pixels, so points go in multiplied by 16 and the fit comes back divided by 16 (the
// fit is the same at any scale), which keeps a sixteenth of a pixel.
const ellipseScale = 16

// FitEllipse is OpenCV's least-squares ellipse fit (fitEllipse) of points given as x, y in
// pixels.
func FitEllipse(points [][2]float64) (Ellipse, error) {
	if len(points) < 5 {
		return Ellipse{}, ErrTooFewPoints
	}
	pts := make([]image.Point, len(points))
	for i, p := range points {
		pts[i] = image.Pt(int(math.Round(p[0]*ellipseScale)), int(math.Round(p[1]*ellipseScale)))
	}
	pv := gocv.NewPointVectorFromPoints(pts)
	defer pv.Close()
	r := gocv.FitEllipse(pv)
	// gocv truncates the centre and axes to whole numbers of the scaled points: a 1/16 pixel.
	return Ellipse{CX: float64(r.Center.X) / ellipseScale, CY: float64(r.Center.Y) / ellipseScale,
		Width: float64(r.Width) / ellipseScale, Height: float64(r.Height) / ellipseScale, Angle: r.Angle}, nil
}

// EncodeJPEG encodes a BGR frame as JPEG at the given quality (1-100).
func EncodeJPEG(f Frame, quality int) ([]byte, error) {
	m, err := toMat(f)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, m, []int{gocv.IMWriteJpegQuality, quality})
	if err != nil {
		return nil, fmt.Errorf("vision: encode JPEG: %w", err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}
