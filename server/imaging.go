package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
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
}

type imagingService struct {
	vigilv1.UnimplementedImagingServer
	log      *slog.Logger
	store    review.Store
	registry *inference.Registry
	opts     ImagingOptions
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
	model := first.GetOptions().GetModel()
	if model == "" {
		model = s.opts.Model
	}
	session, err := s.registry.Session(model)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	includeOverlays := first.GetOptions().GetIncludeOverlays()

	// One goroutine per request pumps chunks into a pipe that the reader consumes.
	pr, pw := io.Pipe()
	defer pr.Close()
	pumpErr := make(chan error, 1)
	go func() {
		msg := first
		for {
			if len(msg.Chunk) > MaxChunkBytes {
				pw.CloseWithError(errChunkTooLarge)
				pumpErr <- errChunkTooLarge
				return
			}
			if _, err := pw.Write(msg.Chunk); err != nil {
				pumpErr <- nil // the reader stopped: its error is the one to report
				return
			}
			var err error
			msg, err = recv()
			if errors.Is(err, io.EOF) {
				pw.Close()
				pumpErr <- nil
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				pumpErr <- err
				return
			}
		}
	}()
	fail := func(err error) (*vigilv1.AnalyzeInstanceResponse, error) {
		pr.CloseWithError(err)
		if perr := <-pumpErr; perr != nil {
			if _, ok := status.FromError(perr); ok {
				return nil, perr
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
	if prev, err := s.store.GetAnalysis(ctx, inst.SOPInstanceUID); err == nil {
		pr.Close() // the rest of the file is not needed
		<-pumpErr
		return s.response(ctx, prev, true, includeOverlays)
	}
	res, err := triage.Analyze(ctx, session, reader, progress)
	if err != nil {
		return fail(err)
	}
	// Every frame is read; what may follow (trailing padding) is not needed. Closing the
	// pipe releases the pump, which may be waiting for the reader to take the rest.
	pr.Close()
	if err := <-pumpErr; err != nil {
		return nil, toStatus(ctx, s.log, err)
	}

	man := session.Manifest()
	ref := review.ModelRef{Name: man.Name, Version: man.Version, SHA256: man.Weights.SHA256}
	findings := make([]review.Finding, 0, len(res.Lesions))
	for _, l := range res.Lesions {
		f := review.Finding{
			Pipeline: review.PipelineTriage, Label: l.Label, Score: l.Score, Priority: l.Priority,
			Box:        &review.Box{X: float64(l.Box.Min.X), Y: float64(l.Box.Min.Y), Width: float64(l.Box.Dx()), Height: float64(l.Box.Dy())},
			FirstFrame: l.FirstFrame, LastFrame: l.LastFrame, BestFrame: l.BestFrame,
			Model: ref,
			Source: review.Source{StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID,
				SOPInstanceUID: inst.SOPInstanceUID, SOPClassUID: inst.SOPClassUID, Modality: inst.Modality,
				Frames: frameRange(l.FirstFrame, l.LastFrame), NumberOfFrames: res.Frames},
			Overlay: &review.Image{MediaType: "image/png", Data: l.Overlay, Width: inst.Columns, Height: inst.Rows},
		}
		if l.LongAxisMM > 0 {
			f.Measurements = []review.Measurement{{Name: "long axis", Value: round1(l.LongAxisMM), Unit: "mm"}, {Name: "area", Value: round1(l.AreaMM2), Unit: "mm2"}}
		}
		findings = append(findings, f)
	}
	analysis := review.Analysis{SOPInstanceUID: inst.SOPInstanceUID, SOPClassUID: inst.SOPClassUID,
		StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID, Modality: inst.Modality,
		Frames: res.Frames, Model: ref}
	stored, existed, err := s.store.AddAnalysis(ctx, who, analysis, findings)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return s.response(ctx, stored, existed, includeOverlays)
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
	}
	for _, id := range a.FindingIDs {
		f, err := s.store.Get(ctx, id)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		if !overlays {
			f.Overlay = nil
		}
		resp.Findings = append(resp.Findings, findingToProto(&f))
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

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
