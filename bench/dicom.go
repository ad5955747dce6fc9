package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/vision"
)

// measureDICOM decodes every frame of each real ultrasound file with dicomio (from memory), and
// with dcmtk's dcmj2pnm (from the file, each frame written as PNM to a temporary folder),
// interleaved. dcmj2pnm is a process per file: its start-up, measured as `dcmj2pnm --version`
// just before each run, is taken off that run; its reading and writing are not.
func measureDICOM(o Options, r *Report) error {
	files, err := filepath.Glob(filepath.Join(o.DICOMDir, "*.dcm"))
	if err != nil || len(files) == 0 {
		r.note("dicom: no .dcm files in %s; not measured", o.DICOMDir)
		return nil
	}
	o.Progress("dicom: dicomio beside dcmtk dcmj2pnm")
	dcmj2pnm, lookErr := exec.LookPath("dcmj2pnm")
	if lookErr != nil {
		r.note("dicom: dcmj2pnm (dcmtk) is not installed; only dicomio measured")
	}
	out, err := os.MkdirTemp("", "vigil-bench-dcmtk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	var startups []time.Duration
	version := func() error { return exec.Command(dcmj2pnm, "--version").Run() }
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		name := filepath.Base(path)
		ours := func() error { return decodeAll(data) }
		if err := ours(); err != nil {
			r.note("dicom: %s: dicomio: %v", name, err)
			continue
		}
		theirs := func() error {
			return exec.Command(dcmj2pnm, "-q", "+Fa", path, filepath.Join(out, "frame")).Run()
		}
		dcmtkOK := lookErr == nil
		if dcmtkOK {
			if err := theirs(); err != nil {
				r.note("dicom: %s: dcmj2pnm cannot decode it (%v)", name, err)
				dcmtkOK = false
			}
		}
		var oursT, theirsT []time.Duration
		var oursAll, theirsAll time.Duration
		for range o.Rounds {
			d, all, err := timeEach(5, ours)
			if err != nil {
				return err
			}
			oursT, oursAll = append(oursT, d...), oursAll+all
			if dcmtkOK {
				// Each run of dcmj2pnm follows a run of `dcmj2pnm --version`, whose time (its
				// start-up) is taken off: paired, they see the same state of a machine whose
				// speed drifts.
				for range 5 {
					up, _, err := timeEach(1, version)
					if err != nil {
						return err
					}
					d, _, err := timeEach(1, theirs)
					if err != nil {
						return err
					}
					startups = append(startups, up[0])
					extra := max(d[0]-up[0], 0)
					theirsT, theirsAll = append(theirsT, extra), theirsAll+extra
				}
			}
		}
		mine := row("dicom", "dicomio: "+name, 1, "file", oursT, oursAll)
		r.Rows = append(r.Rows, mine)
		if dcmtkOK {
			dt := row("dicom", "dcmtk dcmj2pnm (start-up taken off): "+name, 1, "file", theirsT, theirsAll)
			r.Rows = append(r.Rows, dt)
			r.ratio("dicom: dicomio / dcmtk p50, "+name, mine.P50/dt.P50, 1, true)
		}
	}
	if len(startups) > 0 {
		slices.Sort(startups)
		r.note("dicom: dcmj2pnm starts in %.1f ms (median of `dcmj2pnm --version`, run before each dcmtk run and taken off it)",
			float64(startups[len(startups)/2])/1e6)
	}
	return nil
}

// decodeAll reads every frame of a DICOM file into pixels.
func decodeAll(data []byte) error {
	rd, err := dicomio.Open(bytes.NewReader(data), dicomio.Options{Decoders: dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000}})
	if err != nil {
		return err
	}
	frames := 0
	for {
		_, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		frames++
	}
	if frames == 0 {
		return fmt.Errorf("no frames")
	}
	return nil
}
