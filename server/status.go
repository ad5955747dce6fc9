package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/panics"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/biometry"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/triage"
	"github.com/vigil-health/vigil/review"
)

// errorCodes maps the domain's sentinel errors to gRPC codes: the only place that does. Each
// is looked up with errors.Is, so wrapped errors keep their code and their message.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{inference.ErrBadInput, codes.InvalidArgument},
	{inference.ErrOverloaded, codes.ResourceExhausted},
	{inference.ErrUnknownModel, codes.NotFound},
	{inference.ErrModelNotReady, codes.FailedPrecondition},
	{inference.ErrClosed, codes.Unavailable},
	{inference.ErrNoCGO, codes.Unimplemented},
	{models.ErrInvalidManifest, codes.FailedPrecondition},
	{models.ErrSignatureMismatch, codes.FailedPrecondition},
	{auth.ErrUnknownToken, codes.Unauthenticated},
	{review.ErrNotFound, codes.NotFound},
	{review.ErrStale, codes.Aborted},
	{review.ErrClaimed, codes.FailedPrecondition},
	{review.ErrDecided, codes.FailedPrecondition},
	{review.ErrNotClaimed, codes.FailedPrecondition},
	{review.ErrInvalid, codes.InvalidArgument},
	{review.ErrNothingToReport, codes.FailedPrecondition},
	{review.ErrOtherPatient, codes.FailedPrecondition},
	{review.ErrStoreFull, codes.ResourceExhausted},
	{review.ErrStoreUnwritable, codes.Unavailable},
	{review.ErrStoreUnreachable, codes.Unavailable},
	{dicomio.ErrNotDICOM, codes.InvalidArgument},
	{dicomio.ErrTruncated, codes.InvalidArgument},
	{dicomio.ErrMalformed, codes.InvalidArgument},
	{dicomio.ErrTooLarge, codes.InvalidArgument},
	{dicomio.ErrUnsupportedTransferSyntax, codes.InvalidArgument},
	{dicomio.ErrUnsupportedPixels, codes.InvalidArgument},
	{dicomio.ErrNoPixelData, codes.FailedPrecondition},
	{triage.ErrNotUltrasound, codes.FailedPrecondition},
	{triage.ErrUnsupportedModel, codes.FailedPrecondition},
	{biometry.ErrNotUltrasound, codes.FailedPrecondition},
	{biometry.ErrUnsupportedModel, codes.FailedPrecondition},
	{detect.ErrUnsupportedModel, codes.FailedPrecondition},
	{pose.ErrUnsupportedModel, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// panicStatus is the Internal status of a recovered panic. It keeps the panic in its chain,
// so that the interceptors count it with the handlers' own.
type panicStatus struct{ panic *panics.Error }

func (p panicStatus) Error() string { return p.panic.Error() }

func (p panicStatus) GRPCStatus() *status.Status {
	return status.New(codes.Internal, "internal error; the server log has the detail")
}

func (p panicStatus) Unwrap() error { return p.panic }

// limitFlags name the vigild setting behind each of dicomio's limits.
var limitFlags = map[string]string{
	"MaxFrames": "--max-frames", "MaxRows": "--max-rows, --max-cols", "MaxCols": "--max-rows, --max-cols",
	"MaxBytes": "--max-bytes", "MaxRegions": "--max-regions",
}

// toStatus converts a domain error into a status error. An error the table does not know is
// an internal fault: the client gets a generic message and the log gets the detail.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var pe *panics.Error
	if errors.As(err, &pe) {
		log.ErrorContext(ctx, "worker panicked", slog.String("site", pe.Site), slog.Any("panic", pe.Value), slog.String("stack", string(pe.Stack)))
		return panicStatus{pe}
	}
	var stale *review.StaleError
	if errors.As(err, &stale) {
		// The current version rides along as a detail, so a client can reload without parsing.
		st, derr := status.New(codes.Aborted, err.Error()).WithDetails(&errdetails.ErrorInfo{
			Reason: "STALE_VERSION", Domain: "vigil",
			Metadata: map[string]string{"finding_id": stale.ID, "current_version": strconv.FormatInt(stale.Current, 10)},
		})
		if derr == nil {
			return st.Err()
		}
	}
	msg := err.Error()
	var over *dicomio.OverLimit
	if errors.As(err, &over) && limitFlags[over.Limit] != "" {
		msg += " (vigild " + limitFlags[over.Limit] + ")"
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return status.Error(e.code, msg)
		}
	}
	log.ErrorContext(ctx, "internal error", slog.String("error", err.Error()))
	return status.Error(codes.Internal, "internal error; the server log has the detail")
}
