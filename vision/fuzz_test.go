package vision

import (
	"bytes"
	"image"
	stdpng "image/png"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/testenv"
)

// FuzzDecodeFrame feeds a camera frame's decoding arbitrary bytes, seeded with real frames of
// the walkers clip as JPEG and PNG: the size check and the decoder return an error or pixels
// within the bound, never a panic.
//
//	go test ./vision -run '^$' -fuzz FuzzDecodeFrame -fuzztime 10m
func FuzzDecodeFrame(f *testing.F) {
	v, err := OpenVideo(testenv.Shared(f, "video/walkers-vtest.avi"))
	if err != nil {
		f.Fatal(err)
	}
	fr, err := v.Read()
	v.Close()
	if err != nil {
		f.Fatal(err)
	}
	small, err := Resize(fr, 192, 144)
	if err != nil {
		f.Fatal(err)
	}
	jpg, err := EncodeJPEG(small, 80)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(jpg)
	var png bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 32, 24))
	for i := range img.Pix {
		img.Pix[i] = small.BGR[i%len(small.BGR)]
	}
	if err := stdpng.Encode(&png, img); err != nil {
		f.Fatal(err)
	}
	f.Add(png.Bytes())
	const maxSide = 2048
	var dst Frame
	f.Fuzz(func(t *testing.T, data []byte) {
		w, h, err := CheckSize(data, maxSide)
		if err != nil {
			return
		}
		if err := DecodeInto(&dst, data); err != nil {
			return
		}
		if dst.Width != w || dst.Height != h || len(dst.BGR) != 3*w*h {
			t.Fatalf("decoded %d x %d (%d bytes), the header said %d x %d", dst.Width, dst.Height, len(dst.BGR), w, h)
		}
	})
}

// FuzzJPEG2000Instance feeds the DICOM reader, with the JPEG 2000 decoder lent, arbitrary
// bytes seeded with the shared JPEG 2000 ultrasound file: an error or frames within the
// limits, never a panic, whatever the codestream claims.
//
//	go test ./vision -run '^$' -fuzz FuzzJPEG2000Instance -fuzztime 10m
func FuzzJPEG2000Instance(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testenv.SharedDir(), "dicom", "*", "*.dcm"))
	seeded := 0
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		r, err := dicomio.Open(bytes.NewReader(data), dicomio.Options{Decoders: dicomio.Decoders{JPEG2000: DecodeJPEG2000}})
		if err != nil || r.Instance().TransferSyntax != dicomio.JPEG2000Lossless && r.Instance().TransferSyntax != dicomio.JPEG2000 {
			continue
		}
		if len(data) > 256<<10 {
			data = data[:256<<10]
		}
		f.Add(data)
		seeded++
	}
	if seeded == 0 {
		f.Fatal("no shared JPEG 2000 DICOM file to seed the fuzzer: see internal/testenv")
	}
	limits := dicomio.Limits{MaxFrames: 8, MaxRows: 1024, MaxCols: 1024, MaxBytes: 8 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := dicomio.Open(bytes.NewReader(data), dicomio.Options{Limits: limits, Decoders: dicomio.Decoders{JPEG2000: DecodeJPEG2000}})
		if err != nil {
			return
		}
		for range 8 {
			fr, err := r.Next()
			if err == io.EOF || err != nil {
				return
			}
			if fr.Width > 1024 || fr.Height > 1024 {
				t.Fatalf("a frame of %d x %d passed limits of 1024 x 1024", fr.Width, fr.Height)
			}
		}
	})
}
