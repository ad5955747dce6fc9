package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/panics"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/biometry"
	"github.com/vigil-health/vigil/pipelines/geom"
	"github.com/vigil-health/vigil/pipelines/triage"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

// MaxChunkBytes bounds one chunk of a streamed DICOM instance.
const MaxChunkBytes = 4 << 20

// ImagingOptions configure the Imaging service.
type ImagingOptions struct {
	// Model is the triage model used when a request names none.
	Model    string
	Limits   dicomio.Limits
	Decoders dicomio.Decoders
	// MaxTracks bounds the lesions one loop may follow (triage.DefaultMaxTracks when zero).
	MaxTracks int
	// MaxOverlayBytes bounds the overlays stored for one instance (DefaultMaxOverlayBytes
	// when zero). The most urgent findings keep theirs; the rest are stored without one.
	MaxOverlayBytes int
}

// DefaultMaxOverlayBytes is the overlay budget of one instance: a few full-size frames.
const DefaultMaxOverlayBytes = 32 << 20

type imagingService struct {
	vigilv1.UnimplementedImagingServer
	log      *slog.Logger
	store    review.Store
	registry *inference.Registry
	opts     ImagingOptions
	// analysing holds one lock per SOP Instance UID being analysed: a second upload of the
	// same instance waits for the first and gets its stored result, rather than run the
	// models again (on this server; replicas may each analyse it once, and the store keeps
	// one).
	analysing keyedLocks
}

// keyedLocks is a lock per key, made when first taken and dropped when released.
type keyedLocks struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// lock takes key's lock, waiting for its holder to release it, or returns ctx's error.
func (k *keyedLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		released, busy := k.held[key]
		if !busy {
			if k.held == nil {
				k.held = map[string]chan struct{}{}
			}
			released = make(chan struct{})
			k.held[key] = released
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(released)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-released:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *imagingService) AnalyzeInstance(stream vigilv1.Imaging_AnalyzeInstanceServer) error {
	resp, err := s.analyze(stream.Context(), stream.Recv, nil)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

func (s *imagingService) AnalyzeInstanceProgress(stream vigilv1.Imaging_AnalyzeInstanceProgressServer) error {
	var sendErr error
	progress := func(done, total, candidates int) {
		if sendErr == nil {
			sendErr = stream.Send(&vigilv1.AnalyzeInstanceProgressResponse{Event: &vigilv1.AnalyzeInstanceProgressResponse_Progress{
				Progress: &vigilv1.AnalyzeProgress{FramesDone: int32(done), FramesTotal: int32(total), Candidates: int32(candidates)}}})
		}
	}
	resp, err := s.analyze(stream.Context(), stream.Recv, progress)
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&vigilv1.AnalyzeInstanceProgressResponse{Event: &vigilv1.AnalyzeInstanceProgressResponse_Result{Result: resp}})
}

// errChunkTooLarge is what the chunk pump reports for an oversized message.
var errChunkTooLarge = status.Errorf(codes.InvalidArgument, "a chunk is over %d bytes: send the file in smaller chunks", MaxChunkBytes)

// pump writes the chunks into the reader's pipe until the client ends its side. It returns
// nil when the reader stopped reading first: the reader's error is the one to report.
func pump(first *vigilv1.AnalyzeInstanceRequest, recv func() (*vigilv1.AnalyzeInstanceRequest, error), pw *io.PipeWriter) error {
	for msg := first; ; {
		if len(msg.Chunk) > MaxChunkBytes {
			return errChunkTooLarge
		}
		if _, err := pw.Write(msg.Chunk); err != nil {
			return nil
		}
		var err error
		msg, err = recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sameContent refuses an instance whose content (dicomio's Digest: study, series and
// pixels) differs from the one first analysed under its SOP Instance UID: a UID names one
// instance, and the stored result is not this one's. The same instance in another lossless
// transfer syntax is the same content. Analyses stored before the digest was kept are not
// compared.
func sameContent(stored review.Analysis, digest string) error {
	if stored.ContentSHA256 == "" || stored.ContentSHA256 == digest {
		return nil
	}
	return status.Errorf(codes.AlreadyExists, "this SOP Instance UID was analysed before with other content "+
		"(study, series or pixels differ: that instance's digest %s..., this one's %s...): "+
		"a UID names one instance; send a changed instance under a new SOP Instance UID", stored.ContentSHA256[:12], digest[:12])
}

// analyze streams the chunks into the DICOM reader (the file is never held whole), runs
// triage, and commits the findings before it answers. A resubmitted instance gets its stored
// result.
func (s *imagingService) analyze(ctx context.Context, recv func() (*vigilv1.AnalyzeInstanceRequest, error), progress triage.Progress) (*vigilv1.AnalyzeInstanceResponse, error) {
	who, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	first, err := recv()
	if errors.Is(err, io.EOF) {
		return nil, status.Error(codes.InvalidArgument, "no DICOM data was sent")
	}
	if err != nil {
		return nil, err
	}
	asked := first.GetOptions().GetModel()
	if asked != "" {
		// A model asked for by name is checked before any data is read.
		if _, err := s.registry.Session(asked); err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
	}
	includeOverlays := first.GetOptions().GetIncludeOverlays()

	// One goroutine per request pumps chunks into a pipe that the reader consumes.
	pr, pw := io.Pipe()
	defer pr.Close()
	pumpErr := make(chan error, 1)
	// finish releases the pump once every frame is read (what may follow, trailing
	// padding, is not needed): the pump may be waiting for the reader to take the rest.
	finish := func() error {
		pr.Close()
		if err := <-pumpErr; err != nil {
			return toStatus(ctx, s.log, err)
		}
		return nil
	}
	go func() {
		err := panics.Catch("imaging chunk pump", func() error { return pump(first, recv, pw) })
		if err != nil {
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		pumpErr <- err
	}()
	fail := func(err error) (*vigilv1.AnalyzeInstanceResponse, error) {
		pr.CloseWithError(err)
		if perr := <-pumpErr; perr != nil {
			// The client's own error (a chunk too large, a broken stream) or the pump's panic
			// explains the reader's failure better than the reader can.
			var pe *panics.Error
			if _, ok := status.FromError(perr); ok || errors.As(perr, &pe) {
				return nil, toStatus(ctx, s.log, perr)
			}
		}
		return nil, toStatus(ctx, s.log, err)
	}

	reader, err := dicomio.Open(pr, dicomio.Options{Limits: s.opts.Limits, Decoders: s.opts.Decoders})
	if err != nil {
		return fail(err)
	}
	inst := reader.Instance()
	if !review.ValidUID(inst.SOPInstanceUID) {
		return fail(fmt.Errorf("%w: the SOP Instance UID is missing or not a UID", dicomio.ErrMalformed))
	}
	// The other UIDs are stored, named in reports and file names: each is a UID or absent,
	// refused before anything is stored. The value is not repeated: it is the sender's data.
	for _, u := range []struct{ tag, name, value string }{
		{"(0020,000D)", "Study Instance UID", inst.StudyInstanceUID},
		{"(0020,000E)", "Series Instance UID", inst.SeriesInstanceUID},
		{"(0008,0016)", "SOP Class UID", inst.SOPClassUID},
	} {
		if u.value != "" && !review.ValidUID(u.value) {
			return fail(fmt.Errorf("%w: %s %s (%d bytes) is not a UID: digits and dots, at most 64 characters", dicomio.ErrMalformed, u.tag, u.name, len(u.value)))
		}
	}
	// A study is one patient: an instance that names another patient than the findings
	// already stored under its study is refused, before anything is stored.
	if err := review.CheckPatient(ctx, s.store, inst.StudyInstanceUID, inst.Patient.ID); err != nil {
		return fail(err)
	}
	unlock, err := s.analysing.lock(ctx, inst.SOPInstanceUID)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	prev, err := s.store.GetAnalysis(ctx, inst.SOPInstanceUID)
	switch {
	case err == nil:
		if err := s.resent(ctx, prev, asked, reader); err != nil {
			return fail(err)
		}
		if err := finish(); err != nil {
			return nil, err
		}
		return s.response(ctx, prev, true, includeOverlays)
	case !errors.Is(err, review.ErrNotFound):
		// A store that cannot say whether the instance was analysed must not analyse it again.
		return fail(err)
	}
	session, routing, err := s.choose(inst, asked)
	if err != nil {
		return fail(err)
	}
	if session == nil {
		// No model's routes take this instance: it is answered, and nothing is stored.
		pr.Close()
		<-pumpErr
		return &vigilv1.AnalyzeInstanceResponse{Source: &vigilv1.DicomSource{StudyInstanceUid: inst.StudyInstanceUID,
			SeriesInstanceUid: inst.SeriesInstanceUID, SopInstanceUid: inst.SOPInstanceUID, SopClassUid: inst.SOPClassUID,
			Modality: inst.Modality}, Routing: routing}, nil
	}
	man := session.Manifest()
	ref := review.ModelRef{Name: man.Name, Version: man.Version, SHA256: man.Weights.SHA256}
	source := review.Source{StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID,
		SOPInstanceUID: inst.SOPInstanceUID, SOPClassUID: inst.SOPClassUID, Modality: inst.Modality}
	analysis := review.Analysis{SOPInstanceUID: inst.SOPInstanceUID, SOPClassUID: inst.SOPClassUID,
		StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID, Modality: inst.Modality,
		Model: ref, Routing: routing}
	var findings []review.Finding
	if man.Task == models.TaskBiometry {
		findings, err = s.biometry(ctx, session, reader, source, &analysis)
	} else {
		findings, err = s.triage(ctx, session, reader, source, &analysis, progress)
	}
	if err != nil {
		return fail(err)
	}
	context := review.ContextOf(inst)
	for i := range findings {
		findings[i].Context = context
	}
	if analysis.ContentSHA256, err = reader.Digest(); err != nil {
		return fail(err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	stored, existed, err := s.store.AddAnalysis(ctx, who, analysis, findings)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if existed { // another replica stored it first
		if err := s.owns(ctx, stored); err != nil {
			return nil, err
		}
		if err := sameContent(stored, analysis.ContentSHA256); err != nil {
			return nil, err
		}
	}
	return s.response(ctx, stored, existed, includeOverlays)
}

// resent checks an instance sent again against its stored analysis: the same sender
// (owns), no other model asked for, and the same content (sameContent; its frames are
// decoded for that, and no model runs).
func (s *imagingService) resent(ctx context.Context, prev review.Analysis, asked string, reader *dicomio.Reader) error {
	if err := s.owns(ctx, prev); err != nil {
		return err
	}
	if asked != "" && asked != prev.Model.Name {
		return status.Errorf(codes.AlreadyExists, "this SOP Instance UID was analysed before by model %s %s, not by the model asked for: "+
			"one analysis per instance", prev.Model.Name, prev.Model.Version)
	}
	if prev.ContentSHA256 == "" {
		return nil
	}
	digest, err := reader.Digest()
	if err != nil {
		return err
	}
	return sameContent(prev, digest)
}

// owns refuses a PACS worker the stored analysis of an instance another principal sent: its
// findings, study, decisions and overlays are that principal's. SOP Instance UIDs are unique
// and unguessable, so a second sender of one is refused outright (PermissionDenied) rather
// than answered with an analysis of its own; the refusal says no more than that the UID is
// taken. An analysis stored before senders were kept is judged by its first finding's.
func (s *imagingService) owns(ctx context.Context, a review.Analysis) error {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok || p.Role != auth.RolePACSWorker {
		return nil
	}
	owner := a.SubmittedBy
	if owner == "" && len(a.FindingIDs) > 0 {
		f, err := s.store.Get(ctx, a.FindingIDs[0])
		if err != nil {
			return toStatus(ctx, s.log, err)
		}
		owner = f.SubmittedBy
	}
	if owner != "" && owner != p.Name {
		return status.Error(codes.PermissionDenied, "this SOP Instance UID was sent by another principal: a PACS worker gets back only the analyses of the instances it sent")
	}
	return nil
}

// choose picks the model for an instance: the one asked for, the configured default, or the
// one whose routes match (models.Choose). It returns a nil session, and why, when none does.
func (s *imagingService) choose(inst dicomio.Instance, asked string) (*inference.Session, string, error) {
	name, routing := asked, "asked for by the request"
	if name == "" && s.opts.Model != "" {
		name, routing = s.opts.Model, "the server's default model (--triage-model)"
	}
	if name != "" {
		session, err := s.registry.Session(name)
		return session, routing, err
	}
	exam := models.Exam{Modality: inst.Modality, SOPClassUID: inst.SOPClassUID, BodyPart: inst.BodyPartExamined,
		StudyDescription: inst.StudyDescription, SeriesDescription: inst.SeriesDescription}
	man, route, ok := models.Choose(s.registry.Manifests(), exam)
	if !ok {
		return nil, fmt.Sprintf("no model's routes match this instance (modality %q, body part %q; descriptions are not repeated here): name a model to run one", inst.Modality, inst.BodyPartExamined), nil
	}
	session, err := s.registry.Session(man.Name)
	return session, fmt.Sprintf("%s: route %s", man.Name, route.String()), err
}

// biometry measures the fetal head and makes its finding.
func (s *imagingService) biometry(ctx context.Context, session *inference.Session, reader *dicomio.Reader, source review.Source, a *review.Analysis) ([]review.Finding, error) {
	res, err := biometry.Analyze(ctx, session, reader)
	if err != nil {
		return nil, err
	}
	a.Frames = res.Frames
	f, notes := res.Finding(a.Model)
	a.Notes = notes
	if f == nil {
		return nil, nil
	}
	inst := res.Instance
	source.Frames, source.NumberOfFrames = []int{f.BestFrame}, res.Frames
	f.Source = source
	f.Overlay = &review.Image{MediaType: "image/png", Data: res.Head.Overlay, Width: inst.Columns, Height: inst.Rows}
	return []review.Finding{*f}, nil
}

// triage finds lesions and makes their findings.
func (s *imagingService) triage(ctx context.Context, session *inference.Session, reader *dicomio.Reader, source review.Source, a *review.Analysis, progress triage.Progress) ([]review.Finding, error) {
	res, err := triage.Analyze(ctx, session, reader, triage.Options{Progress: progress, MaxTracks: s.opts.MaxTracks})
	if err != nil {
		return nil, err
	}
	a.Frames = res.Frames
	inst := res.Instance
	ref := a.Model
	budget := s.opts.MaxOverlayBytes
	if budget <= 0 {
		budget = DefaultMaxOverlayBytes
	}
	findings := make([]review.Finding, 0, len(res.Lesions))
	left := 0
	for _, l := range res.Lesions { // most urgent first: they keep their overlays
		f := review.Finding{
			Pipeline: review.PipelineTriage, Label: l.Label, Score: l.Score, Priority: l.Priority,
			Box:        &review.Box{X: float64(l.Box.Min.X), Y: float64(l.Box.Min.Y), Width: float64(l.Box.Dx()), Height: float64(l.Box.Dy())},
			FirstFrame: l.FirstFrame, LastFrame: l.LastFrame, BestFrame: l.BestFrame,
			Model:  ref,
			Source: source,
		}
		if len(l.Overlay) <= budget {
			budget -= len(l.Overlay)
			f.Overlay = &review.Image{MediaType: "image/png", Data: l.Overlay, Width: inst.Columns, Height: inst.Rows}
		} else {
			left++
		}
		f.Source.Frames, f.Source.NumberOfFrames = frameRange(l.FirstFrame, l.LastFrame), res.Frames
		if l.LongAxisMM > 0 {
			f.Measurements = []review.Measurement{{Name: "long axis", Value: round1(l.LongAxisMM), Unit: "mm"}, {Name: "area", Value: round1(l.AreaMM2), Unit: "mm2"}}
		}
		findings = append(findings, f)
	}
	if left > 0 {
		a.Notes = append(a.Notes, fmt.Sprintf("%d of %d findings are stored without an overlay: the instance's overlays reached the limit of %d bytes (vigild --max-overlay-bytes)",
			left, len(findings), cmp.Or(s.opts.MaxOverlayBytes, DefaultMaxOverlayBytes)))
	}
	return findings, nil
}

// response builds the answer from what the store holds, so a first answer and a repeated
// one are the same.
func (s *imagingService) response(ctx context.Context, a review.Analysis, existed, overlays bool) (*vigilv1.AnalyzeInstanceResponse, error) {
	resp := &vigilv1.AnalyzeInstanceResponse{
		Source: &vigilv1.DicomSource{StudyInstanceUid: a.StudyInstanceUID, SeriesInstanceUid: a.SeriesInstanceUID,
			SopInstanceUid: a.SOPInstanceUID, SopClassUid: a.SOPClassUID, Modality: a.Modality},
		AlreadyAnalyzed: existed,
		FramesAnalyzed:  int32(a.Frames),
		Model:           &vigilv1.ModelRef{Name: a.Model.Name, Version: a.Model.Version, Sha256: a.Model.SHA256},
		Routing:         a.Routing,
		Notes:           a.Notes,
	}
	for _, id := range a.FindingIDs {
		f, err := s.store.Get(ctx, id)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		if !overlays {
			f.Overlay = nil
		}
		p := findingToProto(&f)
		p.Context = nil // the worker sent the file; the patient is for reviewers
		resp.Findings = append(resp.Findings, p)
	}
	return resp, nil
}

func frameRange(first, last int) []int {
	out := make([]int, 0, last-first+1)
	for f := first; f <= last; f++ {
		out = append(out, f)
	}
	return out
}

func round1(v float64) float64 { return geom.Round(v, 1) }
