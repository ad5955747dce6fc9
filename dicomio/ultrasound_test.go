package dicomio

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
)

func greyUltrasound(frames int, mm float64) *GreyUltrasound {
	u := &GreyUltrasound{Width: 81, Height: 60, MMPerPixel: mm, StudyDescription: "OB ultrasound", SeriesDescription: "Fetal biometry"}
	for f := range frames {
		pix := make([]byte, u.Width*u.Height)
		for i := range pix {
			pix[i] = byte(i*7 + f)
		}
		u.Frames = append(u.Frames, pix)
	}
	return u
}

// TestUltrasoundDICOMReadsBack writes single- and multi-frame images (odd width, so an odd
// pixel length) and reads them back: descriptions, calibration and every pixel.
func TestUltrasoundDICOMReadsBack(t *testing.T) {
	for _, frames := range []int{1, 3} {
		u := greyUltrasound(frames, 0.0691358)
		data, err := UltrasoundDICOM(u)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatal(err)
		}
		inst := r.Instance()
		if inst.StudyDescription != "OB ultrasound" || inst.SeriesDescription != "Fetal biometry" || inst.SOPInstanceUID != u.SOPInstanceUID {
			t.Errorf("%d frames: read %+v", frames, inst)
		}
		if x, y, ok := inst.Regions[0].MillimetresPerPixel(); !ok || math.Abs(x-0.0691358) > 1e-12 || math.Abs(y-0.0691358) > 1e-12 {
			t.Errorf("%d frames: calibration %v %v %v", frames, x, y, ok)
		}
		wantClass := UltrasoundImageStorage
		if frames > 1 {
			wantClass = UltrasoundMultiFrameStorage
		}
		if inst.SOPClassUID != wantClass {
			t.Errorf("%d frames: SOP class %s", frames, inst.SOPClassUID)
		}
		for i := 0; ; i++ {
			f, err := r.Next()
			if err == io.EOF {
				if i != frames {
					t.Errorf("read %d frames of %d", i, frames)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.Pix, u.Frames[i]) {
				t.Errorf("frame %d differs", i+1)
			}
		}
	}
}

// TestUltrasoundDICOMPassesDciodvfy checks both IODs with dicom3tools.
func TestUltrasoundDICOMPassesDciodvfy(t *testing.T) {
	for _, frames := range []int{1, 2} {
		data, err := UltrasoundDICOM(greyUltrasound(frames, 0.1))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "us.dcm")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Dciodvfy(t, path)
	}
}

func TestUncalibratedAndPixelSpacing(t *testing.T) {
	data, err := UltrasoundDICOM(greyUltrasound(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(bytes.NewReader(data), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Instance().Regions) != 0 || r.Instance().PixelSpacing != [2]float64{} {
		t.Errorf("an uncalibrated image reads as calibrated: %+v", r.Instance())
	}
	var inst Instance
	if err := inst.set(header{tag: Tag{0x0028, 0x0030}, vr: "DS"}, []byte(`0.25\0.125 `)); err != nil || inst.PixelSpacing != [2]float64{0.25, 0.125} {
		t.Errorf("pixel spacing %v, %v", inst.PixelSpacing, err)
	}
	for _, bad := range []string{`0.25`, `x\1`, `-1\1`, `1\Inf`} {
		var inst Instance
		if err := inst.set(header{tag: Tag{0x0028, 0x0030}, vr: "DS"}, []byte(bad)); err != nil || inst.PixelSpacing != [2]float64{} {
			t.Errorf("pixel spacing %q read as %v (%v)", bad, inst.PixelSpacing, err)
		}
	}
}

// TestImpossibleCalibrationIsNoCalibration: deltas that are not finite, or absurd, leave the
// image uncalibrated rather than give sizes of -9e17 mm.
func TestImpossibleCalibrationIsNoCalibration(t *testing.T) {
	for _, mm := range []float64{math.Inf(1), 1e308, 60, math.NaN(), 1e-249, 1e-320, 0.0009} {
		data, err := UltrasoundDICOM(greyUltrasound(1, mm))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if x, y, ok := r.Instance().Regions[0].MillimetresPerPixel(); ok {
			t.Errorf("%v mm per pixel read as a calibration: %v, %v", mm, x, y)
		}
	}
	for _, bad := range []string{`1e308\1`, `10\10`, `1e-250\1e-250`, `0\0.1`} {
		var inst Instance
		if err := inst.set(header{tag: Tag{0x0028, 0x0030}, vr: "DS"}, []byte(bad)); err != nil || inst.PixelSpacing != [2]float64{} {
			t.Errorf("pixel spacing %q read as %v (%v)", bad, inst.PixelSpacing, err)
		}
	}
}

func TestReportRefusesImpossibleNumbers(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(-1), -9.223372036854776e17} {
		r := sampleReport()
		r.Groups[0].Measurements = []Measurement{{"long axis", v, "mm"}}
		if _, _, err := WriteSR(r); err == nil {
			t.Errorf("a report with a measurement of %v was written", v)
		}
	}
}

// TestRegionsAreBounded: a file with more ultrasound regions than MaxRegions is refused as over
// a limit, naming it; MaxRegions of them are read.
func TestRegionsAreBounded(t *testing.T) {
	withRegions := func(n int) []byte {
		var ds dataset
		ds.add(0x0008, 0x0016, "UI", UltrasoundImageStorage)
		ds.add(0x0008, 0x0018, "UI", "1.2.3.4")
		ds.add(0x0008, 0x0060, "CS", "US")
		var items []dataset
		for range n {
			var region dataset
			region.add(0x0018, 0x6012, "US", u16s(1))
			region.add(0x0018, 0x6024, "US", u16s(3))
			items = append(items, region)
		}
		ds.add(0x0018, 0x6011, "SQ", items)
		return tinyImage(t, ds)
	}
	r, err := Open(bytes.NewReader(withRegions(MaxRegions)), Options{})
	if err != nil || len(r.Instance().Regions) != MaxRegions {
		t.Fatalf("%d regions: %v", MaxRegions, err)
	}
	_, err = Open(bytes.NewReader(withRegions(5000)), Options{})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "Ultrasound Regions") {
		t.Errorf("5000 regions: %v", err)
	}
}

// TestPatientAndStudyModules: the reader keeps who and what the images are of, in UTF-8
// whatever the file's character set.
func TestPatientAndStudyModules(t *testing.T) {
	file := func(charset, name string) []byte {
		var ds dataset
		if charset != "" {
			ds.add(0x0008, 0x0005, "CS", charset)
		}
		ds.add(0x0008, 0x0016, "UI", UltrasoundImageStorage)
		ds.add(0x0008, 0x0018, "UI", "1.2.3.4")
		ds.add(0x0008, 0x0020, "DA", "20261201")
		ds.add(0x0008, 0x0030, "TM", "101500")
		ds.add(0x0008, 0x0050, "SH", "ACC-778")
		ds.add(0x0008, 0x0060, "CS", "US")
		ds.add(0x0008, 0x0090, "PN", "HOUSE^GREGORY")
		ds.add(0x0008, 0x1030, "LO", "OB second trimester")
		ds.add(0x0010, 0x0010, "PN", name)
		ds.add(0x0010, 0x0020, "LO", "MRN-1234")
		ds.add(0x0010, 0x0030, "DA", "19900214")
		ds.add(0x0010, 0x0040, "CS", "F")
		ds.add(0x0020, 0x0010, "SH", "S77")
		return tinyImage(t, ds)
	}
	for _, tt := range []struct{ charset, raw, want string }{
		{"ISO_IR 100", "M\xdcLLER^J\xd6RG", "MÜLLER^JÖRG"},
		{"ISO_IR 192", "MÜLLER^JÖRG", "MÜLLER^JÖRG"},
		{"", "DOE^JANE", "DOE^JANE"},
		{"", "BAD\xff^BYTE", "BAD?^BYTE"},
	} {
		r, err := Open(bytes.NewReader(file(tt.charset, tt.raw)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		inst := r.Instance()
		wantPatient := Patient{Name: tt.want, ID: "MRN-1234", BirthDate: "19900214", Sex: "F"}
		wantStudy := Study{AccessionNumber: "ACC-778", Date: "20261201", Time: "101500", ReferringPhysician: "HOUSE^GREGORY", ID: "S77"}
		if inst.Patient != wantPatient || inst.Study != wantStudy || inst.StudyDescription != "OB second trimester" {
			t.Errorf("%q: got %+v %+v, want %+v %+v", tt.charset, inst.Patient, inst.Study, wantPatient, wantStudy)
		}
	}
}

// tinyImage adds a 2 x 2 grey image to ds and writes it as an ultrasound file.
func tinyImage(t *testing.T, ds dataset) []byte {
	t.Helper()
	ds.add(0x0028, 0x0002, "US", u16s(1))
	ds.add(0x0028, 0x0004, "CS", "MONOCHROME2")
	ds.add(0x0028, 0x0010, "US", u16s(2))
	ds.add(0x0028, 0x0011, "US", u16s(2))
	ds.add(0x0028, 0x0100, "US", u16s(8))
	ds.add(0x0028, 0x0101, "US", u16s(8))
	ds.add(0x0028, 0x0102, "US", u16s(7))
	ds.add(0x0028, 0x0103, "US", u16s(0))
	ds.add(0x7FE0, 0x0010, "OB", []byte{1, 2, 3, 4})
	data, err := part10(UltrasoundImageStorage, "1.2.3.4", ds)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
