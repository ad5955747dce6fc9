package server

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// watch opens a Watch stream and waits for its first answer (a refusal, or the first event of
// an empty store: none within a moment, which means open).
func watch(t *testing.T, ts *testServer, ctx context.Context) error {
	t.Helper()
	stream, err := vigilv1.NewReviewClient(ts.conn).Watch(ctx, &vigilv1.WatchRequest{})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { _, err := stream.Recv(); errc <- err }()
	select {
	case err := <-errc:
		return err
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

func TestStreamsPerPrincipalAndServer(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.Streams = StreamLimits{MaxStreams: 3, MaxStreamsPerPrincipal: 2} })
	reviewer, cancelReviewer := context.WithCancel(ts.as(auth.RoleReviewer))
	defer cancelReviewer()
	for i := range 2 {
		if err := watch(t, ts, reviewer); err != nil {
			t.Fatalf("reviewer's stream %d of 2: %v", i+1, err)
		}
	}
	err := watch(t, ts, reviewer)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams-per-principal") {
		t.Fatalf("a third stream for one principal: got %v, want ResourceExhausted naming --max-streams-per-principal", err)
	}
	admin, cancelAdmin := context.WithCancel(ts.as(auth.RoleAdmin))
	defer cancelAdmin()
	if err := watch(t, ts, admin); err != nil {
		t.Fatalf("another principal's first stream: %v", err)
	}
	err = watch(t, ts, admin)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "(vigild --max-streams)") {
		t.Fatalf("a fourth stream on the server: got %v, want ResourceExhausted naming --max-streams", err)
	}
	// Closing the reviewer's streams frees their slots.
	cancelReviewer()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := watch(t, ts, ts.as(auth.RoleReviewer))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reviewer's streams closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOpenStreamsHaveABudgetOfTheirOwn: health's Watch needs no credential, so its streams
// have a budget apart from the server's: filled, they refuse the next one without a credential,
// and a reviewer still opens a stream while they are all open.
func TestOpenStreamsHaveABudgetOfTheirOwn(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.Streams = StreamLimits{MaxStreams: 2, MaxOpenStreams: 3} })
	anyone, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthWatch := func() error {
		stream, err := healthpb.NewHealthClient(ts.conn).Watch(anyone, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = stream.Recv() // the current status, or the refusal
		return err
	}
	for i := range 3 {
		if err := healthWatch(); err != nil {
			t.Fatalf("health watch %d of 3: %v", i+1, err)
		}
	}
	err := healthWatch()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-open-streams") {
		t.Fatalf("a fourth health watch: got %v, want ResourceExhausted naming --max-open-streams", err)
	}
	for i := range 2 {
		if err := watch(t, ts, ts.as(auth.RoleReviewer)); err != nil {
			t.Fatalf("reviewer's stream %d of 2 beside three health watches: %v", i+1, err)
		}
	}
}

// TestIdleClientStreamIsClosed: a worker that sends part of a file and then nothing, and a
// bridge that configures and then sends nothing, are both closed after the idle limit, and
// the server serves the next call.
func TestIdleClientStreamIsClosed(t *testing.T) {
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Streams = StreamLimits{IdleTimeout: 300 * time.Millisecond} })
	data, _ := phantomFile(t, 900123, 1)

	idle, err := vigilv1.NewImagingClient(ts.conn).AnalyzeInstance(ts.as(auth.RolePACSWorker))
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: data[:64<<10]}); err != nil {
		t.Fatal(err)
	}
	var resp vigilv1.AnalyzeInstanceResponse
	err = idle.RecvMsg(&resp)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--stream-idle-timeout") {
		t.Errorf("an upload gone idle: got %v, want ResourceExhausted naming --stream-idle-timeout", err)
	}

	camera, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	camera.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "ward-2-bed-1", FrameRate: 10}}})
	if _, err := camera.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--stream-idle-timeout") {
		t.Errorf("a camera gone idle: got %v, want ResourceExhausted naming --stream-idle-timeout", err)
	}

	if _, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10); err != nil {
		t.Errorf("a whole upload after the idle ones: %v", err)
	}
}

// TestFrameOverTheByteLimit: a frame over --max-frame-bytes gets its error event naming the
// limit, before any decoding, and the stream goes on.
func TestFrameOverTheByteLimit(t *testing.T) {
	jpgs := walkersJPEGs(t, 2)
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Ward.MaxFrameBytes = len(jpgs[1]) })
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-4-bed-1", FrameRate: 10, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	big := append(append([]byte(nil), jpgs[1]...), 0)
	for i, data := range [][]byte{big, jpgs[1]} {
		stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{
			Sequence: int64(i + 1), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}}})
	}
	stream.CloseSend()
	results := 0
	for {
		ev, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		if fe := ev.GetFrameError(); fe != nil {
			if fe.Sequence != 1 || fe.Code != "InvalidArgument" || !strings.Contains(fe.Message, "--max-frame-bytes") {
				t.Errorf("frame error %+v, want frame 1, InvalidArgument, naming --max-frame-bytes", fe)
			}
		}
		if ev.GetFrameResult() != nil {
			results++
		}
	}
	if results != 1 {
		t.Errorf("%d frame results, want 1: the frame within the limit", results)
	}
}

// TestMisconfiguredWardModels: a server told to use a model of the wrong kind for detection
// or pose answers each stream with FailedPrecondition naming the model, not Internal.
func TestMisconfiguredWardModels(t *testing.T) {
	for _, tt := range []struct {
		name string
		ward WardOptions
		want string
	}{
		{"a lesion model as the detector", WardOptions{DetectorModel: "us-lesion-demo"}, "us-lesion-demo"},
		{"a detector as the pose model", WardOptions{PoseModel: "fastestdet"}, "fastestdet"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Ward = tt.ward })
			stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "ward-9", FrameRate: 10}}})
			_, err = stream.Recv()
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want FailedPrecondition naming %s", err, tt.want)
			}
		})
	}
}

// TestDICOMLimitsNameTheirFlags: an instance over one of the reader's limits is refused with
// InvalidArgument naming the vigild setting that would let it in.
func TestDICOMLimitsNameTheirFlags(t *testing.T) {
	ts := startServer(t, nil, withTriage(t), func(o *Options) {
		o.Imaging.Limits = dicomio.Limits{MaxFrames: 2, MaxRows: 4096, MaxCols: 4096, MaxBytes: 1 << 30}
	})
	data, _ := phantomFile(t, 900411, 1)
	_, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "6 frames is over 2 (vigild --max-frames)") {
		t.Errorf("a 6-frame loop over a limit of 2: got %v, want InvalidArgument naming --max-frames", err)
	}
}
