// Package usframe is what the ultrasound pipelines (triage and biometry) share: a frame as
// 8-bit grey, the ultrasound region it is cropped to, its resizing to a model's input, and
// the model they run.
package usframe

import (
	"context"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
)

// Model is what an ultrasound pipeline needs of an inference session: its manifest, and a run.
type Model interface {
	Manifest() *models.Manifest
	Run(ctx context.Context, inputs []inference.Tensor) ([]inference.Tensor, error)
}

// Rect is a pixel rectangle: X0, Y0 inclusive, X1, Y1 exclusive.
type Rect struct{ X0, Y0, X1, Y1 int }

// Dx and Dy are the rectangle's width and height.
func (r Rect) Dx() int { return r.X1 - r.X0 }
func (r Rect) Dy() int { return r.Y1 - r.Y0 }

// Grey returns a frame as 8-bit grey: colour through Rec. 601 luma, 16-bit scaled by its
// largest value.
func Grey(f dicomio.Frame) []byte {
	n := f.Width * f.Height
	switch {
	case f.Pix16 != nil:
		var top uint16 = 1
		for _, v := range f.Pix16 {
			top = max(top, v)
		}
		out := make([]byte, n)
		for i, v := range f.Pix16 {
			out[i] = byte(uint32(v) * 255 / uint32(top))
		}
		return out
	case f.Samples == 3:
		out := make([]byte, n)
		for i := 0; i < n; i++ {
			p := f.Pix[3*i:]
			out[i] = byte((299*uint32(p[0]) + 587*uint32(p[1]) + 114*uint32(p[2]) + 500) / 1000)
		}
		return out
	}
	return f.Pix
}

// CropRect chooses the part of the image the model looks at: the first 2D region of the
// Sequence of Ultrasound Regions when there is one, otherwise the box around the largest
// bright area (the sector; burned-in text is small and left out). It reports the calibration
// in mm per pixel when the region gives one.
func CropRect(inst dicomio.Instance, grey []byte, width, height int) (r Rect, mmX, mmY float64, calibrated bool) {
	for _, reg := range inst.Regions {
		if reg.SpatialFormat != 1 {
			continue
		}
		r = Rect{max(reg.X0, 0), max(reg.Y0, 0), min(reg.X1+1, width), min(reg.Y1+1, height)}
		if r.Dx() < 16 || r.Dy() < 16 {
			continue
		}
		mmX, mmY, calibrated = reg.MillimetresPerPixel()
		return r, mmX, mmY, calibrated
	}
	return findSector(grey, width, height), 0, 0, false
}

// findSector is the bounding box of the largest connected bright area, found on a grid of
// 4 x 4 pixel cells.
func findSector(grey []byte, width, height int) Rect {
	const cell, threshold = 4, 6
	gw, gh := (width+cell-1)/cell, (height+cell-1)/cell
	bright := make([]bool, gw*gh)
	for gy := 0; gy < gh; gy++ {
		for gx := 0; gx < gw; gx++ {
			sum, n := 0, 0
			for y := gy * cell; y < min((gy+1)*cell, height); y++ {
				for x := gx * cell; x < min((gx+1)*cell, width); x++ {
					sum += int(grey[y*width+x])
					n++
				}
			}
			bright[gy*gw+gx] = sum > threshold*n
		}
	}
	best, bestBox := 0, Rect{0, 0, width, height}
	seen := make([]bool, len(bright))
	stack := []int{}
	for start := range bright {
		if !bright[start] || seen[start] {
			continue
		}
		size := 0
		box := Rect{gw, gh, 0, 0}
		stack = append(stack[:0], start)
		seen[start] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			size++
			x, y := i%gw, i/gw
			box.X0, box.Y0, box.X1, box.Y1 = min(box.X0, x), min(box.Y0, y), max(box.X1, x+1), max(box.Y1, y+1)
			for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				if nx >= 0 && ny >= 0 && nx < gw && ny < gh && bright[ny*gw+nx] && !seen[ny*gw+nx] {
					seen[ny*gw+nx] = true
					stack = append(stack, ny*gw+nx)
				}
			}
		}
		if size > best {
			best = size
			bestBox = Rect{box.X0 * cell, box.Y0 * cell, min(box.X1*cell, width), min(box.Y1*cell, height)}
		}
	}
	return bestBox
}

// Resize scales the crop of a grey image to w x h by averaging the source pixels each output
// pixel covers (an area filter, right for shrinking).
func Resize(grey []byte, width int, crop Rect, w, h int) []float32 {
	out := make([]float32, w*h)
	sx := float64(crop.Dx()) / float64(w)
	sy := float64(crop.Dy()) / float64(h)
	for oy := 0; oy < h; oy++ {
		y0 := crop.Y0 + int(float64(oy)*sy)
		y1 := max(crop.Y0+int(float64(oy+1)*sy), y0+1)
		for ox := 0; ox < w; ox++ {
			x0 := crop.X0 + int(float64(ox)*sx)
			x1 := max(crop.X0+int(float64(ox+1)*sx), x0+1)
			sum := 0
			for y := y0; y < y1; y++ {
				row := grey[y*width:]
				for x := x0; x < x1; x++ {
					sum += int(row[x])
				}
			}
			out[oy*w+ox] = float32(sum) / float32((y1-y0)*(x1-x0))
		}
	}
	return out
}

// ResizeLabels scales a label mask by taking, for each output pixel, the label at its centre.
func ResizeLabels(mask []byte, width int, crop Rect, w, h int) []byte {
	out := make([]byte, w*h)
	for oy := 0; oy < h; oy++ {
		y := crop.Y0 + int((float64(oy)+0.5)*float64(crop.Dy())/float64(h))
		for ox := 0; ox < w; ox++ {
			x := crop.X0 + int((float64(ox)+0.5)*float64(crop.Dx())/float64(w))
			out[oy*w+ox] = mask[y*width+x]
		}
	}
	return out
}
