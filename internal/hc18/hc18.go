// Package hc18 reads the shared HC18 fetal head folders (../shared/data/ultrasound-hc18 and
// ultrasound-hc18-late, the same format and split rule, subjects 000-559 and 561-805) and
// wraps its images as the calibrated ultrasound DICOM files a scanner would send, for
// `vigil eval biometry`, the demo and the tests.
package hc18

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/png" // the HC18 images
	"os"
	"path/filepath"
	"strconv"

	"github.com/vigil-health/vigil/dicomio"
)

// Folder is the shared fetal head folder: train.csv (file, pixel size in mm, the sonographer's
// HC in mm) and the images under train/.
type Folder struct {
	Dir    string
	Images []Image
}

// Image is one labelled image.
type Image struct {
	// Folder is the base name of the folder it came from (ultrasound-hc18, ultrasound-hc18-late).
	Folder     string
	File       string
	Subject    int
	PixelMM    float64
	HC         float64
	Split      string
	pathOnDisk string
}

// SharedFolders are the shared data's HC18 folders, first the one of earlier pregnancy (heads of
// 44-196 mm), then the later one (160-346 mm).
var SharedFolders = []string{"ultrasound-hc18", "ultrasound-hc18-late"}

// The split by subject, as models/fetal-head/train.py makes it: a subject's images (NNN_HC,
// NNN_2HC, ...) are on one side.
const (
	HeldApart = "test"  // subject % 5 == 0: reported, never trained or tuned on
	Tune      = "tune"  // subject % 10 == 3: where the quality limits were chosen
	Train     = "train" // every other subject
)

func splitOf(subject int) string {
	switch {
	case subject%5 == 0:
		return HeldApart
	case subject%10 == 3:
		return Tune
	}
	return Train
}

// Read reads the folder's train.csv.
func Read(dir string) (*Folder, error) {
	f, err := os.Open(filepath.Join(dir, "train.csv"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	h := &Folder{Dir: dir}
	for i, row := range rows {
		if i == 0 {
			continue
		}
		if len(row) != 3 || len(row[0]) < 3 {
			return nil, fmt.Errorf("%s line %d: want file, pixel size, HC", f.Name(), i+1)
		}
		subject, err1 := strconv.Atoi(row[0][:3])
		px, err2 := strconv.ParseFloat(row[1], 64)
		hc, err3 := strconv.ParseFloat(row[2], 64)
		if err := errors.Join(err1, err2, err3); err != nil || px <= 0 || hc <= 0 {
			return nil, fmt.Errorf("%s line %d: %v", f.Name(), i+1, row)
		}
		h.Images = append(h.Images, Image{Folder: filepath.Base(filepath.Clean(dir)), File: row[0], Subject: subject, PixelMM: px, HC: hc, Split: splitOf(subject),
			pathOnDisk: filepath.Join(dir, "train", row[0])})
	}
	return h, nil
}

// All, as a split, is every image: for a folder of other subjects, which no split rule covers.
const All = "all"

// Of returns the images of one split, or all of them.
func (h *Folder) Of(split string) []Image {
	var out []Image
	for _, im := range h.Images {
		if im.Split == split || split == All {
			out = append(out, im)
		}
	}
	return out
}

// FetalHeadDICOM wraps the image as a calibrated ultrasound DICOM file, as a scanner would
// send it: the pixel size becomes the ultrasound region's Physical Delta X/Y in cm, and the
// descriptions name an obstetric exam. uncalibrated leaves the region out.
func (im Image) FetalHeadDICOM(uncalibrated bool) ([]byte, error) {
	data, err := os.ReadFile(im.pathOnDisk)
	if err != nil {
		return nil, err
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", im.File, err)
	}
	b := img.Bounds()
	grey, ok := img.(*image.Gray)
	if !ok || grey.Stride != b.Dx() {
		grey = image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
		draw.Draw(grey, grey.Bounds(), img, b.Min, draw.Src)
	}
	u := dicomio.GreyUltrasound{Width: b.Dx(), Height: b.Dy(), Frames: [][]byte{grey.Pix},
		StudyDescription: "OB ultrasound", SeriesDescription: "Fetal biometry", Manufacturer: "HC18 (Radboudumc), wrapped by Vigil"}
	if !uncalibrated {
		u.MMPerPixel = im.PixelMM
	}
	return dicomio.UltrasoundDICOM(&u)
}
