package vision

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"runtime"
	"testing"

	"gocv.io/x/gocv"

	"github.com/vigil-health/vigil/internal/testenv"
)

func pngOf(t *testing.T, w, h int, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeGivesBGR(t *testing.T) {
	f, err := Decode(pngOf(t, 4, 3, color.RGBA{R: 200, G: 100, B: 10, A: 255}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Width != 4 || f.Height != 3 || len(f.BGR) != 4*3*3 {
		t.Fatalf("got %dx%d with %d bytes, want 4x3 with 36", f.Width, f.Height, len(f.BGR))
	}
	if b, g, r := f.At(3, 2); b != 10 || g != 100 || r != 200 {
		t.Errorf("pixel (3,2): got b=%d g=%d r=%d, want 10 100 200", b, g, r)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":       nil,
		"text":        []byte("this is not an image"),
		"cut-off png": pngOf(t, 64, 64, color.RGBA{A: 255})[:40],
	} {
		if _, err := Decode(data); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: got %v, want ErrDecode", name, err)
		}
	}
}

func TestResize(t *testing.T) {
	f, _ := Decode(pngOf(t, 8, 6, color.RGBA{R: 1, G: 2, B: 3, A: 255}))
	r, err := Resize(f, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Width != 4 || r.Height != 2 {
		t.Fatalf("got %dx%d, want 4x2", r.Width, r.Height)
	}
	if b, g, rr := r.At(1, 1); b != 3 || g != 2 || rr != 1 {
		t.Errorf("a flat image resized: got b=%d g=%d r=%d, want 3 2 1", b, g, rr)
	}
	if _, err := Resize(Frame{Width: 2, Height: 2, BGR: make([]byte, 5)}, 1, 1); err == nil {
		t.Error("a frame with the wrong byte count was resized")
	}
}

func TestVideoReadsEveryFrameOfTheWalkersClip(t *testing.T) {
	v, err := OpenVideo(testenv.Shared(t, "video/walkers-vtest.avi"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if fps := v.FPS(); fps != 10 {
		t.Errorf("got %v fps, want 10", fps)
	}
	n := 0
	for {
		f, err := v.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Width != 768 || f.Height != 576 {
			t.Fatalf("frame %d is %dx%d, want 768x576", n, f.Width, f.Height)
		}
		n++
	}
	if n != 795 {
		t.Errorf("read %d frames, want 795", n)
	}
}

func TestOpenVideoMissingFile(t *testing.T) {
	if _, err := OpenVideo("/nonexistent/clip.avi"); err == nil {
		t.Fatal("opened a file that does not exist")
	}
}

// TestAnnotateDrawsInTheColoursAsked draws a red box and a yellow line on a grey frame and
// finds them in those colours in the PNG (OpenCV's BGR order is easy to get backwards).
func TestAnnotateDrawsInTheColoursAsked(t *testing.T) {
	f := Frame{Width: 64, Height: 48, BGR: bytes.Repeat([]byte{128}, 64*48*3)}
	red, yellow := color.RGBA{R: 230, G: 40, B: 40, A: 255}, color.RGBA{R: 255, G: 210, B: 0, A: 255}
	data, err := AnnotateFramePNG(f, []Mark{{Rect: image.Rect(4, 4, 30, 40), Color: red}}, []Line{{From: image.Pt(40, 10), To: image.Pt(60, 10), Color: yellow}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   image.Point
		want color.RGBA
	}{{image.Pt(4, 20), red}, {image.Pt(50, 10), yellow}, {image.Pt(50, 30), color.RGBA{128, 128, 128, 255}}} {
		if got := color.RGBAModel.Convert(img.At(c.at.X, c.at.Y)).(color.RGBA); got != c.want {
			t.Errorf("pixel %v is %v, want %v", c.at, got, c.want)
		}
	}
	if f.BGR[0] != 128 {
		t.Error("the frame drawn on was changed")
	}
}

// TestAnnotateGreyKeepsItsLevels: a grey image comes back as a palette PNG with the marks in
// their colours and every grey pixel within one level of what it was.
func TestAnnotateGreyKeepsItsLevels(t *testing.T) {
	const w, h = 256, 40
	pix := make([]byte, w*h)
	for i := range pix {
		pix[i] = byte(i % w) // every grey level in each row
	}
	cyan, orange := color.RGBA{R: 0, G: 220, B: 255, A: 255}, color.RGBA{R: 255, G: 160, B: 0, A: 255}
	data, err := AnnotatePNG(pix, w, h, 1, []Mark{{Rect: image.Rect(10, 10, 30, 30), Color: cyan}, {Rect: image.Rect(100, 5, 140, 35), Color: orange}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := img.(*image.Paletted); !ok {
		t.Errorf("a grey overlay decodes as %T, want a palette image", img)
	}
	for _, c := range []struct {
		at   image.Point
		want color.RGBA
	}{{image.Pt(10, 20), cyan}, {image.Pt(120, 5), orange}} {
		if got := color.RGBAModel.Convert(img.At(c.at.X, c.at.Y)).(color.RGBA); got != c.want {
			t.Errorf("pixel %v is %v, want %v", c.at, got, c.want)
		}
	}
	for x := range w {
		if x >= 8 && x < 32 || x >= 98 && x < 142 {
			continue
		}
		got := color.GrayModel.Convert(img.At(x, 38)).(color.Gray).Y
		if d := int(got) - int(pix[38*w+x]); d < -1 || d > 1 {
			t.Fatalf("grey %d at x=%d came back as %d", pix[38*w+x], x, got)
		}
	}
}

// TestIntoReusesThePixels: decoding and resizing into a warm frame allocate nothing in Go and
// give the same pixels as Decode and Resize.
func TestIntoReusesThePixels(t *testing.T) {
	data := pngOf(t, 64, 48, color.RGBA{R: 200, G: 100, B: 10, A: 255})
	want, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	small, err := Resize(want, 32, 24)
	if err != nil {
		t.Fatal(err)
	}
	var f, g Frame
	if err := DecodeInto(&f, data); err != nil || !bytes.Equal(f.BGR, want.BGR) || f.Width != 64 || f.Height != 48 {
		t.Fatalf("DecodeInto: %v, %dx%d, same pixels %v", err, f.Width, f.Height, bytes.Equal(f.BGR, want.BGR))
	}
	if err := ResizeInto(&g, f, 32, 24); err != nil || !bytes.Equal(g.BGR, small.BGR) {
		t.Fatalf("ResizeInto: %v, same pixels %v", err, bytes.Equal(g.BGR, small.BGR))
	}
	// Bytes, not allocations, tell: gocv makes a few small ones per call either way, and a
	// fresh frame would be 9 kB a decode.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 20 {
		DecodeInto(&f, data)
		ResizeInto(&g, f, 32, 24)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 20*1024 {
		t.Errorf("20 warm decodes and resizes allocated %d bytes in Go, want under 20 kB (one fresh frame is 9 kB)", grew)
	}
}

// TestJPEG2000Size reads the size from a JP2 file OpenCV writes, and refuses what is not
// JPEG 2000 or whose boxes overrun.
func TestJPEG2000Size(t *testing.T) {
	m := gocv.NewMatWithSize(37, 53, gocv.MatTypeCV8UC1)
	defer m.Close()
	buf, err := gocv.IMEncode(".jp2", m)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	jp2 := append([]byte(nil), buf.GetBytes()...)
	if w, h, err := JPEG2000Size(jp2); err != nil || w != 53 || h != 37 {
		t.Errorf("JP2: %d x %d, %v; want 53 x 37", w, h, err)
	}
	for name, bad := range map[string][]byte{
		"empty":        nil,
		"a PNG header": {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"a cut JP2":    jp2[:40],
	} {
		if _, _, err := JPEG2000Size(bad); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: %v, want ErrDecode", name, err)
		}
	}
}
