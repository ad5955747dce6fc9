package vision

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"slices"
	"sync"
)

// greyWithMarksPNG encodes a grey image with coloured marks drawn on it (a BGR frame whose
// pixels are grey or one of the marks' colours) as an 8-bit palette PNG. The palette holds
// the marks' colours and 256 minus that many grey levels, so a grey pixel may move by at most
// one level in a hundred: invisible on an overlay, which is for the eye (the DICOM keeps the
// true pixels).
func greyWithMarksPNG(f Frame, marks []Mark) ([]byte, error) {
	var colours []color.RGBA
	for _, m := range marks {
		c := m.Color
		c.A = 255
		if !slices.Contains(colours, c) {
			colours = append(colours, c)
		}
	}
	if len(colours) > 16 {
		return nil, fmt.Errorf("vision: %d mark colours, at most 16 on a grey overlay", len(colours))
	}
	levels := 256 - len(colours)
	palette := make(color.Palette, 0, 256)
	for i := range levels {
		v := uint8((i*255 + (levels-1)/2) / (levels - 1))
		palette = append(palette, color.RGBA{v, v, v, 255})
	}
	for _, c := range colours {
		palette = append(palette, c)
	}
	var level [256]uint8 // grey value to its palette index
	for v := range level {
		level[v] = uint8((v*(levels-1) + 127) / 255)
	}
	img := image.NewPaletted(image.Rect(0, 0, f.Width, f.Height), palette)
	for i := range img.Pix {
		b, g, r := f.BGR[3*i], f.BGR[3*i+1], f.BGR[3*i+2]
		if b == g && g == r {
			img.Pix[i] = level[g]
			continue
		}
		k := slices.Index(colours, color.RGBA{r, g, b, 255})
		if k < 0 {
			// Not a mark's colour (drawing does not blend, so this is not expected): its grey.
			img.Pix[i] = level[(int(r)*299+int(g)*587+int(b)*114)/1000]
			continue
		}
		img.Pix[i] = uint8(levels + k)
	}
	var out bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &encoderBuffers}
	if err := enc.Encode(&out, img); err != nil {
		return nil, fmt.Errorf("vision: encode PNG: %w", err)
	}
	return out.Bytes(), nil
}

// encoderBuffers keeps the PNG encoder's compressor between overlays (it is about 1 MB).
var encoderBuffers pngBuffers

type pngBuffers struct{ pool sync.Pool }

func (p *pngBuffers) Get() *png.EncoderBuffer {
	b, _ := p.pool.Get().(*png.EncoderBuffer)
	return b
}

func (p *pngBuffers) Put(b *png.EncoderBuffer) { p.pool.Put(b) }
