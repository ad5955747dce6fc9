package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-health/vigil/internal/hc18"
)

// runFetalHeads writes real fetal head images of the shared HC18 folder as the calibrated
// obstetric ultrasound DICOM files a scanner would send (the pixel size in the ultrasound
// region, descriptions naming the exam), from the held-apart subjects by default.
func runFetalHeads(_ *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fetal-heads", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "folder for the DICOM files (NNN_HC.dcm)")
	data := fs.String("data", filepath.Join(sharedData(), "ultrasound-hc18"), "the HC18 folder")
	split := fs.String("split", hc18.HeldApart, "which subjects: test (held apart), tune, train, or all (a folder of other subjects)")
	count := fs.Int("count", 4, "how many images")
	uncalibrated := fs.Bool("uncalibrated", false, "leave the calibration out")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return usageError{"usage: vigil fetal-heads --out DIR [--count N] [--split test|tune|train|all] [--uncalibrated]"}
	}
	images, err := hc18Split(*data, *split)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, im := range images[:min(*count, len(images))] {
		dcm, err := im.FetalHeadDICOM(*uncalibrated)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, strings.TrimSuffix(im.File, ".png")+".dcm")
		if err := os.WriteFile(path, dcm, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %.4f mm/px, the sonographer's HC %.1f mm\n", path, im.PixelMM, im.HC)
	}
	return nil
}

// hc18Split reads the HC18 folder and returns one split's images.
func hc18Split(dir, split string) ([]hc18.Image, error) {
	folder, err := hc18.Read(dir)
	if err != nil {
		return nil, err
	}
	images := folder.Of(split)
	if len(images) == 0 {
		return nil, usageError{fmt.Sprintf("split %q has no images: use test, tune, train or all", split)}
	}
	return images, nil
}
