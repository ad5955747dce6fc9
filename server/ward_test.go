package server

import (
	"context"
	"errors"
	"image"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/hostile"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/ward"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

// walkersJPEGs returns the first n frames of the walkers clip as JPEG.
func walkersJPEGs(t testing.TB, n int) [][]byte { return clipJPEGs(t, "video/walkers-vtest.avi", n) }

// hugePNG is a valid PNG header claiming 20000 x 20000 pixels, with no pixels behind it.
func hugePNG(t *testing.T) []byte { return hostile.HugePNG(20000) }

type wardEvents struct {
	results, errors, dropped int
	errorCodes               map[int64]string
	people                   []int
	stats                    *vigilv1.StreamStats
}

func collect(t *testing.T, stream vigilv1.Ward_StreamCameraClient) wardEvents {
	t.Helper()
	ev := wardEvents{errorCodes: map[int64]string{}}
	for {
		e, err := stream.Recv()
		if err == io.EOF {
			return ev
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.GetFrameResult() != nil:
			ev.results++
			ev.people = append(ev.people, len(e.GetFrameResult().Tracks))
		case e.GetFrameError() != nil:
			ev.errors++
			ev.errorCodes[e.GetFrameError().Sequence] = e.GetFrameError().Code
		case e.GetDropped() != nil:
			ev.dropped += int(e.GetDropped().Count)
		case e.GetStats() != nil:
			ev.stats = e.GetStats()
		}
	}
}

// TestWardStreamEveryFrame streams real frames with bad ones among them: every good frame
// gets its people, every bad one an error event, and the stream goes on.
func TestWardStreamEveryFrame(t *testing.T) {
	metrics := NewMetrics()
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Metrics = metrics })
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-3-bed-2", FrameRate: 10, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	frames := walkersJPEGs(t, 20)
	bad := map[int64][]byte{5: []byte("not an image at all"), 9: {}, 13: hugePNG(t)}
	seq := int64(0)
	for _, jpg := range frames {
		seq++
		data, enc := jpg, vigilv1.FrameEncoding_FRAME_ENCODING_JPEG
		if b, ok := bad[seq]; ok {
			data, enc = b, vigilv1.FrameEncoding_FRAME_ENCODING_PNG
		}
		if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: seq, Encoding: enc, Data: data}}}); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	ev := collect(t, stream)
	if ev.results != 17 || ev.errors != 3 {
		t.Errorf("got %d results and %d errors, want 17 and 3", ev.results, ev.errors)
	}
	for s := range bad {
		if ev.errorCodes[s] != "InvalidArgument" {
			t.Errorf("bad frame %d: error code %q, want InvalidArgument", s, ev.errorCodes[s])
		}
	}
	withPeople := 0
	for _, n := range ev.people {
		if n >= 3 {
			withPeople++
		}
	}
	if withPeople < 15 {
		t.Errorf("%d of %d frames show 3 or more people, want 15", withPeople, len(ev.people))
	}
	if ev.stats == nil || ev.stats.FramesReceived != 20 || ev.stats.FramesProcessed != 20 || ev.stats.FramesDropped != 0 {
		t.Errorf("final stats %v, want 20 received and processed, none dropped", ev.stats)
	}
	for outcome, want := range map[string]float64{"processed": 17, "error": 3, "dropped": 0} {
		if got := testutil.ToFloat64(metrics.wardFrames.WithLabelValues("ward-3-bed-2", outcome)); got != want {
			t.Errorf("vigil_ward_frames_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	if n := testutil.CollectAndCount(metrics.wardStage); n != 5 {
		t.Errorf("%d stage histograms, want decode, detect, pose, track and analyze", n)
	}
	// The stream's session is freed once it ends.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(metrics.wardStreams) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("vigil_ward_streams is %v after the stream ended, want 0", testutil.ToFloat64(metrics.wardStreams))
		}
		runtime.Gosched()
	}
}

// TestWardStreamRealtimeDrops sends frames faster than they can be processed: stale frames
// are dropped, reported, and every frame is accounted for.
func TestWardStreamRealtimeDrops(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "lobby", Policy: vigilv1.FramePolicy_FRAME_POLICY_REALTIME}}})
	frames := walkersJPEGs(t, 10)
	for i := 0; i < 60; i++ {
		stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: int64(i + 1), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: frames[i%10]}}})
	}
	stream.CloseSend()
	ev := collect(t, stream)
	if ev.stats == nil || ev.stats.FramesReceived != 60 {
		t.Fatalf("stats %v, want 60 received", ev.stats)
	}
	if ev.stats.FramesDropped == 0 || int64(ev.results) != ev.stats.FramesProcessed || ev.stats.FramesProcessed+ev.stats.FramesDropped != 60 {
		t.Errorf("realtime: %d processed + %d dropped of 60 (results %d); want some dropped and every frame accounted for",
			ev.stats.FramesProcessed, ev.stats.FramesDropped, ev.results)
	}
	t.Logf("realtime: %d processed, %d dropped (%d reported in events)", ev.stats.FramesProcessed, ev.stats.FramesDropped, ev.dropped)
}

func TestWardStreamNeedsItsConfiguration(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewWardClient(ts.conn)
	for name, first := range map[string]*vigilv1.WardRequest{
		"a frame first": {Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: 1}}},
		"bad camera id": {Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "../../etc"}}},
		"no camera id":  {Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{}}},
		"a negative scale": {Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "lobby",
			Calibration: &vigilv1.Calibration{Kind: &vigilv1.Calibration_PixelsPerMetre{PixelsPerMetre: -3}}}}},
		"a homography of 8 numbers": {Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "lobby",
			Calibration: &vigilv1.Calibration{Kind: &vigilv1.Calibration_FloorHomography{FloorHomography: &vigilv1.Homography{M: []float64{1, 0, 0, 0, 1, 0, 0, 0}}}}}}},
		"a singular homography": {Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "lobby",
			Calibration: &vigilv1.Calibration{Kind: &vigilv1.Calibration_FloorHomography{FloorHomography: &vigilv1.Homography{M: []float64{1, 2, 3, 2, 4, 6, 0, 0, 1}}}}}}},
	} {
		stream, err := c.StreamCamera(ts.as(auth.RoleWardBridge))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(first)
		stream.CloseSend()
		if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

// TestBadFramesKeepMemoryBounded sends 300 bad frames (headers claiming 20000 x 20000 pixels,
// in PNG and JPEG; zero bytes; not an image; a raw frame of the wrong size) and then a good
// one: each bad frame gets its error event, the good one its people, and the server's heap
// never grows by more than 64 MiB (one 20000 x 20000 decode would take 1.2 GB).
func TestBadFramesKeepMemoryBounded(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-3-bed-2", Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	hugeJPEG := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x4E, 0x20, 0x4E, 0x20, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9}
	bad := []*vigilv1.Frame{
		{Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_PNG, Data: hugePNG(t)},
		{Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: hugeJPEG},
		{Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: nil},
		{Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_PNG, Data: []byte("not an image at all")},
		{Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_BGR, Width: 20000, Height: 20000, Data: []byte{1, 2, 3}},
	}
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	peak := base.HeapInuse
	done := make(chan wardEvents)
	go func() { done <- collect(t, stream) }()
	seq := int64(0)
	for i := 0; i < 300; i++ {
		seq++
		f := bad[i%len(bad)]
		if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: seq,
			Encoding: f.Encoding, Width: f.Width, Height: f.Height, Data: f.Data}}}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
		}
	}
	seq++
	good := walkersJPEGs(t, 1)[0]
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: seq, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: good}}})
	stream.CloseSend()
	ev := <-done
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	peak = max(peak, m.HeapInuse)
	if ev.errors != 300 || ev.results != 1 || ev.people[0] < 3 {
		t.Errorf("%d error events and %d results (people %v), want 300 errors and the good frame's people", ev.errors, ev.results, ev.people)
	}
	if grew := int64(peak) - int64(base.HeapInuse); grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB over 300 bad frames, want under 64", grew>>20)
	}
	t.Logf("heap in use: %d MiB at the start, %d MiB at the peak", base.HeapInuse>>20, peak>>20)
}

// clipJPEGs returns the first n frames of a shared clip (all when n is 0) as JPEG.
func clipJPEGs(t testing.TB, rel string, n int) [][]byte {
	t.Helper()
	v, err := vision.OpenVideo(testenv.Shared(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out [][]byte
	for n == 0 || len(out) < n {
		f, err := v.Read()
		if err == io.EOF && n == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := vision.EncodeJPEG(f, 85)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// TestFallKeptWhenTheBridgeGoesAway: a bridge that disconnects the moment it hears of a fall
// (a camera losing power as the person falls against it) leaves the fall in the review queue,
// with the finding the alert named.
func TestFallKeptWhenTheBridgeGoesAway(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	ctx, cancel := context.WithCancel(ts.as(auth.RoleWardBridge))
	defer cancel()
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-4-bay-1", FrameRate: 18, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	go func() {
		for i, jpg := range clipJPEGs(t, "video/falls-upfall/A4_S1_T1_Cam1.mp4", 0) {
			f := &vigilv1.Frame{Sequence: int64(i + 1), CaptureTime: timestamppb.New(start.Add(time.Duration(i) * time.Second / 18)),
				Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: jpg}
			if stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}) != nil {
				return
			}
		}
		stream.CloseSend()
	}()
	var alert *vigilv1.FallAlert
	for alert == nil {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("the stream ended with no fall alert: %v", err)
		}
		alert = ev.GetFall()
	}
	cancel() // gone, without reading another event
	if alert.FindingId == "" {
		t.Fatal("the alert names no finding")
	}
	f, err := ts.store.Get(context.Background(), alert.FindingId)
	if err != nil {
		t.Fatalf("the alert's finding %s: %v", alert.FindingId, err)
	}
	if f.Pipeline != review.PipelineFall || f.Source.CameraID != "ward-4-bay-1" || f.Overlay == nil {
		t.Errorf("stored %s finding from camera %q with overlay %v, want a fall from ward-4-bay-1 with its keyframe", f.Pipeline, f.Source.CameraID, f.Overlay != nil)
	}
}

// TestFindingStoredAfterTheStreamEnded: storing a ward finding does not hang on the stream's
// context, which ends when the bridge goes: a fall raised on a frame processed as the bridge
// disconnected is stored all the same.
func TestFindingStoredAfterTheStreamEnded(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &cameraStream{wardService: &wardService{log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: ts.store},
		cfg: &vigilv1.StreamConfig{CameraId: "ward-4-bay-2"}, who: "test-ward-bridge", ref: review.ModelRef{Name: "movenet-lightning", Version: "test"}}
	img := vision.Frame{Width: 64, Height: 48, BGR: make([]byte, 64*48*3)}
	down := time.Date(2026, 11, 22, 9, 0, 1, 0, time.UTC)
	alert := c.storeFall(ctx, ward.Fall{TrackID: 7, Alert: fall.Alert{Start: down.Add(-time.Second), Down: down, At: down.Add(time.Second),
		Reasons: []string{"test"}, Strength: 0.8}, Person: ward.Person{TrackID: 7, Box: image.Rect(10, 20, 40, 40)}}, img)
	if alert.FindingId == "" {
		t.Fatal("a fall raised after the stream's context ended was not stored")
	}
	if _, err := ts.store.Get(context.Background(), alert.FindingId); err != nil {
		t.Fatal(err)
	}
}

// TestFallAlertedOnceAmongBadFrames: a frame that cannot be used, right after the frame that
// confirmed a fall, does not raise the alert (or store the finding) a second time.
func TestFallAlertedOnceAmongBadFrames(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-4-bay-3", FrameRate: 18, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	go func() {
		seq := int64(0)
		for i, jpg := range clipJPEGs(t, "video/falls-upfall/A4_S1_T1_Cam1.mp4", 0) {
			at := timestamppb.New(start.Add(time.Duration(i) * time.Second / 18))
			for _, data := range [][]byte{jpg, []byte("not an image")} {
				seq++
				f := &vigilv1.Frame{Sequence: seq, CaptureTime: at, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}
				if stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}) != nil {
					return
				}
			}
		}
		stream.CloseSend()
	}()
	alerts, errors := 0, 0
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetFall() != nil {
			alerts++
		}
		if ev.GetFrameError() != nil {
			errors++
		}
	}
	if alerts != 1 || errors != 138 {
		t.Errorf("%d fall alerts and %d frame errors, want 1 and 138", alerts, errors)
	}
	found, _, err := ts.store.List(context.Background(), review.Query{Filter: review.Filter{Pipeline: review.PipelineFall}})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 {
		t.Errorf("%d fall findings stored, want 1", len(found))
	}
}

// TestOnTheFloorWhenTheStreamStarts streams the first 12 s of a real person lying from the
// first frame (UP-Fall A11 Cam2, on a mattress on the floor), never seen standing or coming
// down: with no zone, one "person on the floor" alert and finding; with the mattress drawn as a
// bed zone, none.
func TestOnTheFloorWhenTheStreamStarts(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	frames := clipJPEGs(t, "video/falls-upfall/A11_S1_T1_Cam2.mp4", 12*18)
	mattress := &vigilv1.Zone{Name: "mattress", Kind: vigilv1.ZoneKind_ZONE_KIND_BED,
		Polygon: []*vigilv1.Point{{X: 240, Y: 275}, {X: 400, Y: 280}, {X: 410, Y: 480}, {X: 145, Y: 480}}}
	stream := func(camera string, zones ...*vigilv1.Zone) []*vigilv1.FallAlert {
		alerts, err := streamFrames(t, ts, camera, 18, frames, zones...)
		if err != nil {
			t.Fatal(err)
		}
		return alerts
	}
	alerts := stream("ward-4-floor")
	if len(alerts) != 1 || alerts[0].Kind != vigilv1.FallKind_FALL_KIND_ON_FLOOR {
		t.Fatalf("a person lying from the first frame, no zones: alerts %v, want one on the floor", alerts)
	}
	f, err := ts.store.Get(context.Background(), alerts[0].FindingId)
	if err != nil {
		t.Fatalf("the alert's finding %s: %v", alerts[0].FindingId, err)
	}
	if f.Pipeline != review.PipelineFall || f.Label != ward.FloorLabel || f.Overlay == nil {
		t.Errorf("stored %s finding %q with overlay %v, want a fall-pipeline %q with its keyframe", f.Pipeline, f.Label, f.Overlay != nil, ward.FloorLabel)
	}
	if len(f.Evidence) == 0 || !strings.Contains(f.Evidence[0], "on the floor") {
		t.Errorf("evidence %q, want the floor rule first", f.Evidence)
	}
	if alerts := stream("ward-4-mattress", mattress); len(alerts) != 0 {
		t.Errorf("the same person on a bed zone: %d alerts, want none", len(alerts))
	}
}

// TestWardFallsBackWhenTheDetectorIsMissing: on a machine whose mirror does not hold
// FastestDet, a stream runs MoveNet MultiPose instead, says so in the log, and still alerts the
// fall in UP-Fall A3 (Cam1); a server configured with a detector and no fallback refuses the
// stream with FailedPrecondition naming the detector.
func TestWardFallsBackWhenTheDetectorIsMissing(t *testing.T) {
	engine, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v (run `make deps`)", err)
	}
	t.Cleanup(func() { engine.Close() })
	var entries []models.Entry
	for _, e := range models.Builtin() {
		if e.Name == DefaultDetector {
			m := *e.Manifest
			m.Weights.SHA256 = strings.Repeat("0", 64) // in no cache and no mirror
			e.Manifest = &m
		}
		entries = append(entries, e)
	}
	resolver := testenv.Resolver()
	resolver.CacheDir = t.TempDir()
	registry := inference.LoadRegistry(context.Background(), engine, nil, entries, resolver)
	if _, err := registry.Session(DefaultDetector); !errors.Is(err, inference.ErrModelNotReady) {
		t.Fatalf("%s with a sha256 nobody has: %v, want not ready", DefaultDetector, err)
	}
	frames := clipJPEGs(t, "video/falls-upfall/A3_S1_T1_Cam1.mp4", 140)
	run := func(ward WardOptions) ([]*vigilv1.FallAlert, *testServer, error) {
		ts := startServer(t, nil, func(o *Options) { o.Registry = registry; o.Ward = ward })
		alerts, err := streamFrames(t, ts, "ward-2-fallback", 18, frames)
		return alerts, ts, err
	}
	alerts, ts, err := run(WardOptions{})
	if err != nil {
		t.Fatalf("the stream with the fallback detector: %v", err)
	}
	if len(alerts) != 1 || alerts[0].Kind != vigilv1.FallKind_FALL_KIND_SEEN {
		t.Errorf("UP-Fall A3 with the fallback detector: alerts %v, want one seen fall", alerts)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "fallback detector") || !strings.Contains(logs, DefaultFallbackDetector) {
		t.Errorf("the log does not say the fallback ran: %s", logs)
	}
	_, _, err = run(WardOptions{DetectorModel: DefaultDetector})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), DefaultDetector) {
		t.Errorf("a detector set with no fallback, missing: got %v, want FailedPrecondition naming %s", err, DefaultDetector)
	}
}

// streamFrames sends JPEG frames down one every-frame Ward stream at fps, stamped from a fixed
// start, and returns the fall alerts and how the stream ended (nil when it ended cleanly).
func streamFrames(t *testing.T, ts *testServer, camera string, fps int32, frames [][]byte, zones ...*vigilv1.Zone) ([]*vigilv1.FallAlert, error) {
	t.Helper()
	s, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: camera, FrameRate: float64(fps), Zones: zones, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	go func() {
		for i, jpg := range frames {
			f := &vigilv1.Frame{Sequence: int64(i + 1), CaptureTime: timestamppb.New(start.Add(time.Duration(i) * time.Second / time.Duration(fps))),
				Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: jpg}
			if s.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}) != nil {
				return
			}
		}
		s.CloseSend()
	}()
	var alerts []*vigilv1.FallAlert
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			return alerts, nil
		}
		if err != nil {
			return alerts, err
		}
		if a := ev.GetFall(); a != nil {
			alerts = append(alerts, a)
		}
	}
}

// TestCaptureTimesOutsideTheWindow: a frame stamped after the year 9999, a day and more ahead
// of the server's clock, or earlier than the stream's previous frame gets a frame error saying
// which (29.7: the first gave gait summaries that could not be stored, the last was processed
// without a word); the frames around them are used.
func TestCaptureTimesOutsideTheWindow(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-4-bay-5", FrameRate: 18, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	jpg := clipJPEGs(t, "video/falls-upfall/A4_S1_T1_Cam1.mp4", 0)[0]
	start := time.Now().Add(-time.Hour)
	times := []*timestamppb.Timestamp{
		timestamppb.New(start),
		{Seconds: 253402300800},                     // 10000-01-01: not a valid time
		timestamppb.New(start.Add(48 * time.Hour)),  // ahead of the clock
		timestamppb.New(start.Add(-time.Second)),    // before the first frame
		timestamppb.New(start.Add(-48 * time.Hour)), // far behind the clock
		timestamppb.New(start.Add(time.Second)),
	}
	want := []string{"", "not a valid time", "ahead of the server's clock", "runs backwards", "behind the server's clock", ""}
	for i, at := range times {
		f := &vigilv1.Frame{Sequence: int64(i + 1), CaptureTime: at, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: jpg}
		if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	got := map[int64]string{}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if fe := ev.GetFrameError(); fe != nil {
			if fe.Code != codes.InvalidArgument.String() {
				t.Errorf("frame %d: code %s, want InvalidArgument", fe.Sequence, fe.Code)
			}
			got[fe.Sequence] = fe.Message
		}
		if r := ev.GetFrameResult(); r != nil {
			got[r.Sequence] = ""
		}
	}
	for i, w := range want {
		msg, ok := got[int64(i+1)]
		if !ok || (w == "") != (msg == "") || !strings.Contains(msg, w) {
			t.Errorf("frame %d: answered %v, %q; want %q", i+1, ok, msg, w)
		}
	}
}

// TestDecodedFramesShareOneMemoryBudget: a frame whose decoded pixels would take the streams'
// shared budget over its limit gets a frame error (ResourceExhausted naming
// --max-frame-memory) and the stream goes on (29.3: each 4096 x 4096 stream took 155 MB, with
// no bound across streams); when the stream ends its buffers go back to the budget.
func TestDecodedFramesShareOneMemoryBudget(t *testing.T) {
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Ward.MaxFrameMemory = 8 << 20 })
	stream, err := vigilv1.NewWardClient(ts.conn).StreamCamera(ts.as(auth.RoleWardBridge))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: "ward-4-bay-6", FrameRate: 18, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}})
	jpeg := func(w, h int) []byte {
		data, err := vision.EncodeJPEG(vision.Frame{Width: w, Height: h, BGR: make([]byte, w*h*3)}, 80)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	small, large := jpeg(640, 480), jpeg(2048, 2048) // 0.9 MiB and 12 MiB of pixels
	for i, data := range [][]byte{small, large, small} {
		f := &vigilv1.Frame{Sequence: int64(i + 1), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}
		if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	got := map[int64]string{}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if fe := ev.GetFrameError(); fe != nil {
			got[fe.Sequence] = fe.Code + ": " + fe.Message
		}
		if r := ev.GetFrameResult(); r != nil {
			got[r.Sequence] = "result"
		}
	}
	if got[1] != "result" || got[3] != "result" {
		t.Errorf("the 640 x 480 frames: %q, %q; want results", got[1], got[3])
	}
	if !strings.HasPrefix(got[2], "ResourceExhausted") || !strings.Contains(got[2], "--max-frame-memory") {
		t.Errorf("the 2048 x 2048 frame over an 8 MiB budget: %q, want ResourceExhausted naming --max-frame-memory", got[2])
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.srv.ward.memory.inUse() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of the budget still held after the stream ended", ts.srv.ward.memory.inUse())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
