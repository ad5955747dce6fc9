package dicomio

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/vision"
)

var withJ2K = Options{Decoders: Decoders{JPEG2000: vision.DecodeJPEG2000}}

func sharedDICOM(t *testing.T, rel string) string {
	return testenv.Shared(t, filepath.Join("dicom", rel))
}

// readAll opens a file and decodes every frame.
func readAll(t *testing.T, path string, opts Options) (Instance, []Frame) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Open(f, opts)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	var frames []Frame
	for {
		fr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		frames = append(frames, fr)
	}
	return r.Instance(), frames
}

func TestInstanceAttributes(t *testing.T) {
	tests := []struct {
		file                string
		ts, modality, photo string
		frames, rows, cols  int
		regions             int
		mmPerPixel          float64 // 0: no calibration
	}{
		{"ultrasound/us-cine8-jpegbaseline-ybrfull.dcm", JPEGBaseline, "US", "YBR_FULL", 8, 240, 320, 2, 0},
		{"ultrasound/us-cine8-native-rgb-implicit.dcm", ImplicitVRLittleEndian, "US", "RGB", 8, 240, 320, 2, 0},
		{"ultrasound/us1-native-rgb.dcm", ExplicitVRLittleEndian, "US", "RGB", 1, 480, 640, 0, 0},
		{"ultrasound/us1-jpeg2000-lossless.dcm", JPEG2000Lossless, "US", "YBR_RCT", 1, 480, 640, 0, 0},
		{"ultrasound/ob-2frame-palette-native.dcm", ExplicitVRLittleEndian, "US", "PALETTE COLOR", 2, 600, 800, 2, 0.26228787661969974},
		{"ultrasound/ob-2frame-palette-rle.dcm", RLELossless, "US", "PALETTE COLOR", 2, 600, 800, 2, 0.26228787661969974},
		{"other/mr-1024-native16.dcm", ExplicitVRLittleEndian, "MR", "MONOCHROME2", 1, 1024, 1024, 0, 0},
		{"other/sc-rgb-2frame.dcm", ExplicitVRLittleEndian, "OT", "RGB", 2, 100, 100, 0, 0},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			inst, frames := readAll(t, sharedDICOM(t, tt.file), withJ2K)
			got := fmt.Sprint(inst.TransferSyntax, inst.Modality, inst.Photometric, inst.Frames, inst.Rows, inst.Columns, len(inst.Regions))
			want := fmt.Sprint(tt.ts, tt.modality, tt.photo, tt.frames, tt.rows, tt.cols, tt.regions)
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if len(frames) != tt.frames {
				t.Errorf("decoded %d frames, want %d", len(frames), tt.frames)
			}
			if inst.SOPInstanceUID == "" || inst.StudyInstanceUID == "" || inst.SeriesInstanceUID == "" || inst.SOPClassUID == "" {
				t.Errorf("missing UIDs: %+v", inst)
			}
			if tt.mmPerPixel > 0 {
				x, y, ok := inst.Regions[0].MillimetresPerPixel()
				if !ok || math.Abs(x-tt.mmPerPixel) > 1e-9 || math.Abs(y-tt.mmPerPixel) > 1e-9 {
					t.Errorf("calibration %v %v %v, want %v mm per pixel", x, y, ok, tt.mmPerPixel)
				}
				if r := inst.Regions[0]; r.X0 != 120 || r.Y0 != 60 || r.X1 != 800 || r.Y1 != 518 {
					t.Errorf("region %+v, want 120,60 to 800,518", r)
				}
			}
		})
	}
}

// readPNM reads a binary PGM or PPM as dcmj2pnm writes it.
func readPNM(t *testing.T, path string) (w, h, channels int, pix []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var magic string
	var maxv int
	if _, err := fmt.Fscan(br, &magic, &w, &h, &maxv); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	br.ReadByte()
	channels = map[string]int{"P5": 1, "P6": 3}[magic]
	if channels == 0 || maxv != 255 {
		t.Fatalf("%s: %s with max %d, want binary 8-bit", path, magic, maxv)
	}
	pix = make([]byte, w*h*channels)
	if _, err := io.ReadFull(br, pix); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return
}

// dcmtkFrames renders every frame with dcmj2pnm (no windowing) and returns them in order.
func dcmtkFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	if _, err := exec.LookPath("dcmj2pnm"); err != nil {
		t.Fatal("dcmj2pnm is not installed: run `make deps` (Debian package dcmtk)")
	}
	dir := t.TempDir()
	out, err := exec.Command("dcmj2pnm", "+Fa", "+op", path, filepath.Join(dir, "frame")).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmj2pnm %s: %v\n%s", path, err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "frame*"))
	sort.Slice(files, func(i, j int) bool { return frameIndex(files[i]) < frameIndex(files[j]) })
	var frames [][]byte
	for _, f := range files {
		_, _, _, pix := readPNM(t, f)
		frames = append(frames, pix)
	}
	return frames
}

func frameIndex(name string) int {
	var n int
	base := filepath.Base(name)
	fmt.Sscanf(strings.TrimLeft(base, "frame."), "%d", &n)
	return n
}

// compare reports the largest and the mean absolute difference between two frames.
func compare(a, b []byte) (maxDiff int, mean float64) {
	var sum int
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d < 0 {
			d = -d
		}
		sum += d
		maxDiff = max(maxDiff, d)
	}
	return maxDiff, float64(sum) / float64(len(a))
}

// TestPixelsMatchDcmtk decodes each file and compares every frame with dcmtk's rendering of
// the same file: exactly for the lossless syntaxes, within the stated tolerance for JPEG
// Baseline (two decoders may round the inverse DCT and the colour conversion differently).
func TestPixelsMatchDcmtk(t *testing.T) {
	tests := []struct {
		file    string
		maxDiff int
		maxMean float64
	}{
		{"ultrasound/us-cine8-native-rgb-implicit.dcm", 0, 0},
		{"ultrasound/us1-native-rgb.dcm", 0, 0},
		{"ultrasound/ob-2frame-palette-native.dcm", 0, 0},
		{"ultrasound/ob-2frame-palette-rle.dcm", 0, 0},
		{"other/sc-rgb-2frame.dcm", 0, 0},
		// JPEG Baseline: within 4 per sample, 0.2 on average (measured: 3 to 4, mean 0.12).
		{"ultrasound/us-cine8-jpegbaseline-ybrfull.dcm", 4, 0.2},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			path := sharedDICOM(t, tt.file)
			_, ours := readAll(t, path, withJ2K)
			theirs := dcmtkFrames(t, path)
			if len(ours) != len(theirs) {
				t.Fatalf("got %d frames, dcmtk %d", len(ours), len(theirs))
			}
			for i := range ours {
				if len(ours[i].Pix) != len(theirs[i]) {
					t.Fatalf("frame %d: %d bytes, dcmtk %d", i+1, len(ours[i].Pix), len(theirs[i]))
				}
				d, mean := compare(ours[i].Pix, theirs[i])
				if d > tt.maxDiff || mean > tt.maxMean {
					t.Errorf("frame %d: differs from dcmtk by up to %d (mean %.3f), want at most %d (mean %.2f)", i+1, d, mean, tt.maxDiff, tt.maxMean)
				}
				if i == 0 {
					t.Logf("frame 1: max difference %d, mean %.4f", d, mean)
				}
			}
		})
	}
}

// TestJPEG2000MatchesTheNativeImage decodes the lossless JPEG 2000 file, which dcmtk's free
// build cannot, and compares it with the native file of the same image.
func TestJPEG2000MatchesTheNativeImage(t *testing.T) {
	_, j2k := readAll(t, sharedDICOM(t, "ultrasound/us1-jpeg2000-lossless.dcm"), withJ2K)
	_, native := readAll(t, sharedDICOM(t, "ultrasound/us1-native-rgb.dcm"), withJ2K)
	if d, mean := compare(j2k[0].Pix, native[0].Pix); d != 0 {
		t.Errorf("lossless JPEG 2000 differs from the native image by up to %d (mean %.3f)", d, mean)
	}
	f, _ := os.Open(sharedDICOM(t, "ultrasound/us1-jpeg2000-lossless.dcm"))
	defer f.Close()
	_, err := Open(f, Options{})
	if !errors.Is(err, ErrUnsupportedTransferSyntax) || !strings.Contains(err.Error(), JPEG2000Lossless) {
		t.Errorf("without a JPEG 2000 decoder: got %v, want ErrUnsupportedTransferSyntax naming %s", err, JPEG2000Lossless)
	}
}

// TestJPEG2000SizeCheckedBeforeDecoding: a frame whose codestream claims 30000 x 30000 (the
// DICOM header says 640 x 480) is refused from its header, before OpenJPEG allocates 2.7 GB.
func TestJPEG2000SizeCheckedBeforeDecoding(t *testing.T) {
	data, err := os.ReadFile(sharedDICOM(t, "ultrasound/us1-jpeg2000-lossless.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	siz := bytes.Index(data, []byte{0xFF, 0x4F, 0xFF, 0x51})
	if siz < 0 {
		t.Fatal("no JPEG 2000 codestream in the file")
	}
	x := siz + 8 // SOC, SIZ, Lsiz, Rsiz
	if w, h := binary.BigEndian.Uint32(data[x:]), binary.BigEndian.Uint32(data[x+4:]); w != 640 || h != 480 {
		t.Fatalf("the codestream says %d x %d", w, h)
	}
	binary.BigEndian.PutUint32(data[x:], 30000)
	binary.BigEndian.PutUint32(data[x+4:], 30000)
	r, err := Open(bytes.NewReader(data), withJ2K)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Next()
	if err == nil || !strings.Contains(err.Error(), "says 30000 x 30000, the DICOM header 640 x 480") {
		t.Errorf("a forged 30000 x 30000 codestream: %v", err)
	}
}

// Test16BitGreyMatchesTheRawPixelData compares the MR image's 16-bit values with the bytes
// dcmdump writes out of its pixel data element.
func Test16BitGreyMatchesTheRawPixelData(t *testing.T) {
	path := sharedDICOM(t, "other/mr-1024-native16.dcm")
	_, frames := readAll(t, path, Options{})
	dir := t.TempDir()
	if out, err := exec.Command("dcmdump", "-q", "+W", dir, path).CombinedOutput(); err != nil {
		t.Fatalf("dcmdump +W: %v\n%s", err, out)
	}
	raws, _ := filepath.Glob(filepath.Join(dir, "*.raw"))
	var raw []byte
	for _, p := range raws {
		if data, _ := os.ReadFile(p); len(data) == 1024*1024*2 {
			raw = data
		}
	}
	if raw == nil {
		t.Fatalf("dcmdump wrote no pixel data file among %v", raws)
	}
	for i, v := range frames[0].Pix16 {
		if want := uint16(raw[2*i]) | uint16(raw[2*i+1])<<8; v != want {
			t.Fatalf("pixel %d: %d, dcmdump %d", i, v, want)
		}
	}
}

// convert runs a dcmtk tool that writes out from in, failing the test when it is missing.
func convert(t *testing.T, tool string, args ...string) {
	t.Helper()
	if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
	}
}

// TestOtherTransferSyntaxesAreRefusedByName makes files in syntaxes Vigil does not decode with
// dcmtk and checks each error names the UID and its name.
func TestOtherTransferSyntaxesAreRefusedByName(t *testing.T) {
	src := sharedDICOM(t, "ultrasound/us1-native-rgb.dcm")
	dir := t.TempDir()
	tests := []struct {
		tool string
		args []string
		uid  string
		name string
	}{
		{"dcmcjpeg", []string{"+el"}, "1.2.840.10008.1.2.4.57", "JPEG Lossless"},
		{"dcmcjpeg", []string{"+e1"}, "1.2.840.10008.1.2.4.70", "First-Order Prediction"},
		{"dcmcjpeg", []string{"+ee"}, "1.2.840.10008.1.2.4.51", "JPEG Extended"},
		{"dcmconv", []string{"+td"}, "1.2.840.10008.1.2.1.99", "Deflated"},
		{"dcmconv", []string{"+tb"}, "1.2.840.10008.1.2.2", "Big Endian"},
	}
	for i, tt := range tests {
		out := filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		convert(t, tt.tool, append(tt.args, src, out)...)
		f, _ := os.Open(out)
		_, err := Open(f, withJ2K)
		f.Close()
		if !errors.Is(err, ErrUnsupportedTransferSyntax) || !strings.Contains(err.Error(), tt.uid) || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("%s %v: got %v, want ErrUnsupportedTransferSyntax naming %s and %q", tt.tool, tt.args, err, tt.uid, tt.name)
		}
	}
}

// TestDcmtkDecompressedFilesMatch decompresses the JPEG and RLE files with dcmtk and reads the
// native results: the same frames as decoding the compressed files directly.
func TestDcmtkDecompressedFilesMatch(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		file, tool string
		maxDiff    int
	}{
		{"ultrasound/ob-2frame-palette-rle.dcm", "dcmdrle", 0},
		{"ultrasound/us-cine8-jpegbaseline-ybrfull.dcm", "dcmdjpeg", 4},
	} {
		src := sharedDICOM(t, tt.file)
		out := filepath.Join(dir, filepath.Base(tt.file))
		convert(t, tt.tool, src, out)
		_, compressed := readAll(t, src, Options{})
		_, native := readAll(t, out, Options{})
		for i := range compressed {
			if d, _ := compare(compressed[i].Pix, native[i].Pix); d > tt.maxDiff {
				t.Errorf("%s frame %d: differs from %s's output by %d, want at most %d", tt.file, i+1, tt.tool, d, tt.maxDiff)
			}
		}
	}
}

func readBytes(data []byte, opts Options) error {
	r, err := Open(bytes.NewReader(data), opts)
	if err != nil {
		return err
	}
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func TestLimits(t *testing.T) {
	data, _ := os.ReadFile(sharedDICOM(t, "ultrasound/us-cine8-native-rgb-implicit.dcm"))
	tests := []struct {
		name   string
		limits Limits
	}{
		{"rows", Limits{MaxFrames: 100, MaxRows: 200, MaxCols: 4096, MaxBytes: 1 << 30}},
		{"columns", Limits{MaxFrames: 100, MaxRows: 4096, MaxCols: 300, MaxBytes: 1 << 30}},
		{"frames", Limits{MaxFrames: 4, MaxRows: 4096, MaxCols: 4096, MaxBytes: 1 << 30}},
		{"bytes", Limits{MaxFrames: 100, MaxRows: 4096, MaxCols: 4096, MaxBytes: 1 << 20}},
	}
	for _, tt := range tests {
		if err := readBytes(data, Options{Limits: tt.limits}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s limit: got %v, want ErrTooLarge", tt.name, err)
		}
	}
	if err := readBytes(data, Options{}); err != nil {
		t.Errorf("default limits: %v", err)
	}
}

func TestTruncatedFilesFailCleanly(t *testing.T) {
	for _, file := range []string{"ultrasound/us-cine8-jpegbaseline-ybrfull.dcm", "ultrasound/ob-2frame-palette-rle.dcm", "ultrasound/us1-native-rgb.dcm"} {
		data, _ := os.ReadFile(sharedDICOM(t, file))
		for _, cut := range []int{0, 100, 131, 140, 300, len(data) / 3, len(data) / 2, len(data) - 400} {
			err := readBytes(data[:cut], Options{})
			if err == nil {
				t.Errorf("%s cut at %d: read without an error", file, cut)
				continue
			}
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrNotDICOM) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoPixelData) {
				t.Errorf("%s cut at %d: got %v, want a truncation error", file, cut, err)
			}
		}
	}
}

func TestNotDICOM(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0xAB}, 4096)} {
		if err := readBytes(data, Options{}); !errors.Is(err, ErrNotDICOM) {
			t.Errorf("%d bytes of junk: got %v, want ErrNotDICOM", len(data), err)
		}
	}
}

// digestOf opens data, reads frames frames, and returns Digest's answer.
func digestOf(t *testing.T, data []byte, frames int) string {
	t.Helper()
	r, err := Open(bytes.NewReader(data), withJ2K)
	if err != nil {
		t.Fatal(err)
	}
	for range frames {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	d, err := r.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDigestIsOfWhatTheInstanceShows: one instance sent natively and RLE-compressed under
// one UID has one digest, however many frames were read before; one pixel changed, or
// another study named, gives another.
func TestDigestIsOfWhatTheInstanceShows(t *testing.T) {
	native, err := os.ReadFile(sharedDICOM(t, "ultrasound/ob-2frame-palette-native.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	rle, err := os.ReadFile(sharedDICOM(t, "ultrasound/ob-2frame-palette-rle.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	want := digestOf(t, native, 0)
	if got := digestOf(t, native, 1); got != want {
		t.Errorf("native, one frame read first: %s, all at once: %s", got, want)
	}
	if got := digestOf(t, rle, 2); got != want {
		t.Errorf("RLE Lossless: %s, native: %s; one instance in two lossless syntaxes must have one digest", got, want)
	}
	changed := bytes.Clone(native)
	changed[len(changed)-1] ^= 0xFF // the last palette index of the last frame
	if got := digestOf(t, changed, 0); got == want {
		t.Error("one pixel changed: same digest")
	}
	r, err := Open(bytes.NewReader(native), withJ2K)
	if err != nil {
		t.Fatal(err)
	}
	study := r.Instance().StudyInstanceUID
	other := bytes.Replace(native, []byte(study), []byte(study[:len(study)-1]+"9"), 1)
	if study[len(study)-1] == '9' {
		other = bytes.Replace(native, []byte(study), []byte(study[:len(study)-1]+"8"), 1)
	}
	if got := digestOf(t, other, 0); got == want {
		t.Error("another Study Instance UID: same digest")
	}
}
