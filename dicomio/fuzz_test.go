package dicomio

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
)

// FuzzOpen feeds the reader arbitrary bytes, seeded with every shared DICOM file: it must
// return an error or frames, never panic, and never allocate past its limits.
//
//	go test ./dicomio -run '^$' -fuzz FuzzOpen -fuzztime 10m
func FuzzOpen(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testenv.SharedDir(), "dicom", "*", "*.dcm"))
	if len(files) == 0 {
		f.Fatal("no shared DICOM files to seed the fuzzer: see internal/testenv")
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// Seeds are cut to keep each run quick; the fuzzer explores from there.
		if len(data) > 64<<10 {
			data = data[:64<<10]
		}
		f.Add(data)
	}
	limits := Limits{MaxFrames: 64, MaxRows: 1024, MaxCols: 1024, MaxBytes: 8 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(bytes.NewReader(data), Options{Limits: limits})
		if err != nil {
			return
		}
		for i := 0; i < 64; i++ {
			fr, err := r.Next()
			if err == io.EOF || err != nil {
				return
			}
			if fr.Width*fr.Height > 1024*1024 {
				t.Fatalf("a frame of %d x %d passed limits of 1024 x 1024", fr.Width, fr.Height)
			}
		}
	})
}
