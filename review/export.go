package review

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigil-health/vigil/dicomio"
)

var (
	// ErrNothingToReport means the study has no accepted or amended finding.
	ErrNothingToReport = errors.New("review: no accepted or amended findings for this study")
	// ErrOtherPatient means a study's findings name more than one patient: an instance was
	// sent under another patient's study, or an export would mix them.
	ErrOtherPatient = errors.New("review: the study holds findings of another patient")
)

// ValidUID says whether s is a DICOM UID (dicomio.ValidUID).
func ValidUID(s string) bool { return dicomio.ValidUID(s) }

// Report is an exported structured report.
type Report struct {
	Data           []byte
	SOPInstanceUID string
	Findings       int
}

// ExportReport writes a DICOM SR of a study's decided findings: accepted ones as the model
// gave them, amended ones with the reviewer's corrections. Rejected and undecided findings are
// left out.
func ExportReport(ctx context.Context, s Store, studyUID, deviceUID string, now time.Time) (Report, error) {
	if !ValidUID(studyUID) {
		return Report{}, invalid("study_instance_uid is not a DICOM UID")
	}
	var groups []dicomio.MeasurementGroup
	var context *Context // the study's patient, from its findings
	q := Query{Filter: Filter{StudyUID: studyUID, States: []State{StateAccepted, StateAmended}}, PageSize: MaxPageSize}
	for {
		page, next, err := s.List(ctx, q)
		if err != nil {
			return Report{}, err
		}
		for i := range page {
			groups = append(groups, measurementGroup(&page[i]))
			c := page[i].Context
			switch {
			case context == nil:
				context = c
			case c != nil && c.PatientID != context.PatientID:
				// One report is one patient's: never write two patients' findings under one name.
				return Report{}, fmt.Errorf("%w: the study's findings name more than one patient ID", ErrOtherPatient)
			}
		}
		if next == "" {
			break
		}
		q.PageToken = next
	}
	if len(groups) == 0 {
		return Report{}, fmt.Errorf("%w: %s", ErrNothingToReport, studyUID)
	}
	report := dicomio.Report{StudyInstanceUID: studyUID, Groups: groups, Time: now, DeviceName: "Vigil", DeviceUID: deviceUID}
	if c := context; c != nil {
		report.Patient = dicomio.Patient{Name: c.PatientName, ID: c.PatientID, BirthDate: c.PatientBirthDate, Sex: c.PatientSex}
		report.Study = dicomio.Study{AccessionNumber: c.AccessionNumber, Date: c.StudyDate, Time: c.StudyTime,
			ReferringPhysician: c.ReferringPhysician, ID: c.StudyID}
		report.StudyDescription = c.StudyDescription
	}
	data, uid, err := dicomio.WriteSR(report)
	if err != nil {
		return Report{}, err
	}
	return Report{Data: data, SOPInstanceUID: uid, Findings: len(groups)}, nil
}

// CheckPatient says whether findings of another patient than patientID are stored under the
// study: ErrOtherPatient when one is. An empty patientID, or findings without one, say nothing.
func CheckPatient(ctx context.Context, s Store, studyUID, patientID string) error {
	if studyUID == "" || patientID == "" {
		return nil
	}
	q := Query{Filter: Filter{StudyUID: studyUID}, PageSize: MaxPageSize}
	for {
		page, next, err := s.List(ctx, q)
		if err != nil {
			return err
		}
		for i := range page {
			if c := page[i].Context; c != nil && c.PatientID != "" && c.PatientID != patientID {
				return ErrOtherPatient
			}
		}
		if next == "" {
			return nil
		}
		q.PageToken = next
	}
}

// measurementGroup is a decided finding as the report shows it, corrections applied.
func measurementGroup(f *Finding) dicomio.MeasurementGroup {
	label, box, measurements := f.Label, f.Box, f.Measurements
	d := f.Decision
	if a := d.Amendment; a != nil {
		if a.Label != "" {
			label = a.Label
		}
		if a.Box != nil {
			box = a.Box
		}
		measurements = amendMeasurements(measurements, a.Measurements)
	}
	g := dicomio.MeasurementGroup{
		TrackingID: f.ID,
		Finding:    dicomio.LocalCode(label),
		Image: dicomio.ImageRef{
			SOPClassUID: f.Source.SOPClassUID, SOPInstanceUID: f.Source.SOPInstanceUID,
			SeriesInstanceUID: f.Source.SeriesInstanceUID, Frames: f.Source.Frames, MultiFrame: f.Source.NumberOfFrames > 1,
		},
		AlgorithmName: f.Model.Name, AlgorithmVersion: f.Model.Version,
		Comment: fmt.Sprintf("%s by %s (%s)", pastTense[d.Outcome], d.Reviewer, d.ReasonCode),
	}
	if d.Comment != "" {
		g.Comment += ": " + d.Comment
	}
	if f.BestFrame > 0 && f.Source.NumberOfFrames > 1 {
		g.Image.Frames = []int{f.BestFrame}
	}
	for _, m := range measurements {
		g.Measurements = append(g.Measurements, dicomio.Measurement{Name: m.Name, Value: m.Value, Unit: m.Unit})
	}
	if box != nil {
		x0, y0 := float32(box.X), float32(box.Y)
		x1, y1 := float32(box.X+box.Width), float32(box.Y+box.Height)
		g.Region = []float32{x0, y0, x1, y0, x1, y1, x0, y1, x0, y0}
	}
	return g
}

var pastTense = map[Outcome]string{OutcomeAccept: "accepted", OutcomeAmend: "amended", OutcomeReject: "rejected"}

// amendMeasurements replaces measurements by name and adds new ones.
func amendMeasurements(model, amended []Measurement) []Measurement {
	out := append([]Measurement(nil), model...)
	for _, a := range amended {
		replaced := false
		for i := range out {
			if out[i].Name == a.Name {
				out[i], replaced = a, true
			}
		}
		if !replaced {
			out = append(out, a)
		}
	}
	return out
}
