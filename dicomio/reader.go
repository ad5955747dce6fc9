package dicomio

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strconv"
	"strings"
)

var (
	// ErrNotDICOM means the input is not a DICOM Part 10 file.
	ErrNotDICOM = errors.New("dicomio: not a DICOM Part 10 file")
	// ErrTruncated means the input ended inside an element.
	ErrTruncated = errors.New("dicomio: file is truncated")
	// ErrMalformed means the input breaks the DICOM encoding rules.
	ErrMalformed = errors.New("dicomio: malformed DICOM")
	// ErrTooLarge means the input is over a configured limit; nothing was allocated for it.
	// The error is an *OverLimit when the limit is one of Limits.
	ErrTooLarge = errors.New("dicomio: over a limit")
	// ErrUnsupportedTransferSyntax means a transfer syntax Vigil does not decode.
	ErrUnsupportedTransferSyntax = errors.New("dicomio: unsupported transfer syntax")
	// ErrUnsupportedPixels means a pixel encoding Vigil does not decode.
	ErrUnsupportedPixels = errors.New("dicomio: unsupported pixel data")
	// ErrNoPixelData means the instance has no image.
	ErrNoPixelData = errors.New("dicomio: no pixel data")
)

// Transfer syntaxes.
const (
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = explicitVRLittleEndian
	JPEGBaseline           = "1.2.840.10008.1.2.4.50"
	JPEG2000Lossless       = "1.2.840.10008.1.2.4.90"
	JPEG2000               = "1.2.840.10008.1.2.4.91"
	RLELossless            = "1.2.840.10008.1.2.5"
)

// transferSyntaxNames names the syntaxes an error may have to mention.
var transferSyntaxNames = map[string]string{
	ImplicitVRLittleEndian:    "Implicit VR Little Endian",
	ExplicitVRLittleEndian:    "Explicit VR Little Endian",
	"1.2.840.10008.1.2.1.99":  "Deflated Explicit VR Little Endian",
	"1.2.840.10008.1.2.2":     "Explicit VR Big Endian (retired)",
	JPEGBaseline:              "JPEG Baseline (Process 1)",
	"1.2.840.10008.1.2.4.51":  "JPEG Extended (Process 2 & 4)",
	"1.2.840.10008.1.2.4.57":  "JPEG Lossless, Non-Hierarchical (Process 14)",
	"1.2.840.10008.1.2.4.70":  "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
	"1.2.840.10008.1.2.4.80":  "JPEG-LS Lossless Image Compression",
	"1.2.840.10008.1.2.4.81":  "JPEG-LS Lossy (Near-Lossless) Image Compression",
	JPEG2000Lossless:          "JPEG 2000 Image Compression (Lossless Only)",
	JPEG2000:                  "JPEG 2000 Image Compression",
	"1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
	"1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
	"1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
	RLELossless:               "RLE Lossless",
}

// TransferSyntaxName is a syntax's name, or "unknown".
func TransferSyntaxName(uid string) string {
	if n, ok := transferSyntaxNames[uid]; ok {
		return n
	}
	return "unknown"
}

// Limits bound what a reader accepts. An input over a limit is refused before memory is
// allocated for it.
type Limits struct {
	MaxFrames int
	MaxRows   int
	MaxCols   int
	// MaxBytes bounds the whole file as read.
	MaxBytes int64
	// MaxRegions bounds the Sequence of Ultrasound Regions: scanners write a handful (a
	// B-mode image, a Doppler strip, an M-mode trace); thousands would only cost memory.
	// Zero means MaxRegions.
	MaxRegions int
}

// OverLimit is an input over one of Limits: Limit names the field (MaxFrames, MaxRows,
// MaxCols, MaxBytes or MaxRegions), so that a server can name its own setting.
type OverLimit struct {
	Limit  string
	detail string
}

func overLimit(limit, format string, args ...any) error {
	return &OverLimit{Limit: limit, detail: fmt.Sprintf(format, args...)}
}

func (e *OverLimit) Error() string { return ErrTooLarge.Error() + ": " + e.detail }

func (e *OverLimit) Unwrap() error { return ErrTooLarge }

// DefaultLimits fit ultrasound: cine loops of a few thousand frames, up to 4096 x 4096 pixels,
// 2 GiB in all.
var DefaultLimits = Limits{MaxFrames: 5000, MaxRows: 4096, MaxCols: 4096, MaxBytes: 2 << 30, MaxRegions: MaxRegions}

// Decoders are the codecs a caller lends the reader; dicomio itself stays pure Go.
type Decoders struct {
	// JPEG2000 decodes one JPEG 2000 codestream to 8-bit grey or RGB. Nil refuses JPEG 2000.
	JPEG2000 func(data []byte, width, height, samples int) ([]byte, error)
}

// Options configure a Reader.
type Options struct {
	Limits   Limits
	Decoders Decoders
}

// Region is one item of the Sequence of Ultrasound Regions (0018,6011).
type Region struct {
	SpatialFormat int // 1 = 2D
	DataType      int // 1 = tissue, 2 = colour flow, ...
	X0, Y0        int // top left, inclusive
	X1, Y1        int // bottom right, inclusive
	UnitsX        int // 3 = cm
	UnitsY        int
	DeltaX        float64 // physical units per pixel
	DeltaY        float64
}

// MaxRegions is the default bound of Limits.MaxRegions.
const MaxRegions = 32

// MinMillimetresPerPixel and MaxMillimetresPerPixel bound a plausible calibration: 5 mm a
// pixel would make a 500-pixel image half a metre across; 1 micrometre a pixel is ten times
// finer than the finest ultrasound probe resolves (and 1e-250 cm turns an area into 0 and a
// ratio into NaN). Outside them (or not a finite number) the image is treated as
// uncalibrated, so that no impossible size reaches a finding or a report.
const (
	MinMillimetresPerPixel = 0.001
	MaxMillimetresPerPixel = 5.0
)

// PlausibleMillimetres says whether a calibration in mm per pixel is finite and within
// MinMillimetresPerPixel and MaxMillimetresPerPixel.
func PlausibleMillimetres(v float64) bool {
	return v >= MinMillimetresPerPixel && v <= MaxMillimetresPerPixel && !math.IsNaN(v)
}

// MillimetresPerPixel is the region's calibration in mm, when its units are centimetres and
// its deltas are plausible.
func (r Region) MillimetresPerPixel() (x, y float64, ok bool) {
	const centimetre = 3
	x, y = r.DeltaX*10, r.DeltaY*10
	if r.UnitsX != centimetre || r.UnitsY != centimetre || !PlausibleMillimetres(x) || !PlausibleMillimetres(y) {
		return 0, 0, false
	}
	return x, y, true
}

// maxBytes is the longest value, in bytes, PS3.5 (table 6.2-1) allows for the text VRs of
// the identifying attributes and of what reviewers write: a person name up to three component
// groups of 64. The table counts characters; with UTF-8 (ISO_IR 192) a character may take up
// to four bytes, and checkers (dciodvfy) and many archives count bytes, so Vigil does too.
var maxBytes = map[string]int{"AE": 16, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "PN": 3*64 + 2,
	"SH": 16, "TM": 16, "UI": 64, "ST": 1024, "LT": 10240}

// CutToVR cuts a text value to the longest its VR allows, at a character boundary. A sender
// may write a 255 KiB accession number; what Vigil stores, lists and writes back into a
// report fits the VR.
func CutToVR(vr, s string) string {
	limit, ok := maxBytes[vr]
	if !ok || len(s) <= limit {
		return s
	}
	end := 0
	for i := range s {
		if i > limit {
			break
		}
		end = i
	}
	return s[:end]
}

// Patient is the Patient module, as text in UTF-8 (names in DICOM's form: FAMILY^GIVEN).
type Patient struct {
	Name, ID, BirthDate, Sex string
}

// Study is the General Study module's attributes that identify a study to people:
// StudyInstanceUID and StudyDescription sit in Instance itself.
type Study struct {
	AccessionNumber, Date, Time, ReferringPhysician, ID string
}

// Instance is what an instance says about itself before its pixels.
type Instance struct {
	TransferSyntax    string
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string
	SeriesInstanceUID string
	Modality          string
	// StudyDescription, SeriesDescription and BodyPartExamined say what the exam was; model
	// routes match them.
	StudyDescription  string
	SeriesDescription string
	BodyPartExamined  string
	// PixelSpacing is (0028,0030) in mm, row spacing then column spacing; zero when absent.
	PixelSpacing [2]float64
	// Patient and Study are who and what the images are of, for reviewers and for the report
	// that goes back into the same study. They are patient data: never logged.
	Patient Patient
	Study   Study
	// CharacterSet is (0008,0005), the Specific Character Set the text is in.
	CharacterSet string

	Rows, Columns       int
	Frames              int
	SamplesPerPixel     int
	BitsAllocated       int
	BitsStored          int
	PixelRepresentation int
	PlanarConfiguration int
	Photometric         string
	// FrameTime is the time between frames in milliseconds, 0 when not given.
	FrameTime float64
	Regions   []Region

	palette [3]lut
}

type lut struct {
	entries, first, bits int
	data                 []byte
}

// Frame is one decoded image: 8-bit grey or RGB (interleaved), or 16-bit grey.
type Frame struct {
	// Number is 1-based.
	Number  int
	Width   int
	Height  int
	Samples int // 1 or 3
	// Pix holds 8-bit samples (grey, or R, G, B interleaved); Pix16 holds 16-bit grey.
	Pix   []byte
	Pix16 []uint16
}

// Reader reads one instance from a stream: Open reads everything up to the pixels, and Next
// yields one frame at a time, so a long cine loop is never held whole.
type Reader struct {
	in       *countingReader
	opts     Options
	inst     Instance
	explicit bool

	pixelLength uint32 // of native pixel data; undefined for encapsulated
	next        int    // frames yielded so far
	pending     []byte // an encapsulated fragment read ahead (the next frame's first)
	offsets     []uint32
	// fragmentsBase is the stream position of the first fragment item, where offsets count from.
	fragmentsBase int64
	// pendingAt is where the read-ahead fragment's item began.
	pendingAt int64
	// fragmentsEnded is set at the sequence delimiter after the last fragment.
	fragmentsEnded bool
	done           bool
	// digest sums what the instance shows, as Digest says.
	digest hash.Hash
}

type countingReader struct {
	r     *bufio.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.limit > 0 {
		if c.n >= c.limit {
			return 0, overLimit("MaxBytes", "the file is over %d bytes", c.limit)
		}
		if rest := c.limit - c.n; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) full(p []byte) error {
	_, err := io.ReadFull(c, p)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// remaining says how many more bytes the limit allows.
func (c *countingReader) remaining() int64 {
	if c.limit <= 0 {
		return math.MaxInt64
	}
	return c.limit - c.n
}

func (c *countingReader) skip(n int64) error {
	if c.limit > 0 && c.n+n > c.limit {
		return overLimit("MaxBytes", "the file is over %d bytes", c.limit)
	}
	got, err := io.CopyN(io.Discard, c, n)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			return ErrTruncated
		}
		return err
	}
	return nil
}

const undefinedLength = 0xFFFFFFFF

// Tags the reader looks at.
var (
	tagItem             = Tag{0xFFFE, 0xE000}
	tagItemDelim        = Tag{0xFFFE, 0xE00D}
	tagSeqDelim         = Tag{0xFFFE, 0xE0DD}
	tagPixelData        = Tag{0x7FE0, 0x0010}
	tagRegions          = Tag{0x0018, 0x6011}
	tagTransferSyntax   = Tag{0x0002, 0x0010}
	tagFileMetaLength   = Tag{0x0002, 0x0000}
	tagMediaStorageUID  = Tag{0x0002, 0x0003}
	tagMediaStorageClas = Tag{0x0002, 0x0002}
)

// implicitVRs are the VRs of the elements the reader interprets, for Implicit VR files.
var implicitVRs = map[Tag]string{
	{0x0008, 0x0016}: "UI", {0x0008, 0x0018}: "UI", {0x0008, 0x0060}: "CS",
	{0x0008, 0x1030}: "LO", {0x0008, 0x103E}: "LO", {0x0018, 0x0015}: "CS", {0x0028, 0x0030}: "DS",
	{0x0008, 0x0005}: "CS", {0x0010, 0x0010}: "PN", {0x0010, 0x0020}: "LO", {0x0010, 0x0030}: "DA", {0x0010, 0x0040}: "CS",
	{0x0008, 0x0050}: "SH", {0x0008, 0x0020}: "DA", {0x0008, 0x0030}: "TM", {0x0008, 0x0090}: "PN", {0x0020, 0x0010}: "SH",
	{0x0020, 0x000D}: "UI", {0x0020, 0x000E}: "UI", {0x0018, 0x1063}: "DS",
	{0x0028, 0x0002}: "US", {0x0028, 0x0004}: "CS", {0x0028, 0x0006}: "US", {0x0028, 0x0008}: "IS",
	{0x0028, 0x0010}: "US", {0x0028, 0x0011}: "US", {0x0028, 0x0100}: "US", {0x0028, 0x0101}: "US",
	{0x0028, 0x0103}: "US", {0x0028, 0x1101}: "US", {0x0028, 0x1102}: "US", {0x0028, 0x1103}: "US",
	{0x0028, 0x1201}: "OW", {0x0028, 0x1202}: "OW", {0x0028, 0x1203}: "OW",
	{0x0018, 0x6011}: "SQ", {0x0018, 0x6012}: "US", {0x0018, 0x6014}: "US",
	{0x0018, 0x6018}: "UL", {0x0018, 0x601A}: "UL", {0x0018, 0x601C}: "UL", {0x0018, 0x601E}: "UL",
	{0x0018, 0x6024}: "US", {0x0018, 0x6026}: "US", {0x0018, 0x602C}: "FD", {0x0018, 0x602E}: "FD",
	{0x7FE0, 0x0010}: "OW",
}

// maxValue bounds one interpreted attribute value (a palette is at most 128 KiB).
const maxValue = 1 << 18

// Open reads the file meta information and the data set up to the pixel data.
func Open(r io.Reader, opts Options) (*Reader, error) {
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	rd := &Reader{in: &countingReader{r: bufio.NewReaderSize(r, 64<<10), limit: opts.Limits.MaxBytes}, opts: opts}
	head := make([]byte, 132)
	if err := rd.in.full(head); err != nil {
		if errors.Is(err, ErrTruncated) {
			return nil, fmt.Errorf("%w: shorter than the 132-byte preamble", ErrNotDICOM)
		}
		return nil, err
	}
	if string(head[128:]) != "DICM" {
		return nil, fmt.Errorf("%w: no DICM prefix at byte 128", ErrNotDICOM)
	}
	if err := rd.readMeta(); err != nil {
		return nil, err
	}
	ts := rd.inst.TransferSyntax
	switch ts {
	case ImplicitVRLittleEndian:
	case ExplicitVRLittleEndian, JPEGBaseline, RLELossless:
		rd.explicit = true
	case JPEG2000Lossless, JPEG2000:
		rd.explicit = true
		if opts.Decoders.JPEG2000 == nil {
			return nil, fmt.Errorf("%w: %s (%s): no JPEG 2000 decoder is configured", ErrUnsupportedTransferSyntax, ts, TransferSyntaxName(ts))
		}
	default:
		return nil, fmt.Errorf("%w: %s (%s)", ErrUnsupportedTransferSyntax, ts, TransferSyntaxName(ts))
	}
	found, err := rd.readDataset()
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoPixelData
	}
	if err := rd.checkImage(); err != nil {
		return nil, err
	}
	rd.digest = sha256.New()
	in := &rd.inst
	fmt.Fprintf(rd.digest, "%s\x00%s\x00%s\x00%dx%dx%d\x00", in.SOPInstanceUID, in.StudyInstanceUID, in.SeriesInstanceUID,
		in.Columns, in.Rows, in.Frames)
	return rd, nil
}

// Digest reads the frames not yet read and returns the hex sha256 of what the instance
// shows: its SOP Instance, Study and Series UIDs, its size, and every frame's decoded
// pixels. It is the same in any lossless transfer syntax (a PACS may send one instance
// natively or RLE-compressed under one UID, and a converter may correct its SOP Class on
// the way) and differs when a study or a pixel does. A frame that cannot be decoded is
// Digest's error.
func (r *Reader) Digest() (string, error) {
	for {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(r.digest.Sum(nil)), nil
}

// Instance returns what the instance says about itself.
func (r *Reader) Instance() Instance { return r.inst }

// header is one element's tag, VR and length.
type header struct {
	tag    Tag
	vr     string
	length uint32
}

func (r *Reader) readHeader(explicit bool) (header, error) {
	var b [8]byte
	if err := r.in.full(b[:]); err != nil {
		return header{}, err
	}
	h := header{tag: Tag{binary.LittleEndian.Uint16(b[0:]), binary.LittleEndian.Uint16(b[2:])}}
	if h.tag.Group == 0xFFFE { // items and delimiters have no VR
		h.length = binary.LittleEndian.Uint32(b[4:])
		return h, nil
	}
	if !explicit {
		h.vr = implicitVRs[h.tag]
		h.length = binary.LittleEndian.Uint32(b[4:])
		return h, nil
	}
	h.vr = string(b[4:6])
	if h.vr[0] < 'A' || h.vr[0] > 'Z' || h.vr[1] < 'A' || h.vr[1] > 'Z' {
		return h, fmt.Errorf("%w: element %s has no valid VR", ErrMalformed, h.tag)
	}
	if longVRs[h.vr] {
		var l [4]byte
		if err := r.in.full(l[:]); err != nil {
			return h, err
		}
		h.length = binary.LittleEndian.Uint32(l[:])
	} else {
		h.length = uint32(binary.LittleEndian.Uint16(b[6:]))
	}
	return h, nil
}

func (r *Reader) readValue(h header) ([]byte, error) {
	if h.length == undefinedLength || h.length > maxValue {
		return nil, fmt.Errorf("%w: element %s has length %d", ErrMalformed, h.tag, h.length)
	}
	v := make([]byte, h.length)
	return v, r.in.full(v)
}

func (r *Reader) readMeta() error {
	h, err := r.readHeader(true)
	if err != nil {
		return err
	}
	if h.tag != tagFileMetaLength || h.length != 4 {
		return fmt.Errorf("%w: no file meta group length", ErrNotDICOM)
	}
	v, err := r.readValue(h)
	if err != nil {
		return err
	}
	remaining := int64(binary.LittleEndian.Uint32(v))
	if remaining > maxValue {
		return fmt.Errorf("%w: file meta information of %d bytes", ErrMalformed, remaining)
	}
	start := r.in.n
	for r.in.n-start < remaining {
		h, err := r.readHeader(true)
		if err != nil {
			return err
		}
		if h.tag.Group != 0x0002 {
			return fmt.Errorf("%w: element %s inside the file meta information", ErrMalformed, h.tag)
		}
		v, err := r.readValue(h)
		if err != nil {
			return err
		}
		switch h.tag {
		case tagTransferSyntax:
			r.inst.TransferSyntax = text(v)
		case tagMediaStorageUID:
			r.inst.SOPInstanceUID = text(v)
		case tagMediaStorageClas:
			r.inst.SOPClassUID = text(v)
		}
	}
	if r.inst.TransferSyntax == "" {
		return fmt.Errorf("%w: no transfer syntax in the file meta information", ErrMalformed)
	}
	return nil
}

func text(v []byte) string {
	return strings.TrimRight(string(v), " \x00")
}

// decode is a text value in UTF-8: Latin-1 (ISO_IR 100) is converted, UTF-8 (ISO_IR 192)
// and ASCII are kept, and any byte that is not valid UTF-8 becomes '?', so that a value
// always fits a protobuf string. (Other character sets, with escape sequences, come out with
// their non-ASCII bytes as '?'.)
func (inst *Instance) decode(v []byte) string {
	s := text(v)
	if strings.Contains(inst.CharacterSet, "ISO_IR 100") {
		runes := make([]rune, 0, len(s))
		for i := 0; i < len(s); i++ {
			runes = append(runes, rune(s[i]))
		}
		return string(runes)
	}
	return strings.ToValidUTF8(s, "?")
}

// readDataset reads top-level elements up to the pixel data; it reports whether it found it.
func (r *Reader) readDataset() (bool, error) {
	for {
		h, err := r.readHeader(r.explicit)
		if errors.Is(err, ErrTruncated) && r.atEnd() {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if h.tag == tagPixelData {
			return true, r.startPixels(h)
		}
		if err := r.element(h, &r.inst, 0); err != nil {
			return false, err
		}
	}
}

// atEnd says whether the stream ended exactly between elements.
func (r *Reader) atEnd() bool {
	_, err := r.in.r.Peek(1)
	return err != nil
}

// element interprets or skips one element of the data set (depth 0) or of a sequence item.
func (r *Reader) element(h header, inst *Instance, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%w: sequences nested deeper than 16", ErrMalformed)
	}
	if h.vr == "SQ" || h.length == undefinedLength {
		if h.tag == tagRegions && depth == 0 {
			return r.sequence(h, depth, func(item *Instance) error {
				if len(item.Regions) == 0 {
					return nil
				}
				if limit := cmp.Or(r.opts.Limits.MaxRegions, MaxRegions); len(inst.Regions) >= limit {
					return overLimit("MaxRegions", "the Sequence of Ultrasound Regions has more than %d items", limit)
				}
				inst.Regions = append(inst.Regions, item.Regions[0])
				return nil
			})
		}
		return r.sequence(h, depth, nil)
	}
	if !interesting(h.tag) {
		return r.in.skip(int64(h.length))
	}
	v, err := r.readValue(h)
	if err != nil {
		return err
	}
	return inst.set(h, v)
}

func interesting(t Tag) bool {
	_, ok := implicitVRs[t]
	return ok
}

// sequence reads a sequence's items; each item's interpreted elements go to onItem.
func (r *Reader) sequence(h header, depth int, onItem func(*Instance) error) error {
	end := int64(-1)
	if h.length != undefinedLength {
		end = r.in.n + int64(h.length)
	}
	for end < 0 || r.in.n < end {
		ih, err := r.readHeader(r.explicit)
		if err != nil {
			return err
		}
		if ih.tag == tagSeqDelim {
			if end >= 0 {
				return fmt.Errorf("%w: sequence delimiter in a sequence of defined length", ErrMalformed)
			}
			return nil
		}
		if ih.tag != tagItem {
			return fmt.Errorf("%w: %s inside sequence %s, want an item", ErrMalformed, ih.tag, h.tag)
		}
		item := &Instance{}
		itemEnd := int64(-1)
		if ih.length != undefinedLength {
			itemEnd = r.in.n + int64(ih.length)
		}
		for itemEnd < 0 || r.in.n < itemEnd {
			eh, err := r.readHeader(r.explicit)
			if err != nil {
				return err
			}
			if eh.tag == tagItemDelim {
				break
			}
			if eh.tag == tagPixelData {
				return fmt.Errorf("%w: pixel data inside a sequence", ErrMalformed)
			}
			if err := r.element(eh, item, depth+1); err != nil {
				return err
			}
		}
		if itemEnd >= 0 && r.in.n != itemEnd {
			return fmt.Errorf("%w: an item of sequence %s overruns its length", ErrMalformed, h.tag)
		}
		if onItem != nil {
			if err := onItem(item); err != nil {
				return err
			}
		}
	}
	if r.in.n != end {
		return fmt.Errorf("%w: sequence %s overruns its length", ErrMalformed, h.tag)
	}
	return nil
}

func u16(v []byte, i int) int { return int(binary.LittleEndian.Uint16(v[2*i:])) }

// set interprets one attribute value.
func (inst *Instance) set(h header, v []byte) error {
	num := func(want int) (int, error) {
		switch {
		case len(v) >= 4 && (h.vr == "UL" || h.vr == "SL"):
			return int(binary.LittleEndian.Uint32(v)), nil
		case len(v) >= 2 && (h.vr == "US" || h.vr == "SS" || h.vr == ""):
			return u16(v, 0), nil
		case h.vr == "IS" || h.vr == "DS":
			f, err := strconv.ParseFloat(strings.TrimSpace(text(v)), 64)
			if err != nil || f < 0 || f > math.MaxInt32 {
				return 0, fmt.Errorf("%w: %s is not a number", ErrMalformed, h.tag)
			}
			return int(f), nil
		}
		return 0, fmt.Errorf("%w: %s has %d bytes for VR %s", ErrMalformed, h.tag, len(v), h.vr)
	}
	fd := func() (float64, error) {
		if len(v) < 8 {
			return 0, fmt.Errorf("%w: %s has %d bytes for FD", ErrMalformed, h.tag, len(v))
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(v)), nil
	}
	region := func() *Region {
		if len(inst.Regions) == 0 {
			inst.Regions = append(inst.Regions, Region{})
		}
		return &inst.Regions[0]
	}
	var err error
	switch h.tag {
	case Tag{0x0008, 0x0016}:
		inst.SOPClassUID = text(v)
	case Tag{0x0008, 0x0018}:
		inst.SOPInstanceUID = text(v)
	case Tag{0x0008, 0x0060}:
		inst.Modality = text(v)
	case Tag{0x0008, 0x1030}:
		inst.StudyDescription = CutToVR("LO", inst.decode(v))
	case Tag{0x0008, 0x103E}:
		inst.SeriesDescription = CutToVR("LO", inst.decode(v))
	case Tag{0x0008, 0x0005}:
		inst.CharacterSet = text(v)
	case Tag{0x0010, 0x0010}:
		inst.Patient.Name = CutToVR("PN", inst.decode(v))
	case Tag{0x0010, 0x0020}:
		inst.Patient.ID = CutToVR("LO", inst.decode(v))
	case Tag{0x0010, 0x0030}:
		inst.Patient.BirthDate = CutToVR("DA", inst.decode(v))
	case Tag{0x0010, 0x0040}:
		inst.Patient.Sex = CutToVR("CS", inst.decode(v))
	case Tag{0x0008, 0x0050}:
		inst.Study.AccessionNumber = CutToVR("SH", inst.decode(v))
	case Tag{0x0008, 0x0020}:
		inst.Study.Date = CutToVR("DA", inst.decode(v))
	case Tag{0x0008, 0x0030}:
		inst.Study.Time = CutToVR("TM", inst.decode(v))
	case Tag{0x0008, 0x0090}:
		inst.Study.ReferringPhysician = CutToVR("PN", inst.decode(v))
	case Tag{0x0020, 0x0010}:
		inst.Study.ID = CutToVR("SH", inst.decode(v))
	case Tag{0x0018, 0x0015}:
		inst.BodyPartExamined = text(v)
	case Tag{0x0028, 0x0030}:
		// A spacing that does not parse is left out: the image is then uncalibrated, which
		// the pipelines say, rather than refused.
		parts := strings.Split(text(v), `\`)
		if len(parts) == 2 {
			r, rerr := strconv.ParseFloat(strings.TrimSpace(parts[0]), 64)
			c, cerr := strconv.ParseFloat(strings.TrimSpace(parts[1]), 64)
			if rerr == nil && cerr == nil && PlausibleMillimetres(r) && PlausibleMillimetres(c) {
				inst.PixelSpacing = [2]float64{r, c}
			}
		}
	case Tag{0x0020, 0x000D}:
		inst.StudyInstanceUID = text(v)
	case Tag{0x0020, 0x000E}:
		inst.SeriesInstanceUID = text(v)
	case Tag{0x0018, 0x1063}:
		f, perr := strconv.ParseFloat(strings.TrimSpace(text(v)), 64)
		if perr == nil && f >= 0 {
			inst.FrameTime = f
		}
	case Tag{0x0028, 0x0002}:
		inst.SamplesPerPixel, err = num(1)
	case Tag{0x0028, 0x0004}:
		inst.Photometric = text(v)
	case Tag{0x0028, 0x0006}:
		inst.PlanarConfiguration, err = num(1)
	case Tag{0x0028, 0x0008}:
		inst.Frames, err = num(1)
	case Tag{0x0028, 0x0010}:
		inst.Rows, err = num(1)
	case Tag{0x0028, 0x0011}:
		inst.Columns, err = num(1)
	case Tag{0x0028, 0x0100}:
		inst.BitsAllocated, err = num(1)
	case Tag{0x0028, 0x0101}:
		inst.BitsStored, err = num(1)
	case Tag{0x0028, 0x0103}:
		inst.PixelRepresentation, err = num(1)
	case Tag{0x0028, 0x1101}, Tag{0x0028, 0x1102}, Tag{0x0028, 0x1103}:
		if len(v) < 6 {
			return fmt.Errorf("%w: palette descriptor %s has %d bytes", ErrMalformed, h.tag, len(v))
		}
		l := &inst.palette[h.tag.Element-0x1101]
		l.entries, l.first, l.bits = u16(v, 0), u16(v, 1), u16(v, 2)
		if l.entries == 0 {
			l.entries = 65536
		}
	case Tag{0x0028, 0x1201}, Tag{0x0028, 0x1202}, Tag{0x0028, 0x1203}:
		inst.palette[h.tag.Element-0x1201].data = v
	case Tag{0x0018, 0x6012}:
		region().SpatialFormat, err = num(1)
	case Tag{0x0018, 0x6014}:
		region().DataType, err = num(1)
	case Tag{0x0018, 0x6018}:
		region().X0, err = num(1)
	case Tag{0x0018, 0x601A}:
		region().Y0, err = num(1)
	case Tag{0x0018, 0x601C}:
		region().X1, err = num(1)
	case Tag{0x0018, 0x601E}:
		region().Y1, err = num(1)
	case Tag{0x0018, 0x6024}:
		region().UnitsX, err = num(1)
	case Tag{0x0018, 0x6026}:
		region().UnitsY, err = num(1)
	case Tag{0x0018, 0x602C}:
		region().DeltaX, err = fd()
	case Tag{0x0018, 0x602E}:
		region().DeltaY, err = fd()
	}
	return err
}
