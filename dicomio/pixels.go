package dicomio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
)

// encapsulated says whether the transfer syntax compresses pixels into fragments.
func (r *Reader) encapsulated() bool {
	switch r.inst.TransferSyntax {
	case JPEGBaseline, RLELossless, JPEG2000Lossless, JPEG2000:
		return true
	}
	return false
}

// startPixels reads the pixel data header and, for encapsulated data, the offset table.
func (r *Reader) startPixels(h header) error {
	if !r.encapsulated() {
		if h.length == undefinedLength {
			return fmt.Errorf("%w: encapsulated pixel data in %s", ErrMalformed, TransferSyntaxName(r.inst.TransferSyntax))
		}
		r.pixelLength = h.length
		return nil
	}
	if h.length != undefinedLength {
		return fmt.Errorf("%w: native pixel data in %s", ErrMalformed, TransferSyntaxName(r.inst.TransferSyntax))
	}
	bot, err := r.readHeader(true)
	if err != nil {
		return err
	}
	if bot.tag != tagItem {
		return fmt.Errorf("%w: encapsulated pixel data does not start with the offset table", ErrMalformed)
	}
	if bot.length%4 != 0 || int64(bot.length) > 4*int64(r.opts.Limits.MaxFrames) {
		return fmt.Errorf("%w: offset table of %d bytes", ErrMalformed, bot.length)
	}
	table := make([]byte, bot.length)
	if err := r.in.full(table); err != nil {
		return err
	}
	for i := 0; i+4 <= len(table); i += 4 {
		r.offsets = append(r.offsets, binary.LittleEndian.Uint32(table[i:]))
	}
	r.fragmentsBase = r.in.n
	return nil
}

// checkOffset compares where a frame's first fragment began with the offset table, when the
// table has an entry per frame.
func (r *Reader) checkOffset(at int64) error {
	if len(r.offsets) == 0 {
		return nil
	}
	if len(r.offsets) != r.inst.Frames {
		return fmt.Errorf("%w: the offset table has %d entries for %d frames", ErrMalformed, len(r.offsets), r.inst.Frames)
	}
	if want := int64(r.offsets[r.next]); at-r.fragmentsBase != want {
		return fmt.Errorf("%w: the offset table says frame %d starts at byte %d of the pixel data, it starts at %d", ErrMalformed, r.next+1, want, at-r.fragmentsBase)
	}
	return nil
}

var supportedPhotometric = map[string]bool{
	"MONOCHROME1": true, "MONOCHROME2": true, "RGB": true, "YBR_FULL": true, "YBR_FULL_422": true,
	"PALETTE COLOR": true, "YBR_RCT": true, "YBR_ICT": true,
}

// checkImage validates the image attributes against the limits before any pixel is read.
func (r *Reader) checkImage() error {
	in := &r.inst
	lim := r.opts.Limits
	if in.Frames == 0 {
		in.Frames = 1
	}
	switch {
	case in.Rows <= 0 || in.Columns <= 0:
		return fmt.Errorf("%w: image of %d x %d pixels", ErrMalformed, in.Columns, in.Rows)
	case in.Rows > lim.MaxRows || in.Columns > lim.MaxCols:
		return overLimit("MaxRows", "image of %d x %d pixels is over %d x %d", in.Columns, in.Rows, lim.MaxCols, lim.MaxRows)
	case in.Frames > lim.MaxFrames:
		return overLimit("MaxFrames", "%d frames is over %d", in.Frames, lim.MaxFrames)
	case in.SamplesPerPixel != 1 && in.SamplesPerPixel != 3:
		return fmt.Errorf("%w: %d samples per pixel", ErrUnsupportedPixels, in.SamplesPerPixel)
	case in.BitsAllocated != 8 && in.BitsAllocated != 16:
		return fmt.Errorf("%w: %d bits allocated", ErrUnsupportedPixels, in.BitsAllocated)
	case in.BitsAllocated == 16 && in.SamplesPerPixel == 3:
		return fmt.Errorf("%w: 16-bit colour", ErrUnsupportedPixels)
	case !supportedPhotometric[in.Photometric]:
		return fmt.Errorf("%w: photometric interpretation %q", ErrUnsupportedPixels, in.Photometric)
	case (in.Photometric == "MONOCHROME1" || in.Photometric == "MONOCHROME2" || in.Photometric == "PALETTE COLOR") != (in.SamplesPerPixel == 1):
		return fmt.Errorf("%w: %s with %d samples per pixel", ErrMalformed, in.Photometric, in.SamplesPerPixel)
	case in.TransferSyntax == JPEGBaseline && in.BitsAllocated != 8:
		return fmt.Errorf("%w: JPEG Baseline with %d bits", ErrMalformed, in.BitsAllocated)
	}
	if in.Photometric == "PALETTE COLOR" {
		for i, l := range in.palette {
			if l.bits != 8 && l.bits != 16 {
				return fmt.Errorf("%w: palette %d has %d bits", ErrUnsupportedPixels, i, l.bits)
			}
			if len(l.data) != 2*l.entries && !(l.bits == 8 && len(l.data) == l.entries) {
				return fmt.Errorf("%w: palette %d has %d bytes for %d entries", ErrMalformed, i, len(l.data), l.entries)
			}
		}
	}
	if !r.encapsulated() {
		if int64(r.pixelLength) > r.in.remaining() {
			return overLimit("MaxBytes", "pixel data of %d bytes is over the limit of %d bytes", r.pixelLength, r.opts.Limits.MaxBytes)
		}
		need := int64(r.frameBytes()) * int64(in.Frames)
		if int64(r.pixelLength) < need {
			return fmt.Errorf("%w: pixel data has %d bytes, %d frames of %d x %d need %d", ErrMalformed, r.pixelLength, in.Frames, in.Columns, in.Rows, need)
		}
	}
	return nil
}

// frameBytes is one native frame's size.
func (r *Reader) frameBytes() int {
	in := &r.inst
	n := in.Rows * in.Columns * in.SamplesPerPixel * in.BitsAllocated / 8
	if in.Photometric == "YBR_FULL_422" {
		n = in.Rows * in.Columns * 2
	}
	return n
}

// Next returns the next frame, or io.EOF after the last.
func (r *Reader) Next() (Frame, error) {
	if r.next >= r.inst.Frames || r.done {
		return Frame{}, io.EOF
	}
	var f Frame
	var err error
	if r.encapsulated() {
		var data []byte
		if data, err = r.nextFragments(); err == nil {
			f, err = r.decodeCompressed(data)
		}
	} else {
		buf := make([]byte, r.frameBytes())
		if err = r.in.full(buf); err == nil {
			f, err = r.decodeNative(buf)
		}
	}
	if err != nil {
		r.done = true
		return Frame{}, fmt.Errorf("frame %d: %w", r.next+1, err)
	}
	r.next++
	f.Number = r.next
	r.digest.Write(f.Pix)
	if len(f.Pix16) > 0 {
		b := make([]byte, 0, 2*len(f.Pix16))
		for _, v := range f.Pix16 {
			b = binary.LittleEndian.AppendUint16(b, v)
		}
		r.digest.Write(b)
	}
	return f, nil
}

// maxCompressedFrame bounds one compressed frame: never more than twice the raw size, plus a
// megabyte of headers.
func (r *Reader) maxCompressedFrame() int {
	return 2*r.inst.Rows*r.inst.Columns*r.inst.SamplesPerPixel*r.inst.BitsAllocated/8 + 1<<20
}

// readFragment reads the next fragment item; it returns nil at the sequence delimiter.
func (r *Reader) readFragment(budget int) ([]byte, error) {
	h, err := r.readHeader(true)
	if err != nil {
		return nil, err
	}
	if h.tag == tagSeqDelim {
		return nil, nil
	}
	if h.tag != tagItem || h.length == undefinedLength {
		return nil, fmt.Errorf("%w: %s among the pixel data fragments", ErrMalformed, h.tag)
	}
	if int64(h.length) > int64(budget) || int64(h.length) > r.in.remaining() {
		return nil, fmt.Errorf("%w: a fragment of %d bytes is over the frame's bound of %d", ErrTooLarge, h.length, budget)
	}
	data := make([]byte, h.length)
	return data, r.in.full(data)
}

// startsFrame says whether a fragment begins a new compressed image: a JPEG start of image,
// or a JPEG 2000 codestream or file signature.
func startsFrame(fragment []byte) bool {
	return bytes.HasPrefix(fragment, []byte{0xFF, 0xD8, 0xFF}) ||
		bytes.HasPrefix(fragment, []byte{0xFF, 0x4F, 0xFF, 0x51}) ||
		bytes.HasPrefix(fragment, []byte{0, 0, 0, 0x0C, 0x6A, 0x50})
}

// nextFragments returns one frame's compressed bytes. With an empty offset table and more
// fragments than frames, a frame is every fragment up to the next that starts an image.
func (r *Reader) nextFragments() ([]byte, error) {
	budget := r.maxCompressedFrame()
	last := r.next == r.inst.Frames-1
	frame, at := r.pending, r.pendingAt
	r.pending = nil
	if frame == nil {
		at = r.in.n
		if r.fragmentsEnded {
			return nil, fmt.Errorf("%w: %d frames declared, %d found", ErrMalformed, r.inst.Frames, r.next)
		}
		first, err := r.readFragment(budget)
		if err != nil {
			return nil, err
		}
		if first == nil {
			r.fragmentsEnded = true
			return nil, fmt.Errorf("%w: %d frames declared, %d found", ErrMalformed, r.inst.Frames, r.next)
		}
		frame = first
	}
	if err := r.checkOffset(at); err != nil {
		return nil, err
	}
	if r.inst.TransferSyntax == RLELossless && !last {
		return frame, nil // RLE puts each frame in exactly one fragment
	}
	for !r.fragmentsEnded {
		fragAt := r.in.n
		frag, err := r.readFragment(budget - len(frame))
		if err != nil {
			return nil, err
		}
		if frag == nil {
			r.fragmentsEnded = true
			break
		}
		if !last && startsFrame(frag) {
			r.pending, r.pendingAt = frag, fragAt
			break
		}
		frame = append(frame, frag...)
	}
	return frame, nil
}

func (r *Reader) decodeNative(buf []byte) (Frame, error) {
	in := &r.inst
	w, h := in.Columns, in.Rows
	f := Frame{Width: w, Height: h, Samples: in.SamplesPerPixel}
	switch in.Photometric {
	case "MONOCHROME1", "MONOCHROME2":
		if in.BitsAllocated == 16 {
			f.Pix16 = make([]uint16, w*h)
			for i := range f.Pix16 {
				f.Pix16[i] = binary.LittleEndian.Uint16(buf[2*i:])
			}
		} else {
			f.Pix = buf
		}
		return f, nil
	case "PALETTE COLOR":
		return r.palette(buf)
	case "YBR_FULL_422":
		f.Pix = make([]byte, w*h*3)
		for i := 0; i+1 < w*h; i += 2 {
			y1, y2, cb, cr := buf[2*i], buf[2*i+1], buf[2*i+2], buf[2*i+3]
			ybrToRGB(f.Pix[3*i:], y1, cb, cr)
			ybrToRGB(f.Pix[3*i+3:], y2, cb, cr)
		}
		return f, nil
	}
	f.Pix = interleave(buf, w*h, in.PlanarConfiguration)
	if in.Photometric == "YBR_FULL" {
		for i := 0; i < w*h; i++ {
			p := f.Pix[3*i:]
			ybrToRGB(p, p[0], p[1], p[2])
		}
	}
	return f, nil
}

// interleave returns samples as R, G, B per pixel, from planar (1) or interleaved (0) order.
func interleave(buf []byte, pixels, planar int) []byte {
	if planar == 0 {
		return buf
	}
	out := make([]byte, 3*pixels)
	for i := 0; i < pixels; i++ {
		out[3*i], out[3*i+1], out[3*i+2] = buf[i], buf[pixels+i], buf[2*pixels+i]
	}
	return out
}

func clamp(v float64) byte {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return byte(v + 0.5)
}

// ybrToRGB converts full-range YCbCr (PS3.3 C.7.6.3.1.2) to RGB into p[0:3].
func ybrToRGB(p []byte, y, cb, cr byte) {
	Y, Cb, Cr := float64(y), float64(cb)-128, float64(cr)-128
	p[0] = clamp(Y + 1.402*Cr)
	p[1] = clamp(Y - 0.344136*Cb - 0.714136*Cr)
	p[2] = clamp(Y + 1.772*Cb)
}

// palette maps indices through the red, green and blue lookup tables to 8-bit RGB. The tables
// are turned into 8-bit arrays once per frame, so each pixel is three array reads.
func (r *Reader) palette(buf []byte) (Frame, error) {
	in := &r.inst
	n := in.Rows * in.Columns
	f := Frame{Width: in.Columns, Height: in.Rows, Samples: 3, Pix: make([]byte, 3*n)}
	for c, l := range in.palette {
		table := make([]byte, l.entries)
		for i := range table {
			switch {
			case len(l.data) == l.entries: // 8-bit entries packed one per byte
				table[i] = l.data[i]
			case l.bits == 16:
				table[i] = byte(binary.LittleEndian.Uint16(l.data[2*i:]) >> 8)
			default:
				table[i] = byte(binary.LittleEndian.Uint16(l.data[2*i:]))
			}
		}
		last := l.entries - 1
		for i := 0; i < n; i++ {
			var idx int
			if in.BitsAllocated == 16 {
				idx = int(binary.LittleEndian.Uint16(buf[2*i:]))
			} else {
				idx = int(buf[i])
			}
			idx = min(max(idx-l.first, 0), last)
			f.Pix[3*i+c] = table[idx]
		}
	}
	return f, nil
}

func (r *Reader) decodeCompressed(data []byte) (Frame, error) {
	in := &r.inst
	switch in.TransferSyntax {
	case JPEGBaseline:
		return decodeJPEG(data, in.Columns, in.Rows, in.SamplesPerPixel)
	case RLELossless:
		raw, err := decodeRLE(data, in.Columns*in.Rows, in.SamplesPerPixel*in.BitsAllocated/8)
		if err != nil {
			return Frame{}, err
		}
		// RLE keeps each sample (and each byte of a 16-bit sample, high first) in a segment of
		// its own: rebuild the native layout, then decode it as native.
		native := raw
		if in.BitsAllocated == 16 {
			n := in.Columns * in.Rows
			native = make([]byte, 2*n)
			for i := 0; i < n; i++ {
				native[2*i], native[2*i+1] = raw[n+i], raw[i]
			}
		}
		saved := in.PlanarConfiguration
		if in.SamplesPerPixel == 3 {
			in.PlanarConfiguration = 1
		}
		f, err := r.decodeNative(native)
		in.PlanarConfiguration = saved
		return f, err
	case JPEG2000Lossless, JPEG2000:
		pix, err := r.opts.Decoders.JPEG2000(data, in.Columns, in.Rows, in.SamplesPerPixel)
		if err != nil {
			return Frame{}, fmt.Errorf("%w: JPEG 2000: %v", ErrMalformed, err)
		}
		if len(pix) != in.Columns*in.Rows*in.SamplesPerPixel {
			return Frame{}, fmt.Errorf("%w: JPEG 2000 frame decoded to %d bytes, want %d x %d x %d", ErrMalformed, len(pix), in.Columns, in.Rows, in.SamplesPerPixel)
		}
		return Frame{Width: in.Columns, Height: in.Rows, Samples: in.SamplesPerPixel, Pix: pix}, nil
	}
	return Frame{}, fmt.Errorf("%w: %s", ErrUnsupportedTransferSyntax, in.TransferSyntax)
}

// decodeJPEG decodes a baseline JPEG frame to grey or RGB, after checking that its header
// matches the DICOM image size (so a forged header cannot make it allocate more).
func decodeJPEG(data []byte, w, h, samples int) (Frame, error) {
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return Frame{}, fmt.Errorf("%w: JPEG: %v", ErrMalformed, err)
	}
	if cfg.Width != w || cfg.Height != h {
		return Frame{}, fmt.Errorf("%w: JPEG frame is %d x %d, the instance says %d x %d", ErrMalformed, cfg.Width, cfg.Height, w, h)
	}
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return Frame{}, fmt.Errorf("%w: JPEG: %v", ErrMalformed, err)
	}
	f := Frame{Width: w, Height: h, Samples: samples}
	switch m := img.(type) {
	case *image.Gray:
		if samples != 1 {
			return Frame{}, fmt.Errorf("%w: grey JPEG in a colour instance", ErrMalformed)
		}
		f.Pix = make([]byte, w*h)
		for y := 0; y < h; y++ {
			copy(f.Pix[y*w:(y+1)*w], m.Pix[y*m.Stride:])
		}
	case *image.YCbCr:
		if samples != 3 {
			return Frame{}, fmt.Errorf("%w: colour JPEG in a grey instance", ErrMalformed)
		}
		f.Pix = make([]byte, 3*w*h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				p := f.Pix[3*(y*w+x):]
				p[0], p[1], p[2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
	default:
		if samples != 3 {
			return Frame{}, fmt.Errorf("%w: JPEG of type %T", ErrUnsupportedPixels, img)
		}
		f.Pix = make([]byte, 3*w*h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				cr, cg, cb, _ := img.At(x, y).RGBA()
				p := f.Pix[3*(y*w+x):]
				p[0], p[1], p[2] = byte(cr>>8), byte(cg>>8), byte(cb>>8)
			}
		}
	}
	return f, nil
}

// decodeRLE decodes a DICOM RLE frame (PS3.5 Annex G): a 64-byte header of segment offsets,
// then one PackBits segment per byte plane. It returns the planes one after another.
func decodeRLE(data []byte, pixels, planes int) ([]byte, error) {
	if len(data) < 64 {
		return nil, fmt.Errorf("%w: RLE frame of %d bytes has no header", ErrMalformed, len(data))
	}
	segments := int(binary.LittleEndian.Uint32(data))
	if segments != planes {
		return nil, fmt.Errorf("%w: RLE frame has %d segments, the image needs %d", ErrMalformed, segments, planes)
	}
	out := make([]byte, pixels*planes)
	for s := 0; s < segments; s++ {
		start := int(binary.LittleEndian.Uint32(data[4+4*s:]))
		end := len(data)
		if s+1 < segments {
			end = int(binary.LittleEndian.Uint32(data[8+4*s:]))
		}
		if start < 64 || start > end || end > len(data) {
			return nil, fmt.Errorf("%w: RLE segment %d spans %d..%d of %d bytes", ErrMalformed, s, start, end, len(data))
		}
		if err := unpackBits(data[start:end], out[s*pixels:(s+1)*pixels]); err != nil {
			return nil, fmt.Errorf("RLE segment %d: %w", s, err)
		}
	}
	return out, nil
}

// unpackBits fills dst from a PackBits stream. Extra output is an error; a short segment
// leaves zeros (some writers drop trailing zeros).
func unpackBits(src, dst []byte) error {
	o := 0
	for i := 0; i < len(src) && o < len(dst); {
		n := int(int8(src[i]))
		i++
		switch {
		case n >= 0:
			if i+n+1 > len(src) || o+n+1 > len(dst) {
				return fmt.Errorf("%w: a literal run overruns", ErrMalformed)
			}
			copy(dst[o:], src[i:i+n+1])
			i += n + 1
			o += n + 1
		case n > -128:
			if i >= len(src) || o+1-n > len(dst) {
				return fmt.Errorf("%w: a repeat run overruns", ErrMalformed)
			}
			for k := 0; k < 1-n; k++ {
				dst[o+k] = src[i]
			}
			i++
			o += 1 - n
		}
	}
	return nil
}
