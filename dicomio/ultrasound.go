package dicomio

import (
	"errors"
	"fmt"
	"math"
)

// UltrasoundImageStorage is the SOP Class of single-frame ultrasound images.
const UltrasoundImageStorage = "1.2.840.10008.5.1.4.1.1.6.1"

// GreyUltrasound is an 8-bit grey ultrasound image (one frame or a loop) to write as DICOM,
// with what a scanner says about the exam. The patient attributes are written empty: Vigil
// never makes up patient data.
type GreyUltrasound struct {
	Width, Height int
	// Frames holds Width*Height bytes per frame; more than one makes a multi-frame image.
	Frames [][]byte
	// MMPerPixel calibrates the image as scanners do, through a Sequence of Ultrasound
	// Regions over the whole image in centimetres; 0 writes no calibration at all. (Any other
	// value is written as given, impossible ones too, for the tests that need them.)
	MMPerPixel float64
	// Region is the ultrasound region's x0, y0, x1, y1 (inclusive); zero means the whole image.
	Region [4]int

	StudyDescription, SeriesDescription, Manufacturer string
	// Patient and Study are written as given (empty: the type 2 attributes stay empty), in
	// UTF-8 with Specific Character Set ISO_IR 192 when any is not ASCII.
	Patient Patient
	Study   Study
	// The UIDs are made when empty.
	StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID string
}

// UltrasoundDICOM writes the image in Explicit VR Little Endian: an Ultrasound Image, or an
// Ultrasound Multi-frame Image when it has more than one frame. It fills the empty UIDs.
func UltrasoundDICOM(u *GreyUltrasound) ([]byte, error) {
	if u.Width <= 0 || u.Height <= 0 || len(u.Frames) == 0 {
		return nil, errors.New("dicomio: an ultrasound image needs a size and a frame")
	}
	for i, f := range u.Frames {
		if len(f) != u.Width*u.Height {
			return nil, fmt.Errorf("dicomio: frame %d has %d bytes for %d x %d", i+1, len(f), u.Width, u.Height)
		}
	}
	for _, uid := range []*string{&u.StudyInstanceUID, &u.SeriesInstanceUID, &u.SOPInstanceUID} {
		if *uid == "" {
			*uid = NewUID()
		}
	}
	sopClass := UltrasoundImageStorage
	if len(u.Frames) > 1 {
		sopClass = UltrasoundMultiFrameStorage
	}
	var ds dataset
	ds.add(0x0008, 0x0016, "UI", sopClass)
	ds.add(0x0008, 0x0018, "UI", u.SOPInstanceUID)
	ds.add(0x0008, 0x0060, "CS", "US")
	ds.add(0x0008, 0x0020, "DA", u.Study.Date)
	ds.add(0x0008, 0x0030, "TM", u.Study.Time)
	ds.add(0x0008, 0x0050, "SH", u.Study.AccessionNumber)
	ds.add(0x0008, 0x0070, "LO", u.Manufacturer)
	ds.add(0x0008, 0x0090, "PN", u.Study.ReferringPhysician)
	if !ascii(u.Patient.Name, u.Patient.ID, u.Study.ReferringPhysician, u.StudyDescription, u.SeriesDescription) {
		ds.add(0x0008, 0x0005, "CS", "ISO_IR 192")
	}
	ds.add(0x0008, 0x0008, "CS", []string{"DERIVED", "SECONDARY"})
	if u.StudyDescription != "" {
		ds.add(0x0008, 0x1030, "LO", u.StudyDescription)
	}
	if u.SeriesDescription != "" {
		ds.add(0x0008, 0x103E, "LO", u.SeriesDescription)
	}
	ds.add(0x0010, 0x0010, "PN", u.Patient.Name)
	ds.add(0x0010, 0x0020, "LO", u.Patient.ID)
	ds.add(0x0010, 0x0030, "DA", u.Patient.BirthDate)
	ds.add(0x0010, 0x0040, "CS", u.Patient.Sex)
	ds.add(0x0020, 0x000D, "UI", u.StudyInstanceUID)
	ds.add(0x0020, 0x000E, "UI", u.SeriesInstanceUID)
	ds.add(0x0020, 0x0010, "SH", u.Study.ID)
	ds.add(0x0020, 0x0011, "IS", "1")
	ds.add(0x0020, 0x0013, "IS", "1")
	ds.add(0x0020, 0x0020, "CS", "")
	ds.add(0x0020, 0x0060, "CS", "")
	ds.add(0x0028, 0x0002, "US", u16s(1))
	ds.add(0x0028, 0x0004, "CS", "MONOCHROME2")
	if len(u.Frames) > 1 {
		ds.add(0x0018, 0x1063, "DS", "33.3")
		ds.add(0x0028, 0x0008, "IS", fmt.Sprint(len(u.Frames)))
		ds.add(0x0028, 0x0009, "AT", []byte{0x18, 0x00, 0x63, 0x10})
	}
	ds.add(0x0028, 0x0010, "US", u16s(u.Height))
	ds.add(0x0028, 0x0011, "US", u16s(u.Width))
	ds.add(0x0028, 0x0100, "US", u16s(8))
	ds.add(0x0028, 0x0101, "US", u16s(8))
	ds.add(0x0028, 0x0102, "US", u16s(7))
	ds.add(0x0028, 0x0103, "US", u16s(0))
	ds.add(0x0028, 0x2110, "CS", "00")
	if u.MMPerPixel > 0 || math.IsNaN(u.MMPerPixel) {
		r := u.Region
		if r == [4]int{} {
			r = [4]int{0, 0, u.Width - 1, u.Height - 1}
		}
		var region dataset
		region.add(0x0018, 0x6012, "US", u16s(1)) // 2D
		region.add(0x0018, 0x6014, "US", u16s(1)) // tissue
		region.add(0x0018, 0x6016, "UL", uint32(0))
		region.add(0x0018, 0x6018, "UL", uint32(r[0]))
		region.add(0x0018, 0x601A, "UL", uint32(r[1]))
		region.add(0x0018, 0x601C, "UL", uint32(r[2]))
		region.add(0x0018, 0x601E, "UL", uint32(r[3]))
		region.add(0x0018, 0x6024, "US", u16s(3)) // cm
		region.add(0x0018, 0x6026, "US", u16s(3))
		region.add(0x0018, 0x602C, "FD", f64s(u.MMPerPixel/10))
		region.add(0x0018, 0x602E, "FD", f64s(u.MMPerPixel/10))
		ds.add(0x0018, 0x6011, "SQ", []dataset{region})
	}
	pixels := make([]byte, 0, u.Width*u.Height*len(u.Frames)+1)
	for _, f := range u.Frames {
		pixels = append(pixels, f...)
	}
	if len(pixels)%2 == 1 {
		pixels = append(pixels, 0) // values are of even length
	}
	ds.add(0x7FE0, 0x0010, "OB", pixels)
	return part10(sopClass, u.SOPInstanceUID, ds)
}

// ascii says whether every string is plain ASCII (DICOM's default character set).
func ascii(ss ...string) bool {
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}
