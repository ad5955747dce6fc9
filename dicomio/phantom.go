package dicomio

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// UltrasoundMultiFrameStorage is the SOP Class of the phantoms.
const UltrasoundMultiFrameStorage = "1.2.840.10008.5.1.4.1.1.3.1"

// PhantomSpec chooses a synthetic ultrasound cine loop. The same spec and seed always give the
// same loop.
type PhantomSpec struct {
	Seed   uint64
	Rows   int
	Cols   int
	Frames int
	// Lesions is how many inclusions to place (0 for a lesion-free loop).
	Lesions int
}

// PhantomSpecForSeed is the phantom a seed stands for: its size and number of lesions follow
// from the seed, and every fifth seed has no lesion. Training uses seeds 1 to 400; seeds from
// 100000 are held out for tests, demos and the model card.
func PhantomSpecForSeed(seed uint64, frames int) PhantomSpec {
	sizes := [][2]int{{480, 640}, {600, 800}, {434, 636}, {512, 512}}
	sz := sizes[seed%uint64(len(sizes))]
	lesions := int(1 + (seed/7)%3)
	if seed%5 == 0 {
		lesions = 0
	}
	return PhantomSpec{Seed: seed, Rows: sz[0], Cols: sz[1], Frames: frames, Lesions: lesions}
}

// PhantomLesion is one inclusion's truth in one frame, in pixels of the whole image.
type PhantomLesion struct {
	Frame   int     `json:"frame"` // 1-based
	CX      float64 `json:"cx"`
	CY      float64 `json:"cy"`
	RX      float64 `json:"rx"` // semi-axes in pixels
	RY      float64 `json:"ry"`
	Box     [4]int  `json:"box"` // x, y, width, height
	Visible bool    `json:"visible"`
}

// PhantomTruth is the ground truth written beside each phantom.
type PhantomTruth struct {
	Seed        uint64             `json:"seed"`
	Rows        int                `json:"rows"`
	Cols        int                `json:"cols"`
	Frames      int                `json:"frames"`
	MMPerPixel  float64            `json:"mm_per_pixel"`
	Region      [4]int             `json:"region"` // x0, y0, x1, y1 of the ultrasound region
	ApexX       float64            `json:"apex_x"`
	ApexY       float64            `json:"apex_y"`
	Lesions     []PhantomInclusion `json:"lesions"`
	SOPInstance string             `json:"sop_instance_uid"`
	Study       string             `json:"study_instance_uid"`
}

// PhantomInclusion is one lesion with its kind, size and per-frame position.
type PhantomInclusion struct {
	Kind string `json:"kind"` // "hypoechoic" or "hyperechoic"
	// DiameterMM is the long axis (2 x the larger semi-axis) in millimetres.
	DiameterMM float64         `json:"diameter_mm"`
	Frames     []PhantomLesion `json:"frames"`
}

// Phantom is a generated loop: its frames (8-bit grey, row-major), its masks (per frame: 0
// background, 1 hypoechoic, 2 hyperechoic) and its truth.
type Phantom struct {
	Truth  PhantomTruth
	Frames [][]byte
	Masks  [][]byte
}

// sector is the fan the probe images: an apex, a radius range and a half angle.
type sector struct {
	ax, ay, r0, r1, half float64
}

func (s sector) contains(x, y float64) bool {
	dx, dy := x-s.ax, y-s.ay
	r := math.Hypot(dx, dy)
	return r >= s.r0 && r <= s.r1 && dy > 0 && math.Abs(math.Atan2(dx, dy)) <= s.half
}

// MakePhantom generates a loop: Rayleigh speckle inside a fan-shaped sector that fades with
// depth, elliptical hypo- or hyperechoic inclusions that drift a little between frames, and
// burned-in text outside the sector.
func MakePhantom(spec PhantomSpec) Phantom {
	rng := rand.New(rand.NewPCG(spec.Seed, 0x5eed))
	w, h := spec.Cols, spec.Rows
	sec := sector{ax: float64(w) / 2, ay: float64(h) * 0.06, r0: float64(h) * 0.05, r1: float64(h) * 0.92, half: (28 + 10*rng.Float64()) * math.Pi / 180}
	mmPerPixel := 0.15 + 0.15*rng.Float64()

	x0 := int(sec.ax - sec.r1*math.Sin(sec.half))
	x1 := int(sec.ax + sec.r1*math.Sin(sec.half))
	region := [4]int{max(x0, 0), int(sec.ay), min(x1, w-1), min(int(sec.ay+sec.r1), h-1)}

	type inclusion struct {
		kind           string
		cx, cy, rx, ry float64
		vx, vy         float64
		contrast       float64
	}
	var incs []inclusion
	for len(incs) < spec.Lesions {
		diamMM := 4 + 14*rng.Float64()
		rx := diamMM / 2 / mmPerPixel
		ry := rx * (0.6 + 0.4*rng.Float64())
		depth := sec.r0 + 0.15*sec.r1 + (0.65*sec.r1-sec.r0)*rng.Float64()
		angle := (rng.Float64()*2 - 1) * sec.half * 0.6
		inc := inclusion{cx: sec.ax + depth*math.Sin(angle), cy: sec.ay + depth*math.Cos(angle), rx: rx, ry: ry,
			vx: rng.Float64()*1.2 - 0.6, vy: rng.Float64()*1.2 - 0.6}
		if rng.IntN(2) == 0 {
			inc.kind, inc.contrast = "hypoechoic", 0.15+0.2*rng.Float64()
		} else {
			inc.kind, inc.contrast = "hyperechoic", 1.9+0.6*rng.Float64()
		}
		overlaps := false
		for _, o := range incs {
			if math.Hypot(o.cx-inc.cx, o.cy-inc.cy) < o.rx+inc.rx+10 {
				overlaps = true
			}
		}
		if !overlaps && sec.contains(inc.cx-inc.rx, inc.cy) && sec.contains(inc.cx+inc.rx, inc.cy) && sec.contains(inc.cx, inc.cy+inc.ry+8) {
			incs = append(incs, inc)
		}
	}

	truth := PhantomTruth{Seed: spec.Seed, Rows: h, Cols: w, Frames: spec.Frames, MMPerPixel: mmPerPixel,
		Region: region, ApexX: sec.ax, ApexY: sec.ay}
	for _, inc := range incs {
		truth.Lesions = append(truth.Lesions, PhantomInclusion{Kind: inc.kind, DiameterMM: 2 * math.Max(inc.rx, inc.ry) * mmPerPixel})
	}

	// Tissue: a smooth echogenicity map, fixed for the loop; speckle: per-pixel Rayleigh noise
	// that changes a little from frame to frame.
	tissue := make([]float64, w*h)
	blobs := 6
	bx, by, bs := make([]float64, blobs), make([]float64, blobs), make([]float64, blobs)
	for i := range blobs {
		bx[i], by[i], bs[i] = rng.Float64()*float64(w), rng.Float64()*float64(h), 0.15*rng.Float64()
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := 0.55
			for i := range blobs {
				v += bs[i] * math.Exp(-(math.Pow(float64(x)-bx[i], 2)+math.Pow(float64(y)-by[i], 2))/(2*80*80))
			}
			tissue[y*w+x] = v
		}
	}
	noise := make([]float64, w*h)
	rayleigh := func() float64 { return math.Sqrt(-2 * math.Log(1-rng.Float64())) }
	for i := range noise {
		noise[i] = rayleigh()
	}
	text := burnedInText(w, h, fmt.Sprintf("VIGIL PHANTOM %04d  C5-2  %.2f mm/px", spec.Seed%10000, mmPerPixel))

	p := Phantom{Truth: truth}
	for f := 0; f < spec.Frames; f++ {
		for i := range noise {
			noise[i] = 0.75*noise[i] + 0.25*rayleigh()
		}
		frame := make([]byte, w*h)
		mask := make([]byte, w*h)
		for li, inc := range incs {
			cx, cy := inc.cx+inc.vx*float64(f), inc.cy+inc.vy*float64(f)
			box := [4]int{int(math.Floor(cx - inc.rx)), int(math.Floor(cy - inc.ry)), int(math.Ceil(2 * inc.rx)), int(math.Ceil(2 * inc.ry))}
			p.Truth.Lesions[li].Frames = append(p.Truth.Lesions[li].Frames, PhantomLesion{Frame: f + 1, CX: cx, CY: cy, RX: inc.rx, RY: inc.ry, Box: box, Visible: true})
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				i := y*w + x
				fx, fy := float64(x)+0.5, float64(y)+0.5
				if !sec.contains(fx, fy) {
					frame[i] = text[i]
					continue
				}
				e := tissue[i]
				for li, inc := range incs {
					lf := p.Truth.Lesions[li].Frames[f]
					d := math.Pow((fx-lf.CX)/inc.rx, 2) + math.Pow((fy-lf.CY)/inc.ry, 2)
					if d <= 1 {
						e *= inc.contrast
						mask[i] = 1
						if inc.kind == "hyperechoic" {
							mask[i] = 2
						}
					} else if d <= 1.3 { // a soft rim, as real margins blur
						e *= 1 + (inc.contrast-1)*(1.3-d)/0.3*0.5
					}
				}
				depth := math.Hypot(fx-sec.ax, fy-sec.ay) / sec.r1
				v := 110 * e * noise[i] * (1.05 - 0.45*depth)
				frame[i] = byte(math.Min(255, math.Max(0, v)))
			}
		}
		p.Frames = append(p.Frames, frame)
		p.Masks = append(p.Masks, mask)
	}
	return p
}

// burnedInText is an image with the annotation a scanner burns into the corner.
func burnedInText(w, h int, s string) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	d := font.Drawer{Dst: img, Src: image.NewUniform(color.Gray{Y: 220}), Face: basicfont.Face7x13, Dot: fixed.P(6, 14)}
	d.DrawString(s)
	d.Dot = fixed.P(6, 30)
	d.DrawString("ABDOMEN  GAIN 52  DR 60")
	d.Dot = fixed.P(w-70, h-8)
	d.DrawString("12 cm")
	return img.Pix
}

// PhantomDICOM writes a phantom as an Ultrasound Multi-frame Image in Explicit VR Little
// Endian, calibrated through the Sequence of Ultrasound Regions. It fills the truth's UIDs.
func PhantomDICOM(p *Phantom) ([]byte, error) {
	t := &p.Truth
	u := GreyUltrasound{Width: t.Cols, Height: t.Rows, Frames: p.Frames, MMPerPixel: t.MMPerPixel, Region: t.Region,
		Manufacturer: "Vigil phantom generator", SeriesDescription: PhantomSeriesDescription}
	data, err := UltrasoundDICOM(&u)
	t.Study, t.SOPInstance = u.StudyInstanceUID, u.SOPInstanceUID
	return data, err
}

// PhantomSeriesDescription is the Series Description of every phantom; the demonstration
// lesion model's route matches it.
const PhantomSeriesDescription = "Vigil synthetic phantom"

func u16s(v int) []byte { return []byte{byte(v), byte(v >> 8)} }

func f64s(v float64) []byte {
	b := make([]byte, 8)
	bits := math.Float64bits(v)
	for i := range 8 {
		b[i] = byte(bits >> (8 * i))
	}
	return b
}
