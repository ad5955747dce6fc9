package dicomio

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ComprehensiveSRStorage is the SOP Class of the reports Vigil writes.
const ComprehensiveSRStorage = "1.2.840.10008.5.1.4.1.1.88.33"

// Code is a coded concept: value, coding scheme and meaning.
type Code struct{ Value, Scheme, Meaning string }

// Concepts used in the report (DICOM PS3.16 DCM codes, SNOMED CT and UCUM).
var (
	codeMeasurementReport = Code{"126000", "DCM", "Imaging Measurement Report"}
	codeLanguage          = Code{"121049", "DCM", "Language of Content Item and Descendants"}
	codeEnglish           = Code{"en", "RFC5646", "English"}
	codeProcedureReported = Code{"121058", "DCM", "Procedure reported"}
	codeUltrasonography   = Code{"16310003", "SCT", "Ultrasonography"}
	codeObserverType      = Code{"121005", "DCM", "Observer Type"}
	codeDevice            = Code{"121007", "DCM", "Device"}
	codeDeviceUID         = Code{"121012", "DCM", "Device Observer UID"}
	codeDeviceName        = Code{"121013", "DCM", "Device Observer Name"}
	codeMeasurements      = Code{"126010", "DCM", "Imaging Measurements"}
	codeMeasurementGroup  = Code{"125007", "DCM", "Measurement Group"}
	codeTrackingID        = Code{"112039", "DCM", "Tracking Identifier"}
	codeTrackingUID       = Code{"112040", "DCM", "Tracking Unique Identifier"}
	codeFinding           = Code{"121071", "DCM", "Finding"}
	codeImageRegion       = Code{"111030", "DCM", "Image Region"}
	codeSourceImage       = Code{"121112", "DCM", "Source of Measurement"}
	codeComment           = Code{"121106", "DCM", "Comment"}
	codeAlgorithmName     = Code{"111001", "DCM", "Algorithm Name"}
	codeAlgorithmVersion  = Code{"111003", "DCM", "Algorithm Version"}
)

// measurementConcepts codes the measurement names the pipelines use; any other name gets a
// code in Vigil's local scheme.
var measurementConcepts = map[string]Code{
	"long axis":  {"103339001", "SCT", "Long Axis"},
	"short axis": {"103340004", "SCT", "Short Axis"},
	"area":       {"42798000", "SCT", "Area"},
	"diameter":   {"81827009", "SCT", "Diameter"},
	// DICOM PS3.16 CID 12005 Fetal Biometry Measurements (LOINC).
	"hc":  {"11984-2", "LN", "Head Circumference"},
	"bpd": {"11820-8", "LN", "Biparietal Diameter"},
	"ofd": {"11851-3", "LN", "Occipital-Frontal Diameter"},
}

// ucumMeanings are the code meanings of the UCUM units the pipelines use.
var ucumMeanings = map[string]string{
	"mm": "millimeter", "mm2": "square millimeter", "cm": "centimeter", "cm2": "square centimeter",
	"1": "no units", "s": "second", "/min": "per minute", "m/s": "meter per second", "{pixels}": "pixels", "wk": "week", "%": "percent",
	"deg": "degree", "{steps}": "steps", "{body_height}": "body heights", "{body_height}/s": "body heights per second",
}

// MaxMeasurement bounds the magnitude of a measured value in a report: no measurement Vigil
// makes comes near it (a metre in mm, a year in seconds are below it).
const MaxMeasurement = 1e8

// KnownUnit says whether a unit is one of the UCUM units Vigil writes.
func KnownUnit(unit string) bool {
	_, ok := ucumMeanings[unit]
	return ok
}

// LocalScheme is the coding scheme designator of Vigil's own codes (a private "99" scheme).
const LocalScheme = "99VIGIL"

// LocalCode makes a code in Vigil's scheme from free text such as a finding's label.
func LocalCode(meaning string) Code {
	value := strings.ToUpper(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '-'
	}, meaning))
	if len(value) > 16 {
		value = value[:16]
	}
	return Code{value, LocalScheme, CutToVR("LO", meaning)}
}

// MeasurementConcept is the code for a measurement name.
func MeasurementConcept(name string) Code {
	if c, ok := measurementConcepts[strings.ToLower(name)]; ok {
		return c
	}
	return LocalCode(name)
}

// ImageRef points at a source image and, for a multi-frame image, its frames.
type ImageRef struct {
	SOPClassUID       string
	SOPInstanceUID    string
	SeriesInstanceUID string
	// Frames are 1-based; they are written only for a multi-frame source.
	Frames     []int
	MultiFrame bool
}

// Measurement is a number with a UCUM unit.
type Measurement struct {
	Name  string
	Value float64
	Unit  string
}

// MeasurementGroup is one decided finding in the report (TID 1501 style).
type MeasurementGroup struct {
	TrackingID   string
	Finding      Code
	Measurements []Measurement
	// Region is a closed polyline (x1,y1,...,x1,y1) in the source image's pixels, or empty.
	Region           []float32
	Image            ImageRef
	Comment          string
	AlgorithmName    string
	AlgorithmVersion string
}

// Report is what goes into a measurement report for one study.
type Report struct {
	StudyInstanceUID string
	// Patient and Study are copied from the source images, so that a PACS files the report
	// with them, in the same patient's study (empty: the type 2 attributes stay empty).
	Patient          Patient
	Study            Study
	StudyDescription string
	Groups           []MeasurementGroup
	Time             time.Time
	// DeviceName and DeviceUID identify the system that made the report.
	DeviceName string
	DeviceUID  string
}

// ErrEmptyReport means there is nothing to report.
var ErrEmptyReport = errors.New("dicomio: no findings to report")

// item builds a content item: relationship, value type, concept name.
func item(rel, valueType string, name Code) dataset {
	var d dataset
	if rel != "" {
		d.add(0x0040, 0xA010, "CS", rel)
	}
	d.add(0x0040, 0xA040, "CS", valueType)
	d.add(0x0040, 0xA043, "SQ", []dataset{code(name)})
	return d
}

func code(c Code) dataset {
	var d dataset
	d.add(0x0008, 0x0100, "SH", c.Value)
	d.add(0x0008, 0x0102, "SH", c.Scheme)
	d.add(0x0008, 0x0104, "LO", c.Meaning)
	return d
}

func textItem(rel string, name Code, text string) dataset {
	d := item(rel, "TEXT", name)
	d.add(0x0040, 0xA160, "UT", text)
	return d
}

func codeItem(rel string, name, value Code) dataset {
	d := item(rel, "CODE", name)
	d.add(0x0040, 0xA168, "SQ", []dataset{code(value)})
	return d
}

func uidItem(rel string, name Code, uid string) dataset {
	d := item(rel, "UIDREF", name)
	d.add(0x0040, 0xA124, "UI", uid)
	return d
}

func container(rel string, name Code, children []dataset) dataset {
	d := item(rel, "CONTAINER", name)
	d.add(0x0040, 0xA050, "CS", "SEPARATE")
	if len(children) > 0 {
		d.add(0x0040, 0xA730, "SQ", children)
	}
	return d
}

func imageItem(rel string, name Code, ref ImageRef) dataset {
	d := item(rel, "IMAGE", name)
	var sop dataset
	sop.add(0x0008, 0x1150, "UI", ref.SOPClassUID)
	sop.add(0x0008, 0x1155, "UI", ref.SOPInstanceUID)
	if ref.MultiFrame && len(ref.Frames) > 0 {
		frames := make([]string, len(ref.Frames))
		for i, f := range ref.Frames {
			frames[i] = strconv.Itoa(f)
		}
		sop.add(0x0008, 0x1160, "IS", frames)
	}
	d.add(0x0008, 0x1199, "SQ", []dataset{sop})
	return d
}

// decimalString writes a DS value in at most 16 characters.
func decimalString(v float64) string {
	if s := strconv.FormatFloat(v, 'f', -1, 64); len(s) <= 16 {
		return s
	}
	for prec := 15; prec >= 0; prec-- {
		s := strconv.FormatFloat(v, 'g', prec, 64)
		if len(s) <= 16 {
			return s
		}
	}
	return "0"
}

func numItem(m Measurement, region []float32, ref ImageRef) dataset {
	d := item("CONTAINS", "NUM", MeasurementConcept(m.Name))
	meaning, ok := ucumMeanings[m.Unit]
	if !ok {
		meaning = m.Unit
	}
	var value dataset
	value.add(0x0040, 0x08EA, "SQ", []dataset{code(Code{m.Unit, "UCUM", meaning})})
	value.add(0x0040, 0xA30A, "DS", decimalString(m.Value))
	d.add(0x0040, 0xA300, "SQ", []dataset{value})
	if len(region) >= 6 {
		scoord := item("INFERRED FROM", "SCOORD", codeImageRegion)
		scoord.add(0x0070, 0x0022, "FL", region)
		scoord.add(0x0070, 0x0023, "CS", "POLYLINE")
		scoord.add(0x0040, 0xA730, "SQ", []dataset{imageItem("SELECTED FROM", codeSourceImage, ref)})
		d.add(0x0040, 0xA730, "SQ", []dataset{scoord})
	}
	return d
}

// trackingUID derives a stable UID from a finding's ID, so that exporting twice names the same
// finding the same way.
func trackingUID(id string) string {
	sum := sha256.Sum256([]byte("vigil-finding:" + id))
	return "2.25." + new(big.Int).SetBytes(sum[:16]).String()
}

// WriteSR writes a Comprehensive SR document of the groups as a DICOM Part 10 file, in the
// style of TID 1500 (Measurement Report). It returns the file and its SOP Instance UID.
//
// The patient module's attributes are type 2 and written empty: Vigil keeps no patient
// identity, and the archive files the report by its Study Instance UID.
func WriteSR(r Report) ([]byte, string, error) {
	if len(r.Groups) == 0 {
		return nil, "", ErrEmptyReport
	}
	if r.StudyInstanceUID == "" {
		return nil, "", errors.New("dicomio: a report needs its Study Instance UID")
	}
	when := r.Time.UTC()
	sopInstance := NewUID()

	var groups []dataset
	type seriesRefs map[string]map[string]string // series -> instance -> class
	evidence := seriesRefs{}
	for _, g := range r.Groups {
		ref := g.Image
		if ref.SOPInstanceUID == "" || ref.SOPClassUID == "" || ref.SeriesInstanceUID == "" {
			return nil, "", fmt.Errorf("dicomio: finding %s has no complete source image reference", g.TrackingID)
		}
		if evidence[ref.SeriesInstanceUID] == nil {
			evidence[ref.SeriesInstanceUID] = map[string]string{}
		}
		evidence[ref.SeriesInstanceUID][ref.SOPInstanceUID] = ref.SOPClassUID

		children := []dataset{
			textItem("HAS OBS CONTEXT", codeTrackingID, g.TrackingID),
			uidItem("HAS OBS CONTEXT", codeTrackingUID, trackingUID(g.TrackingID)),
			codeItem("CONTAINS", codeFinding, g.Finding),
		}
		for _, m := range g.Measurements {
			if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) || math.Abs(m.Value) > MaxMeasurement {
				return nil, "", fmt.Errorf("dicomio: finding %s: measurement %q is %v, not a plausible number", g.TrackingID, m.Name, m.Value)
			}
			children = append(children, numItem(m, g.Region, ref))
		}
		children = append(children, imageItem("CONTAINS", codeSourceImage, ref))
		if g.AlgorithmName != "" {
			children = append(children, textItem("CONTAINS", codeAlgorithmName, g.AlgorithmName),
				textItem("CONTAINS", codeAlgorithmVersion, g.AlgorithmVersion))
		}
		if g.Comment != "" {
			children = append(children, textItem("CONTAINS", codeComment, g.Comment))
		}
		groups = append(groups, container("CONTAINS", codeMeasurementGroup, children))
	}

	var ds dataset
	// SOP Common.
	ds.add(0x0008, 0x0005, "CS", "ISO_IR 192")
	ds.add(0x0008, 0x0016, "UI", ComprehensiveSRStorage)
	ds.add(0x0008, 0x0018, "UI", sopInstance)
	ds.add(0x0008, 0x0012, "DA", when.Format("20060102"))
	ds.add(0x0008, 0x0013, "TM", when.Format("150405"))
	// Patient and General Study, as the source images have them.
	ds.add(0x0010, 0x0010, "PN", r.Patient.Name)
	ds.add(0x0010, 0x0020, "LO", r.Patient.ID)
	ds.add(0x0010, 0x0030, "DA", validOr("DA", r.Patient.BirthDate))
	ds.add(0x0010, 0x0040, "CS", validOr("sex", r.Patient.Sex))
	ds.add(0x0020, 0x000D, "UI", r.StudyInstanceUID)
	ds.add(0x0008, 0x0020, "DA", validOr("DA", r.Study.Date))
	ds.add(0x0008, 0x0030, "TM", validOr("TM", r.Study.Time))
	ds.add(0x0008, 0x0090, "PN", r.Study.ReferringPhysician)
	ds.add(0x0020, 0x0010, "SH", r.Study.ID)
	ds.add(0x0008, 0x0050, "SH", r.Study.AccessionNumber)
	if r.StudyDescription != "" {
		ds.add(0x0008, 0x1030, "LO", r.StudyDescription)
	}
	// SR Document Series and General Equipment.
	ds.add(0x0008, 0x0060, "CS", "SR")
	ds.add(0x0020, 0x000E, "UI", NewUID())
	ds.add(0x0020, 0x0011, "IS", "9901")
	ds.add(0x0008, 0x103E, "LO", "Vigil reviewed findings")
	ds.add(0x0008, 0x1111, "SQ", []dataset{})
	ds.add(0x0008, 0x0070, "LO", "Vigil")
	ds.add(0x0008, 0x1090, "LO", "Vigil")
	// SR Document General.
	ds.add(0x0020, 0x0013, "IS", "1")
	ds.add(0x0040, 0xA491, "CS", "COMPLETE")
	ds.add(0x0040, 0xA493, "CS", "UNVERIFIED")
	ds.add(0x0008, 0x0023, "DA", when.Format("20060102"))
	ds.add(0x0008, 0x0033, "TM", when.Format("150405"))
	ds.add(0x0040, 0xA372, "SQ", []dataset{})
	if r.Study.AccessionNumber != "" {
		// The request the images were made for, known by its accession number: a RIS ties
		// the report to its order through it.
		var req dataset
		req.add(0x0020, 0x000D, "UI", r.StudyInstanceUID)
		req.add(0x0008, 0x1110, "SQ", []dataset{})
		req.add(0x0008, 0x0050, "SH", r.Study.AccessionNumber)
		req.add(0x0040, 0x2016, "LO", "")
		req.add(0x0040, 0x2017, "LO", "")
		req.add(0x0040, 0x1001, "SH", "")
		req.add(0x0032, 0x1060, "LO", r.StudyDescription)
		req.add(0x0032, 0x1064, "SQ", []dataset{})
		ds.add(0x0040, 0xA370, "SQ", []dataset{req})
	}
	var seriesItems []dataset
	for series, instances := range evidence {
		var sops []dataset
		for inst, class := range instances {
			var sop dataset
			sop.add(0x0008, 0x1150, "UI", class)
			sop.add(0x0008, 0x1155, "UI", inst)
			sops = append(sops, sop)
		}
		var s dataset
		s.add(0x0020, 0x000E, "UI", series)
		s.add(0x0008, 0x1199, "SQ", sops)
		seriesItems = append(seriesItems, s)
	}
	var study dataset
	study.add(0x0020, 0x000D, "UI", r.StudyInstanceUID)
	study.add(0x0008, 0x1115, "SQ", seriesItems)
	ds.add(0x0040, 0xA375, "SQ", []dataset{study})
	// SR Document Content: the root container and its template.
	var tmpl dataset
	tmpl.add(0x0008, 0x0105, "CS", "DCMR")
	tmpl.add(0x0040, 0xDB00, "CS", "1500")
	ds.add(0x0040, 0xA504, "SQ", []dataset{tmpl})
	root := container("", codeMeasurementReport, []dataset{
		codeItem("HAS CONCEPT MOD", codeLanguage, codeEnglish),
		codeItem("HAS OBS CONTEXT", codeObserverType, codeDevice),
		uidItem("HAS OBS CONTEXT", codeDeviceUID, r.DeviceUID),
		textItem("HAS OBS CONTEXT", codeDeviceName, r.DeviceName),
		codeItem("HAS CONCEPT MOD", codeProcedureReported, codeUltrasonography),
		container("CONTAINS", codeMeasurements, groups),
	})
	ds = append(ds, root...)

	data, err := part10(ComprehensiveSRStorage, sopInstance, ds)
	if err != nil {
		return nil, "", err
	}
	return data, sopInstance, nil
}

// srValues are the forms a report writes dates, times and the patient's sex in (PS3.5 6.2:
// DA YYYYMMDD, TM HH[MM[SS[.F{1,6}]]]; Patient's Sex M, F or O).
var srValues = map[string]*regexp.Regexp{
	"DA":  regexp.MustCompile(`^[0-9]{8}$`),
	"TM":  regexp.MustCompile(`^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$`),
	"sex": regexp.MustCompile(`^[MFO]$`),
}

// validOr is a header value copied from the source into a report when it has its VR's form,
// and empty (the type 2 attribute left empty) when it does not: a report holds no value a
// validator would refuse.
func validOr(kind, v string) string {
	v = strings.TrimSpace(v)
	if srValues[kind].MatchString(v) {
		return v
	}
	return ""
}
