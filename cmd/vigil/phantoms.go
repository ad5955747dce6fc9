package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/vigil-health/vigil/pipelines/usframe"
	"io"
	"os"
	"path/filepath"

	"github.com/vigil-health/vigil/dicomio"
)

// runPhantoms writes synthetic ultrasound loops: DICOM files with their truth as JSON, or
// (with --training) the model's training arrays.
func runPhantoms(g *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("phantoms", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "folder for phantom-SEED.dcm and phantom-SEED.json")
	training := fs.String("training", "", "folder for the training arrays (frames.u8, masks.u8, meta.json) instead")
	count := fs.Int("count", 6, "how many loops")
	seed := fs.Uint64("seed", 100000, "first seed; seeds from 100000 are held out of training")
	frames := fs.Int("frames", 8, "frames per loop")
	size := fs.Int("size", 128, "model input size (with --training)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*out == "") == (*training == "") {
		return usageError{"give --out DIR (DICOM phantoms) or --training DIR (training arrays)"}
	}
	dir := *out + *training
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if *training != "" {
		return writeTraining(dir, *seed, *count, *frames, *size, stdout)
	}
	for i := 0; i < *count; i++ {
		s := *seed + uint64(i)
		p := dicomio.MakePhantom(dicomio.PhantomSpecForSeed(s, *frames))
		data, err := dicomio.PhantomDICOM(&p)
		if err != nil {
			return err
		}
		base := filepath.Join(dir, fmt.Sprintf("phantom-%d", s))
		if err := os.WriteFile(base+".dcm", data, 0o644); err != nil {
			return err
		}
		truth, _ := json.MarshalIndent(p.Truth, "", "  ")
		if err := os.WriteFile(base+".json", truth, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s.dcm: %d x %d, %d frames, %d lesions, %.3f mm/px\n", base, p.Truth.Cols, p.Truth.Rows, p.Truth.Frames, len(p.Truth.Lesions), p.Truth.MMPerPixel)
	}
	return nil
}

// writeTraining writes every frame's crop, prepared exactly as the triage pipeline prepares
// model input, with its label mask (0 background, 1 hypoechoic, 2 hyperechoic).
func writeTraining(dir string, seed uint64, count, frames, size int, stdout io.Writer) error {
	fx, err := os.Create(filepath.Join(dir, "frames.u8"))
	if err != nil {
		return err
	}
	defer fx.Close()
	fm, err := os.Create(filepath.Join(dir, "masks.u8"))
	if err != nil {
		return err
	}
	defer fm.Close()
	n := 0
	for i := 0; i < count; i++ {
		p := dicomio.MakePhantom(dicomio.PhantomSpecForSeed(seed+uint64(i), frames))
		t := p.Truth
		crop := usframe.Rect{X0: t.Region[0], Y0: t.Region[1], X1: t.Region[2] + 1, Y1: t.Region[3] + 1}
		for f := range p.Frames {
			pix := usframe.Resize(p.Frames[f], t.Cols, crop, size, size)
			b := make([]byte, len(pix))
			for k, v := range pix {
				b[k] = byte(v + 0.5)
			}
			if _, err := fx.Write(b); err != nil {
				return err
			}
			if _, err := fm.Write(usframe.ResizeLabels(p.Masks[f], t.Cols, crop, size, size)); err != nil {
				return err
			}
			n++
		}
	}
	meta, _ := json.Marshal(map[string]any{"count": n, "size": size, "first_seed": seed, "loops": count})
	fmt.Fprintf(stdout, "wrote %d training frames of %d x %d to %s\n", n, size, size, dir)
	return os.WriteFile(filepath.Join(dir, "meta.json"), meta, 0o644)
}
