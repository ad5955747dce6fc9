package dicomio

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
)

// BenchmarkDecode decodes each shared ultrasound file, one transfer syntax each, with Vigil's
// reader and with dcmtk's dcmj2pnm on the same file in the same run, and reports frames/s.
// dcmj2pnm's figure includes its process start and writing PNM files, so it understates
// dcmtk's decoder; it is the peer a PACS engineer would reach for.
func BenchmarkDecode(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(testenv.SharedDir(), "dicom", "ultrasound", "*.dcm"))
	if len(files) == 0 {
		b.Fatal("no shared ultrasound files: see internal/testenv")
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		name := filepath.Base(path)
		b.Run(name+"/vigil", func(b *testing.B) {
			frames := 0
			start := time.Now()
			for b.Loop() {
				r, err := Open(bytes.NewReader(data), withJ2K)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Next(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
					frames++
				}
			}
			b.ReportMetric(float64(frames)/time.Since(start).Seconds(), "frames/s")
		})
		// dcmtk's free build does not decode JPEG 2000: that file has no peer figure.
		if r, err := Open(bytes.NewReader(data), withJ2K); err == nil && (r.Instance().TransferSyntax == JPEG2000Lossless || r.Instance().TransferSyntax == JPEG2000) {
			continue
		}
		b.Run(name+"/dcmtk-dcmj2pnm", func(b *testing.B) {
			dir := b.TempDir()
			frames := 0
			start := time.Now()
			for b.Loop() {
				out, err := exec.Command("dcmj2pnm", "+Fa", "+op", path, filepath.Join(dir, "f")).CombinedOutput()
				if err != nil {
					b.Fatalf("dcmj2pnm: %v\n%s", err, out)
				}
				got, _ := filepath.Glob(filepath.Join(dir, "f*"))
				frames += len(got)
			}
			b.ReportMetric(float64(frames)/time.Since(start).Seconds(), "frames/s")
		})
	}
}
