// Package review holds findings and the decisions people make on them: the worklist, claims,
// accept / reject / amend with optimistic concurrency, and an append-only audit of every
// change. Storage sits behind Store; SQLite is the implementation today.
package review

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vigil-health/vigil/dicomio"
)

// State is where a finding is in the workflow.
type State string

const (
	StatePending  State = "pending"
	StateClaimed  State = "claimed"
	StateAccepted State = "accepted"
	StateRejected State = "rejected"
	StateAmended  State = "amended"
)

// States lists every state, in workflow order.
var States = []State{StatePending, StateClaimed, StateAccepted, StateRejected, StateAmended}

// Decided says whether the state is a final decision.
func (s State) Decided() bool {
	return s == StateAccepted || s == StateRejected || s == StateAmended
}

// Pipeline is the job that produced a finding.
type Pipeline string

const (
	PipelineTriage   Pipeline = "triage"
	PipelineFall     Pipeline = "fall"
	PipelineGait     Pipeline = "gait"
	PipelineFallRisk Pipeline = "fall-risk"
)

// Pipelines lists every pipeline.
var Pipelines = []Pipeline{PipelineTriage, PipelineFall, PipelineGait, PipelineFallRisk}

// Priorities of the ward's findings. Triage findings rank 0 to 6 by their own rules.
const (
	// PriorityFall puts a fall above everything else in the worklist: someone may be on the
	// floor now.
	PriorityFall = 10
	// PriorityFallRisk is a gait with fall-risk indicators elevated: for a therapist, soon.
	PriorityFallRisk = 1
	// PriorityGait is a gait summary with nothing elevated: routine.
	PriorityGait = 0
)

// Box is a rectangle in the source image's pixels.
type Box struct {
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
}

// Point is a position in the source image's pixels.
type Point struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Measurement is a quantity with its UCUM unit.
type Measurement struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// LowQuality flags a value not to be taken without a look; Quality says how far it can
	// be trusted. A reviewer's amended value has neither.
	LowQuality bool   `json:"low_quality,omitempty"`
	Quality    string `json:"quality,omitempty"`
}

// ModelRef names the exact model behind a finding.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

// Source is where a finding came from: a DICOM instance (and frames) or a camera track.
type Source struct {
	StudyInstanceUID  string `json:"study_instance_uid,omitempty"`
	SeriesInstanceUID string `json:"series_instance_uid,omitempty"`
	SOPInstanceUID    string `json:"sop_instance_uid,omitempty"`
	SOPClassUID       string `json:"sop_class_uid,omitempty"`
	Modality          string `json:"modality,omitempty"`
	// Frames are 1-based DICOM frame numbers.
	Frames []int `json:"frames,omitempty"`
	// NumberOfFrames is the source instance's frame count (1 for a single image).
	NumberOfFrames int `json:"number_of_frames,omitempty"`

	CameraID      string    `json:"camera_id,omitempty"`
	TrackID       int64     `json:"track_id,omitempty"`
	StartTime     time.Time `json:"start_time,omitzero"`
	EndTime       time.Time `json:"end_time,omitzero"`
	FirstSequence int64     `json:"first_sequence,omitempty"`
	LastSequence  int64     `json:"last_sequence,omitempty"`
}

// Context is who and what a DICOM finding's images are of, copied from the instance: for the
// reviewers deciding on it, and for the report filed back into the same patient's study. It is
// patient data: only reviewers and admins are shown it, and it is never logged.
type Context struct {
	PatientName      string `json:"patient_name,omitempty"` // DICOM's form: FAMILY^GIVEN
	PatientID        string `json:"patient_id,omitempty"`
	PatientBirthDate string `json:"patient_birth_date,omitempty"` // YYYYMMDD
	PatientSex       string `json:"patient_sex,omitempty"`

	AccessionNumber    string `json:"accession_number,omitempty"`
	StudyDate          string `json:"study_date,omitempty"` // YYYYMMDD
	StudyTime          string `json:"study_time,omitempty"`
	StudyDescription   string `json:"study_description,omitempty"`
	ReferringPhysician string `json:"referring_physician,omitempty"`
	StudyID            string `json:"study_id,omitempty"`

	SeriesDescription string `json:"series_description,omitempty"`
}

// ContextOf copies who and what an instance is of; nil when it names nobody and nothing.
func ContextOf(inst dicomio.Instance) *Context {
	c := &Context{PatientName: inst.Patient.Name, PatientID: inst.Patient.ID, PatientBirthDate: inst.Patient.BirthDate,
		PatientSex: inst.Patient.Sex, AccessionNumber: inst.Study.AccessionNumber, StudyDate: inst.Study.Date,
		StudyTime: inst.Study.Time, StudyDescription: inst.StudyDescription, ReferringPhysician: inst.Study.ReferringPhysician,
		StudyID: inst.Study.ID, SeriesDescription: inst.SeriesDescription}
	if *c == (Context{}) {
		return nil
	}
	return c
}

// Image is an encoded picture, such as the annotated overlay.
type Image struct {
	MediaType string `json:"media_type"`
	Data      []byte `json:"-"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

// Outcome is a reviewer's verdict.
type Outcome string

const (
	OutcomeAccept Outcome = "accept"
	OutcomeReject Outcome = "reject"
	OutcomeAmend  Outcome = "amend"
)

// ReasonCodes are the reasons a reviewer may give. "other" needs a comment.
var ReasonCodes = []string{
	"confirmed", "false-positive", "artefact", "wrong-label", "wrong-size", "wrong-location",
	"duplicate", "not-clinically-relevant", "other",
}

// Amendment is what a reviewer corrected; unset fields keep the model's value.
type Amendment struct {
	Label        string        `json:"label,omitempty"`
	Box          *Box          `json:"box,omitempty"`
	Measurements []Measurement `json:"measurements,omitempty"`
}

// Decision is a reviewer's verdict with its reason.
type Decision struct {
	Outcome    Outcome    `json:"outcome"`
	ReasonCode string     `json:"reason_code"`
	Comment    string     `json:"comment,omitempty"`
	Reviewer   string     `json:"reviewer"`
	DecidedAt  time.Time  `json:"decided_at"`
	Amendment  *Amendment `json:"amendment,omitempty"`
}

// Finding is one result a model put forward for a person to decide on.
type Finding struct {
	ID       string   `json:"id"`
	Pipeline Pipeline `json:"pipeline"`
	Label    string   `json:"label"`
	Score    float64  `json:"score"`
	// Priority orders the worklist: higher first.
	Priority int   `json:"priority"`
	State    State `json:"state"`
	// Version increases with every change; a decision must name the version it was made on.
	Version int64 `json:"version"`

	Box          *Box          `json:"box,omitempty"`
	Outline      []Point       `json:"outline,omitempty"`
	Measurements []Measurement `json:"measurements,omitempty"`
	FirstFrame   int           `json:"first_frame,omitempty"`
	LastFrame    int           `json:"last_frame,omitempty"`
	BestFrame    int           `json:"best_frame,omitempty"`

	// Evidence is why the finding was put forward, in plain words: the rules that fired, or
	// the indicators and the reasons they count.
	Evidence []string `json:"evidence,omitempty"`

	Model  ModelRef `json:"model"`
	Source Source   `json:"source"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Context is who and what a DICOM finding's images are of, for reviewers.
	Context *Context `json:"context,omitempty"`
	// SubmittedBy is the principal whose call created the finding (a PACS worker, a bridge):
	// what a PACS worker may follow and export is what it sent.
	SubmittedBy string `json:"submitted_by,omitempty"`

	ClaimedBy      string    `json:"claimed_by,omitempty"`
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`

	Decision *Decision `json:"decision,omitempty"`

	// Overlay is stored apart from the finding and filled only by Store.Get.
	Overlay *Image `json:"-"`
}

var (
	// ErrNotFound means no finding has that ID.
	ErrNotFound = errors.New("review: finding not found")
	// ErrStale means the caller's version is not the finding's current one; nothing changed.
	ErrStale = errors.New("review: stale version")
	// ErrClaimed means another reviewer holds the finding's lease.
	ErrClaimed = errors.New("review: claimed by another reviewer")
	// ErrDecided means the finding already has a decision, which is final.
	ErrDecided = errors.New("review: already decided")
	// ErrStoreFull means the store's disk is full: the write was refused and nothing changed.
	ErrStoreFull = errors.New("review store: the disk is full, writes are refused until space is freed (reads go on)")
	// ErrStoreUnwritable means the store's file cannot be written (read-only, or an I/O
	// error): the write was refused and nothing changed.
	ErrStoreUnwritable = errors.New("review store: the store cannot be written (read-only or failing disk); reads go on")
	// ErrNotClaimed means Release was called on a finding the caller does not hold.
	ErrNotClaimed = errors.New("review: not claimed by you")
	// ErrInvalid means a finding, decision or query that cannot be accepted as given.
	ErrInvalid = errors.New("review: invalid")
)

// StaleError is ErrStale with the finding's current version, so a client can reload.
type StaleError struct {
	ID      string
	Given   int64
	Current int64
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("review: finding %s is at version %d, not %d: reload it and decide again", e.ID, e.Current, e.Given)
}

func (e *StaleError) Unwrap() error { return ErrStale }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// validateNew checks a finding a pipeline wants to store.
func validateNew(f *Finding) error {
	switch {
	case !slices.Contains(Pipelines, f.Pipeline):
		return invalid("pipeline %q is not one of %v", f.Pipeline, Pipelines)
	case strings.TrimSpace(f.Label) == "":
		return invalid("label is empty")
	case f.Score < 0 || f.Score > 1:
		return invalid("score %v is not within 0..1", f.Score)
	case f.Model.Name == "" || f.Model.Version == "":
		return invalid("model name and version are required")
	case f.Source.SOPInstanceUID == "" && f.Source.CameraID == "":
		return invalid("source needs a SOP Instance UID or a camera ID")
	}
	if f.Box != nil && (f.Box.Width < 0 || f.Box.Height < 0) {
		return invalid("box has a negative size")
	}
	return nil
}

// validateDecision checks a decision before it touches the store.
func validateDecision(d *Decision) error {
	switch d.Outcome {
	case OutcomeAccept:
		if d.ReasonCode == "" {
			d.ReasonCode = "confirmed"
		}
		if d.Amendment != nil {
			return invalid("an amendment needs the amend outcome, not accept")
		}
	case OutcomeReject:
		if d.ReasonCode == "" {
			return invalid("a rejection needs a reason code, one of %v", ReasonCodes)
		}
		if d.Amendment != nil {
			return invalid("an amendment needs the amend outcome, not reject")
		}
	case OutcomeAmend:
		if d.ReasonCode == "" {
			return invalid("an amendment needs a reason code, one of %v", ReasonCodes)
		}
		a := d.Amendment
		if a == nil || (strings.TrimSpace(a.Label) == "" && a.Box == nil && len(a.Measurements) == 0) {
			return invalid("an amendment must correct the label, the box or a measurement")
		}
		if a.Box != nil && (a.Box.Width <= 0 || a.Box.Height <= 0) {
			return invalid("the amended box must have a positive size")
		}
		// The reviewer's text is not repeated in errors: measurements are named by position.
		for i, m := range a.Measurements {
			if m.Name == "" || m.Unit == "" {
				return invalid("an amended measurement needs a name and a unit")
			}
			if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) || math.Abs(m.Value) > dicomio.MaxMeasurement {
				return invalid("amended measurement %d is %v: a measurement must be a finite number", i+1, m.Value)
			}
			if !dicomio.KnownUnit(m.Unit) {
				return invalid("amended measurement %d's unit (%d bytes, not repeated here) is not one Vigil reports (UCUM: mm, mm2, cm, cm2, wk, %%, 1, s, /min, m/s, deg, {steps}, {body_height}, {body_height}/s)", i+1, len(m.Unit))
			}
		}
	default:
		return invalid("outcome is not accept, reject or amend")
	}
	if !slices.Contains(ReasonCodes, d.ReasonCode) {
		return invalid("reason code is not one of %v", ReasonCodes)
	}
	if d.ReasonCode == "other" && strings.TrimSpace(d.Comment) == "" {
		return invalid("reason code other needs a comment")
	}
	if len(d.Comment) > 4000 {
		return invalid("comment is longer than 4000 characters")
	}
	// What the report will hold must be valid in its VR: the comment is written as UT, an
	// amended label and measurement names as code meanings (LO).
	if err := dicomio.CheckText("UT", d.Comment); err != nil {
		return invalid("the comment %v", err)
	}
	if a := d.Amendment; a != nil {
		if err := dicomio.CheckText("LO", a.Label); err != nil {
			return invalid("the amended label %v", err)
		}
		for i, m := range a.Measurements {
			if err := dicomio.CheckText("LO", m.Name); err != nil {
				return invalid("amended measurement %d's name %v", i+1, err)
			}
		}
	}
	return nil
}
