package server

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

const (
	// DefaultLease is how long a claim lasts when the client does not say.
	DefaultLease = 10 * time.Minute
	// MaxLease bounds a claim, so a reviewer who leaves does not hold a finding for a shift.
	MaxLease = 4 * time.Hour
	// watchBatch is how many changes Watch reads at a time.
	watchBatch = 200
)

// errBadID does not repeat the id it refuses: a malformed id could be anything.
var errBadID = status.Error(codes.InvalidArgument, "id is not a finding id (f- and 20 hex digits)")

// reviewService is the Review API over a review.Store: validate, call the store, map errors.
type reviewService struct {
	vigilv1.UnimplementedReviewServer
	log     *slog.Logger
	store   review.Store
	metrics *Metrics
}

// actor is the authenticated principal's name: every change is attributed to it.
func actor(ctx context.Context) (string, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok || p.Name == "" {
		return "", status.Error(codes.Unauthenticated, "no principal on the call")
	}
	return p.Name, nil
}

func (s *reviewService) List(ctx context.Context, req *vigilv1.ListRequest) (*vigilv1.ListResponse, error) {
	f, err := filterFromProto(req.GetFilter())
	if err != nil {
		return nil, err
	}
	if req.PageSize < 0 || req.PageSize > review.MaxPageSize {
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d is not within 0..%d", req.PageSize, review.MaxPageSize)
	}
	list, next, err := s.store.List(ctx, review.Query{Filter: f, PageSize: int(req.PageSize), PageToken: req.PageToken})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &vigilv1.ListResponse{NextPageToken: next}
	for i := range list {
		resp.Findings = append(resp.Findings, findingToProto(&list[i]))
	}
	return resp, nil
}

func (s *reviewService) Get(ctx context.Context, req *vigilv1.GetRequest) (*vigilv1.GetResponse, error) {
	if !review.ValidID(req.Id) {
		return nil, errBadID
	}
	f, err := s.store.Get(ctx, req.Id)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	trail, err := s.store.Audit(ctx, req.Id)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &vigilv1.GetResponse{Finding: findingToProto(&f)}
	for _, r := range trail {
		resp.Audit = append(resp.Audit, auditToProto(r))
	}
	return resp, nil
}

func (s *reviewService) ClaimNext(ctx context.Context, req *vigilv1.ClaimNextRequest) (*vigilv1.ClaimNextResponse, error) {
	who, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filterFromProto(req.GetFilter())
	if err != nil {
		return nil, err
	}
	lease := time.Duration(req.LeaseSeconds) * time.Second
	switch {
	case req.LeaseSeconds < 0 || lease > MaxLease:
		return nil, status.Errorf(codes.InvalidArgument, "lease_seconds %d is not within 0..%d", req.LeaseSeconds, int(MaxLease.Seconds()))
	case lease == 0:
		lease = DefaultLease
	}
	found, ok, err := s.store.ClaimNext(ctx, who, f, lease)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if !ok {
		return &vigilv1.ClaimNextResponse{}, nil
	}
	return &vigilv1.ClaimNextResponse{Finding: findingToProto(&found)}, nil
}

// changer validates a request that changes a finding: the caller, the finding's ID and the
// version the change is made on. It returns the caller's name.
func changer(ctx context.Context, id string, version int64) (string, error) {
	who, err := actor(ctx)
	if err != nil {
		return "", err
	}
	if !review.ValidID(id) {
		return "", errBadID
	}
	if version <= 0 {
		return "", status.Error(codes.InvalidArgument, "version (the one the change is made on) is required")
	}
	return who, nil
}

func (s *reviewService) Decide(ctx context.Context, req *vigilv1.DecideRequest) (*vigilv1.DecideResponse, error) {
	who, err := changer(ctx, req.Id, req.Version)
	if err != nil {
		return nil, err
	}
	outcome, ok := outcomes[req.Outcome]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "outcome %s is not accept, reject or amend", req.Outcome)
	}
	d := review.Decision{Outcome: outcome, ReasonCode: req.ReasonCode, Comment: req.Comment, Amendment: amendmentFromProto(req.Amendment)}
	f, err := s.store.Decide(ctx, who, req.Id, req.Version, d)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	s.metrics.decided(&f)
	return &vigilv1.DecideResponse{Finding: findingToProto(&f)}, nil
}

func (s *reviewService) Release(ctx context.Context, req *vigilv1.ReleaseRequest) (*vigilv1.ReleaseResponse, error) {
	who, err := changer(ctx, req.Id, req.Version)
	if err != nil {
		return nil, err
	}
	f, err := s.store.Release(ctx, who, req.Id, req.Version)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &vigilv1.ReleaseResponse{Finding: findingToProto(&f)}, nil
}

// Watch sends every change after req.AfterSequence that matches the filter, then waits for
// more. Each event carries its sequence number: a client that reconnects with the last one it
// saw gets exactly the changes it missed.
func (s *reviewService) Watch(req *vigilv1.WatchRequest, stream vigilv1.Review_WatchServer) error {
	ctx := stream.Context()
	f, err := filterFromProto(req.GetFilter())
	if err != nil {
		return err
	}
	after := req.AfterSequence
	if after < 0 {
		return status.Error(codes.InvalidArgument, "after_sequence must not be negative")
	}
	if after == 0 {
		if after, err = s.store.LastSequence(ctx); err != nil {
			return toStatus(ctx, s.log, err)
		}
	}
	// A PACS worker follows the findings of what it sent, and sees their state, never who
	// decided or why: List and Get are closed to it.
	submitter := ""
	if p, ok := auth.PrincipalFrom(ctx); ok && p.Role == auth.RolePACSWorker {
		submitter = p.Name
	}
	for {
		// Take the wake-up channel before reading, so a change committed in between is not missed.
		changed := s.store.Changed()
		batch, err := s.store.Changes(ctx, after, watchBatch)
		if err != nil {
			return toStatus(ctx, s.log, err)
		}
		for _, r := range batch {
			after = r.Sequence
			if !f.Matches(*r.After) {
				continue
			}
			ev := &vigilv1.WatchEvent{Sequence: r.Sequence, Action: r.Action, Finding: findingToProto(r.After), Time: timestamppb.New(r.Time)}
			if submitter != "" {
				if r.After.SubmittedBy != submitter {
					continue
				}
				ev.Finding = submitterView(ev.Finding)
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		if len(batch) == watchBatch {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return toStatus(ctx, s.log, ctx.Err())
		}
	}
}

func (s *reviewService) Counts(ctx context.Context, req *vigilv1.CountsRequest) (*vigilv1.CountsResponse, error) {
	f, err := filterFromProto(req.GetFilter())
	if err != nil {
		return nil, err
	}
	c, err := s.store.Counts(ctx, f)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &vigilv1.CountsResponse{}
	for _, st := range review.States {
		resp.States = append(resp.States, &vigilv1.StateCount{State: stateToProto[st], Count: c.ByState[st]})
	}
	for _, m := range c.Models {
		resp.Models = append(resp.Models, &vigilv1.ModelAcceptance{
			Model:    &vigilv1.ModelRef{Name: m.Model.Name, Version: m.Model.Version, Sha256: m.Model.SHA256},
			Accepted: m.Accepted, Amended: m.Amended, Rejected: m.Rejected, AcceptanceRate: m.Rate(),
		})
	}
	return resp, nil
}

// ExportReport writes the DICOM SR of a study's accepted and amended findings.
// submitterView is what a PACS worker sees of a finding it sent: what it is and where it
// stands, without the reviewers, their comments, or the overlay.
func submitterView(f *vigilv1.Finding) *vigilv1.Finding {
	return &vigilv1.Finding{Id: f.Id, Pipeline: f.Pipeline, Label: f.Label, State: f.State, Version: f.Version,
		Model: f.Model, Source: f.Source, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt}
}

func (s *reviewService) ExportReport(ctx context.Context, req *vigilv1.ExportReportRequest) (*vigilv1.ExportReportResponse, error) {
	if !review.ValidUID(req.StudyInstanceUid) {
		return nil, status.Error(codes.InvalidArgument, "study_instance_uid is not a DICOM UID (digits and dots, at most 64)")
	}
	if p, ok := auth.PrincipalFrom(ctx); ok && p.Role == auth.RolePACSWorker {
		sent, err := s.sentStudy(ctx, p.Name, req.StudyInstanceUid)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		if !sent {
			return nil, status.Errorf(codes.PermissionDenied, "principal %q sent no instance of this study: a PACS worker exports the studies it sent", p.Name)
		}
	}
	r, err := review.ExportReport(ctx, s.store, req.StudyInstanceUid, dicomio.ImplementationClassUID, time.Now())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &vigilv1.ExportReportResponse{Report: r.Data, SopInstanceUid: r.SOPInstanceUID, FindingsIncluded: int32(r.Findings)}, nil
}

// sentStudy says whether principal submitted any finding of the study.
func (s *reviewService) sentStudy(ctx context.Context, principal, study string) (bool, error) {
	q := review.Query{Filter: review.Filter{StudyUID: study}, PageSize: review.MaxPageSize}
	for {
		page, next, err := s.store.List(ctx, q)
		if err != nil {
			return false, err
		}
		for _, f := range page {
			if f.SubmittedBy == principal {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		q.PageToken = next
	}
}

// --- conversions between the API and the review package --------------------------------------

var stateToProto = map[review.State]vigilv1.FindingState{
	review.StatePending:  vigilv1.FindingState_FINDING_STATE_PENDING,
	review.StateClaimed:  vigilv1.FindingState_FINDING_STATE_CLAIMED,
	review.StateAccepted: vigilv1.FindingState_FINDING_STATE_ACCEPTED,
	review.StateRejected: vigilv1.FindingState_FINDING_STATE_REJECTED,
	review.StateAmended:  vigilv1.FindingState_FINDING_STATE_AMENDED,
}

var pipelineToProto = map[review.Pipeline]vigilv1.Pipeline{
	review.PipelineTriage:   vigilv1.Pipeline_PIPELINE_TRIAGE,
	review.PipelineFall:     vigilv1.Pipeline_PIPELINE_FALL,
	review.PipelineGait:     vigilv1.Pipeline_PIPELINE_GAIT,
	review.PipelineFallRisk: vigilv1.Pipeline_PIPELINE_FALL_RISK,
}

var outcomes = map[vigilv1.Outcome]review.Outcome{
	vigilv1.Outcome_OUTCOME_ACCEPT: review.OutcomeAccept,
	vigilv1.Outcome_OUTCOME_REJECT: review.OutcomeReject,
	vigilv1.Outcome_OUTCOME_AMEND:  review.OutcomeAmend,
}

func key[K comparable, V comparable](m map[K]V, v V) (K, bool) {
	for k, x := range m {
		if x == v {
			return k, true
		}
	}
	var zero K
	return zero, false
}

func filterFromProto(p *vigilv1.Filter) (review.Filter, error) {
	var f review.Filter
	if p == nil {
		return f, nil
	}
	if p.Pipeline != vigilv1.Pipeline_PIPELINE_UNSPECIFIED {
		pl, ok := key(pipelineToProto, p.Pipeline)
		if !ok {
			return f, status.Errorf(codes.InvalidArgument, "filter.pipeline %v is unknown", p.Pipeline)
		}
		f.Pipeline = pl
	}
	for _, st := range p.States {
		s, ok := key(stateToProto, st)
		if !ok {
			return f, status.Errorf(codes.InvalidArgument, "filter.states: %v is not a finding state", st)
		}
		if !slices.Contains(f.States, s) {
			f.States = append(f.States, s)
		}
	}
	f.Modality, f.CameraID, f.Model, f.StudyUID = p.Modality, p.CameraId, p.Model, p.StudyInstanceUid
	return f, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func boxToProto(b *review.Box) *vigilv1.Box {
	if b == nil {
		return nil
	}
	return &vigilv1.Box{X: float32(b.X), Y: float32(b.Y), Width: float32(b.Width), Height: float32(b.Height)}
}

func boxFromProto(b *vigilv1.Box) *review.Box {
	if b == nil {
		return nil
	}
	return &review.Box{X: float64(b.X), Y: float64(b.Y), Width: float64(b.Width), Height: float64(b.Height)}
}

func measurementsToProto(ms []review.Measurement) []*vigilv1.Measurement {
	out := make([]*vigilv1.Measurement, len(ms))
	for i, m := range ms {
		out[i] = &vigilv1.Measurement{Name: m.Name, Value: m.Value, Unit: m.Unit, LowQuality: m.LowQuality, Quality: m.Quality}
	}
	return out
}

func amendmentFromProto(a *vigilv1.Amendment) *review.Amendment {
	if a == nil {
		return nil
	}
	out := &review.Amendment{Label: a.Label, Box: boxFromProto(a.Box)}
	for _, m := range a.Measurements {
		out.Measurements = append(out.Measurements, review.Measurement{Name: m.Name, Value: m.Value, Unit: m.Unit})
	}
	if out.Label == "" && out.Box == nil && len(out.Measurements) == 0 {
		return nil
	}
	return out
}

func findingToProto(f *review.Finding) *vigilv1.Finding {
	p := &vigilv1.Finding{
		Id: f.ID, Pipeline: pipelineToProto[f.Pipeline], Label: f.Label, Score: float32(f.Score),
		Priority: int32(f.Priority), State: stateToProto[f.State], Version: f.Version,
		Box: boxToProto(f.Box), Measurements: measurementsToProto(f.Measurements),
		FirstFrame: int32(f.FirstFrame), LastFrame: int32(f.LastFrame), BestFrame: int32(f.BestFrame),
		Model:     &vigilv1.ModelRef{Name: f.Model.Name, Version: f.Model.Version, Sha256: f.Model.SHA256},
		CreatedAt: ts(f.CreatedAt), UpdatedAt: ts(f.UpdatedAt),
		ClaimedBy: f.ClaimedBy, LeaseExpiresAt: ts(f.LeaseExpiresAt), Evidence: f.Evidence,
	}
	if c := f.Context; c != nil {
		p.Context = &vigilv1.PatientContext{PatientName: c.PatientName, PatientId: c.PatientID, PatientBirthDate: c.PatientBirthDate,
			PatientSex: c.PatientSex, AccessionNumber: c.AccessionNumber, StudyDate: c.StudyDate, StudyTime: c.StudyTime,
			StudyDescription: c.StudyDescription, ReferringPhysician: c.ReferringPhysician, StudyId: c.StudyID,
			SeriesDescription: c.SeriesDescription}
	}
	for _, pt := range f.Outline {
		p.Outline = append(p.Outline, &vigilv1.Point{X: float32(pt.X), Y: float32(pt.Y)})
	}
	src := f.Source
	if src.CameraID != "" {
		p.Source = &vigilv1.Finding_Camera{Camera: &vigilv1.CameraSource{
			CameraId: src.CameraID, TrackId: src.TrackID, StartTime: ts(src.StartTime), EndTime: ts(src.EndTime),
			FirstSequence: src.FirstSequence, LastSequence: src.LastSequence,
		}}
	} else {
		d := &vigilv1.DicomSource{
			StudyInstanceUid: src.StudyInstanceUID, SeriesInstanceUid: src.SeriesInstanceUID,
			SopInstanceUid: src.SOPInstanceUID, SopClassUid: src.SOPClassUID, Modality: src.Modality,
		}
		for _, fr := range src.Frames {
			d.Frames = append(d.Frames, int32(fr))
		}
		p.Source = &vigilv1.Finding_Dicom{Dicom: d}
	}
	if d := f.Decision; d != nil {
		o, _ := key(outcomes, d.Outcome)
		p.Decision = &vigilv1.Decision{Outcome: o, ReasonCode: d.ReasonCode, Comment: d.Comment, Reviewer: d.Reviewer, DecidedAt: ts(d.DecidedAt)}
		if a := d.Amendment; a != nil {
			p.Decision.Amendment = &vigilv1.Amendment{Label: a.Label, Box: boxToProto(a.Box), Measurements: measurementsToProto(a.Measurements)}
		}
	}
	if o := f.Overlay; o != nil {
		p.Overlay = &vigilv1.Image{MediaType: o.MediaType, Data: o.Data, Width: int32(o.Width), Height: int32(o.Height)}
	}
	return p
}

func auditToProto(r review.AuditRecord) *vigilv1.AuditRecord {
	out := &vigilv1.AuditRecord{Sequence: r.Sequence, FindingId: r.FindingID, Actor: r.Actor, Action: r.Action, Time: ts(r.Time), After: findingToProto(r.After)}
	if r.Before != nil {
		out.Before = findingToProto(r.Before)
	}
	return out
}
