package review

import (
	"context"
	"time"
)

// Store keeps findings, their decisions and the audit of every change. Every method that
// changes a finding writes its audit record in the same transaction and has committed durably
// when it returns: what a caller was told happened survives a crash.
//
// The interface speaks only in this package's types so that a PostgreSQL implementation can
// follow without changing callers.
type Store interface {
	// Add stores new findings (all or none) as pending, filling ID, State, Version and times.
	Add(ctx context.Context, actor string, findings []Finding) ([]Finding, error)
	// AddAnalysis stores an analysed instance and its findings at once; for an instance
	// analysed before it stores nothing and returns the first analysis with existed true.
	AddAnalysis(ctx context.Context, actor string, a Analysis, findings []Finding) (stored Analysis, existed bool, err error)
	// GetAnalysis returns the analysis of an instance by SOP Instance UID.
	GetAnalysis(ctx context.Context, sopInstanceUID string) (Analysis, error)
	// Get returns a finding with its overlay.
	Get(ctx context.Context, id string) (Finding, error)
	// List returns the worklist page after the page token: priority first, then age.
	List(ctx context.Context, q Query) (findings []Finding, nextPage string, err error)
	// ClaimNext leases the most urgent pending finding matching the filter to actor. ok is
	// false when nothing is waiting.
	ClaimNext(ctx context.Context, actor string, f Filter, lease time.Duration) (found Finding, ok bool, err error)
	// Decide records a decision made on version. A stale version returns a *StaleError and
	// changes nothing.
	Decide(ctx context.Context, actor, id string, version int64, d Decision) (Finding, error)
	// Release gives a finding the actor holds back to the queue.
	Release(ctx context.Context, actor, id string, version int64) (Finding, error)
	// ExpireLeases returns every claim whose lease has run out to the queue.
	ExpireLeases(ctx context.Context) (int, error)
	// Audit returns a finding's audit records, oldest first.
	Audit(ctx context.Context, id string) ([]AuditRecord, error)
	// Changes returns up to limit audit records after sequence, oldest first.
	Changes(ctx context.Context, after int64, limit int) ([]AuditRecord, error)
	// LastSequence is the newest audit record's sequence number, 0 when there is none.
	LastSequence(ctx context.Context) (int64, error)
	// Changed returns a channel that is closed at the next committed change.
	Changed() <-chan struct{}
	// RecordRefusal appends a call refused to a known principal to the refusals, a hash
	// chain like the audit's.
	RecordRefusal(ctx context.Context, r Refusal) error
	// PruneRefusals deletes the refusals recorded before a time (the retention), keeping a
	// checkpoint the chain is verified from, and returns how many it deleted.
	PruneRefusals(ctx context.Context, before time.Time) (int64, error)
	// Counts returns the number of findings per state, and acceptance per model version.
	Counts(ctx context.Context, f Filter) (Counts, error)
	// Close releases the store.
	Close() error
}

// Analysis records that an instance was analysed, and what came of it.
type Analysis struct {
	SOPInstanceUID    string   `json:"sop_instance_uid"`
	SOPClassUID       string   `json:"sop_class_uid"`
	StudyInstanceUID  string   `json:"study_instance_uid"`
	SeriesInstanceUID string   `json:"series_instance_uid"`
	Modality          string   `json:"modality"`
	Frames            int      `json:"frames"`
	Model             ModelRef `json:"model"`
	// Routing says why the model ran; Notes what it could not measure and why.
	Routing    string    `json:"routing,omitempty"`
	Notes      []string  `json:"notes,omitempty"`
	FindingIDs []string  `json:"finding_ids"`
	CreatedAt  time.Time `json:"created_at"`
	// SubmittedBy is the principal that sent the instance (set by AddAnalysis; empty in
	// analyses stored before it was kept).
	SubmittedBy string `json:"submitted_by,omitempty"`
	// ContentSHA256 is dicomio's Digest of the instance analysed: its UIDs and decoded
	// pixels, the same in any lossless transfer syntax (empty in analyses stored before it
	// was kept): another instance under the same UID is told apart from a resend.
	ContentSHA256 string `json:"content_sha256,omitempty"`
}

// Filter narrows the worklist. Empty fields match everything.
type Filter struct {
	Pipeline Pipeline
	Modality string
	CameraID string
	States   []State
	Model    string
	StudyUID string
}

// Matches says whether a finding passes the filter; Watch uses it on each change.
func (f Filter) Matches(x Finding) bool {
	if f.Pipeline != "" && x.Pipeline != f.Pipeline ||
		f.Modality != "" && x.Source.Modality != f.Modality ||
		f.CameraID != "" && x.Source.CameraID != f.CameraID ||
		f.Model != "" && x.Model.Name != f.Model ||
		f.StudyUID != "" && x.Source.StudyInstanceUID != f.StudyUID {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if x.State == s {
			return true
		}
	}
	return false
}

// Query is a worklist request.
type Query struct {
	Filter    Filter
	PageSize  int
	PageToken string
}

// AuditRecord is one change to a finding: who, what, when, before and after.
type AuditRecord struct {
	Sequence  int64
	FindingID string
	Actor     string
	// Action is "create", "claim", "release", "expire", "accept", "reject" or "amend".
	Action string
	Time   time.Time
	// Before is nil for "create".
	Before *Finding
	After  *Finding
}

// ModelAcceptance is how reviewers judged one model version's findings.
type ModelAcceptance struct {
	Model    ModelRef
	Accepted int64
	Amended  int64
	Rejected int64
}

// Rate is the share of decided findings that were accepted or amended (amended findings were
// real, with a correction); 0 when none is decided.
func (m ModelAcceptance) Rate() float64 {
	n := m.Accepted + m.Amended + m.Rejected
	if n == 0 {
		return 0
	}
	return float64(m.Accepted+m.Amended) / float64(n)
}

// Counts are the worklist's figures.
type Counts struct {
	ByState map[State]int64
	Models  []ModelAcceptance
}
