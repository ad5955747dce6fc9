package server

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/internal/panics"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// TestWorkerPanicsEndOneCall makes each kind of goroutine that a handler starts panic, through
// the real server: the one call ends with Internal and a log line, and the next call of the
// same kind is served. Without the recovery, the panic ends the test binary.
func TestWorkerPanicsEndOneCall(t *testing.T) {
	metrics := NewMetrics()
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Metrics = metrics })
	seed := uint64(930000)
	analyse := func() error {
		seed++
		data, _ := phantomFile(t, seed, 2)
		_, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10)
		return err
	}
	frames := walkersJPEGs(t, 4)
	stream := func() error {
		s, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
		if err != nil {
			return err
		}
		s.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
			CameraId: "ward-1-bed-1", FrameRate: 10, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
		for i, jpg := range frames {
			s.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{
				Sequence: int64(i + 1), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: jpg}}})
		}
		s.CloseSend()
		results := 0
		for {
			ev, err := s.Recv()
			if errors.Is(err, io.EOF) {
				if results != len(frames) {
					return status.Errorf(codes.Unknown, "%d frame results, want %d", results, len(frames))
				}
				return nil
			}
			if err != nil {
				return err
			}
			if ev.GetFrameResult() != nil {
				results++
			}
		}
	}
	tests := []struct {
		site string
		call func() error
	}{
		{"imaging chunk pump", analyse},
		{"triage frame reader", analyse},
		{"triage overlay", analyse},
		{"ward frame receiver", stream},
		{"ward frame decoder", stream},
		{"ward pose worker", stream},
	}
	for i, tt := range tests {
		t.Run(tt.site, func(t *testing.T) {
			restore := panics.InjectForTest(tt.site)
			err := tt.call()
			restore()
			if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "injected") {
				t.Errorf("with a panic: got %v, want Internal without the panic's text", err)
			}
			if !strings.Contains(ts.logs.String(), `msg="worker panicked" site="`+tt.site+`"`) {
				t.Errorf("no log line names the panic at %q", tt.site)
			}
			if got := testutil.ToFloat64(metrics.panics); got != float64(i+1) {
				t.Errorf("vigil_grpc_panics_total = %v, want %d", got, i+1)
			}
			if err := tt.call(); err != nil {
				t.Errorf("the next call after the panic: %v", err)
			}
		})
	}
}
