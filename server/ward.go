package server

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/panics"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/gait"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/risk"
	"github.com/vigil-health/vigil/pipelines/ward"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

// WardOptions configure the Ward service.
type WardOptions struct {
	DetectorModel string
	// FallbackDetector is the detector the ward runs when DetectorModel is not ready: on a
	// machine whose model mirror does not hold FastestDet (it has no registry source), MoveNet
	// MultiPose, which make deps builds from npm. It sees small people far less well (docs/FALLS.md).
	FallbackDetector string
	PoseModel        string
	// MaxSide bounds a frame's width and height, MaxFrameBytes its encoded size.
	MaxSide, MaxFrameBytes int
	// StatsEvery is how often a stream gets its statistics.
	StatsEvery time.Duration
	// MaxTracks bounds the people one stream follows at once; MaxHistory the frames of gait
	// kept per person. Zero means the pipeline's defaults.
	MaxTracks, MaxHistory int
	// CaptureAhead and CaptureBehind bound a frame's capture time around the server's clock
	// (a camera's clock may run a little ahead; a bridge may send what it buffered through an
	// outage, or a recorded file faster than it was filmed). Zero means the defaults.
	CaptureAhead, CaptureBehind time.Duration
	// MaxFrameMemory bounds the bytes of decoded pixels all streams hold at once: each
	// stream's reused frame buffers and the decoder's copy of the frame being decoded. A
	// frame that would go over it gets a frame error (ResourceExhausted); its stream goes on.
	// Zero means DefaultMaxFrameMemory.
	MaxFrameMemory int64
}

// DefaultMaxFrameMemory: 512 MiB, about 120 streams of 1080p or 3 of 4K frames, at most.
const DefaultMaxFrameMemory = 512 << 20

// frameMemory is the budget of MaxFrameMemory, shared by every stream.
type frameMemory struct {
	mu          sync.Mutex
	limit, used int64
}

// take reserves n bytes, or says there are not that many left.
func (m *frameMemory) take(n int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used+n > m.limit {
		return false
	}
	m.used += n
	return true
}

func (m *frameMemory) give(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used -= n
}

// inUse is the bytes reserved now.
func (m *frameMemory) inUse() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// DefaultCaptureAhead and DefaultCaptureBehind: an hour ahead (a recorded file sent as fast as
// it decodes is stamped ahead by its length), a day behind.
const (
	DefaultCaptureAhead  = time.Hour
	DefaultCaptureBehind = 24 * time.Hour
)

// DefaultDetector is the person detector the ward runs unless configured otherwise, and
// DefaultFallbackDetector the one it runs when DefaultDetector is not ready.
const (
	DefaultDetector         = "fastestdet"
	DefaultFallbackDetector = "movenet-multipose"
)

// DefaultMaxFrameSide and DefaultMaxFrameBytes bound a camera frame: 4K video, raw BGR of
// 1920 x 1080 (6.2 MB) with room to spare.
const (
	DefaultMaxFrameSide  = 4096
	DefaultMaxFrameBytes = 8 << 20
)

func (o WardOptions) withDefaults() WardOptions {
	if o.DetectorModel == "" {
		o.DetectorModel = DefaultDetector
		if o.FallbackDetector == "" {
			o.FallbackDetector = DefaultFallbackDetector
		}
	}
	if o.PoseModel == "" {
		o.PoseModel = "movenet-lightning"
	}
	if o.MaxSide == 0 {
		o.MaxSide = DefaultMaxFrameSide
	}
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if o.MaxFrameMemory == 0 {
		o.MaxFrameMemory = DefaultMaxFrameMemory
	}
	if o.CaptureAhead == 0 {
		o.CaptureAhead = DefaultCaptureAhead
	}
	if o.CaptureBehind == 0 {
		o.CaptureBehind = DefaultCaptureBehind
	}
	if o.StatsEvery == 0 {
		o.StatsEvery = 5 * time.Second
	}
	return o
}

type wardService struct {
	vigilv1.UnimplementedWardServer
	log      *slog.Logger
	registry *inference.Registry
	store    review.Store
	opts     WardOptions
	metrics  *Metrics
	// memory is the budget for decoded frames, shared by every stream.
	memory *frameMemory
	// fallbackOnce logs the first stream that runs the fallback detector.
	fallbackOnce sync.Once
}

var validCameraID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// realtimeQueue is how many frames may wait in a realtime stream: one being received while
// one is processed; older frames are stale and dropped.
const realtimeQueue = 1

// gaitEvery is how many processed frames pass between gait summaries.
const gaitEvery = 25

// everyFrameQueue bounds an every-frame stream's queue; when it is full the receiver waits,
// and gRPC flow control slows the bridge down.
const everyFrameQueue = 8

// StreamCamera runs one camera. Its stages, each on its own goroutine, hand frames on through
// bounded queues: receive (the bridge's messages into a queue that drops stale frames in
// realtime), decode ahead (pixels and the people on them, one frame ahead), then analyse and
// answer on this goroutine, the stream's only sender.
func (s *wardService) StreamCamera(stream vigilv1.Ward_StreamCameraServer) error {
	ctx := stream.Context()
	cfg, err := receiveConfig(stream)
	if err != nil {
		return err
	}
	who, err := actor(ctx)
	if err != nil {
		return err
	}
	pipe, ref, err := s.pipeline(cfg)
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	s.metrics.wardStreams.Inc()
	defer s.metrics.wardStreams.Dec()
	camera := s.metrics.cameraLabel(cfg.CameraId)
	c := &cameraStream{wardService: s, stream: stream, cfg: cfg, who: who, pipe: pipe, ref: ref, started: time.Now(),
		processedFrames: s.metrics.wardFrames.WithLabelValues(camera, "processed"),
		droppedFrames:   s.metrics.wardFrames.WithLabelValues(camera, "dropped"),
		errorFrames:     s.metrics.wardFrames.WithLabelValues(camera, "error")}
	c.lastStats = c.started
	realtime := cfg.Policy != vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME
	queue, recvErr := c.receive(ctx, realtime)
	for d := range s.decodeAhead(ctx, queue, pipe, realtime) {
		err := c.analyse(ctx, d)
		d.release()
		if err != nil {
			return err
		}
	}
	if err := <-recvErr; err != nil {
		return toStatus(ctx, s.log, err)
	}
	return c.finish()
}

// receiveConfig reads and checks a stream's first message, its configuration.
func receiveConfig(stream vigilv1.Ward_StreamCameraServer) (*vigilv1.StreamConfig, error) {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, status.Error(codes.InvalidArgument, "the stream ended before its configuration")
	}
	if err != nil {
		return nil, err
	}
	cfg := first.GetConfig()
	if cfg == nil {
		return nil, status.Error(codes.InvalidArgument, "the first message must be the stream's configuration")
	}
	if !validCameraID.MatchString(cfg.CameraId) {
		return nil, status.Error(codes.InvalidArgument, "camera_id must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
	}
	if err := validCalibration(cfg.GetCalibration()); err != nil {
		return nil, err
	}
	return cfg, nil
}

// cameraStream is one camera's stream while it runs: what it counts, and how it answers.
type cameraStream struct {
	*wardService
	stream  vigilv1.Ward_StreamCameraServer
	cfg     *vigilv1.StreamConfig
	who     string
	pipe    *ward.Pipeline
	ref     review.ModelRef
	started time.Time
	// received and dropped are counted by the receiving goroutine; the range of the frames
	// dropped since the last notice is under dropMu.
	received, dropped         atomic.Int64
	dropMu                    sync.Mutex
	firstDropped, lastDropped int64
	// The rest belongs to the analysing goroutine.
	processed, reportedDrops                    int64
	lastStats                                   time.Time
	processedFrames, droppedFrames, errorFrames prometheus.Counter
}

// receive reads the frames into a bounded queue on a goroutine of its own. In realtime the
// queue holds one frame, and a frame still waiting when the next arrives is stale: it is
// dropped and counted. Every frame, the queue holds a few, and a full queue waits, so that
// gRPC flow control slows the bridge down. The error channel gets one value when receiving
// ends: nil when the bridge closed its side.
func (c *cameraStream) receive(ctx context.Context, realtime bool) (<-chan *vigilv1.Frame, <-chan error) {
	size := everyFrameQueue
	if realtime {
		size = realtimeQueue
	}
	queue := make(chan *vigilv1.Frame, size)
	done := make(chan error, 1)
	go func() {
		defer close(queue)
		done <- panics.Catch("ward frame receiver", func() error { return c.receiveInto(ctx, queue, realtime) })
	}()
	return queue, done
}

// receiveInto reads frames into queue until the bridge closes its side (nil) or the stream
// fails.
func (c *cameraStream) receiveInto(ctx context.Context, queue chan *vigilv1.Frame, realtime bool) error {
	for {
		msg, err := c.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f := msg.GetFrame()
		if f == nil {
			return status.Error(codes.InvalidArgument, "after the configuration, every message must be a frame")
		}
		c.received.Add(1)
		if !realtime {
			select {
			case queue <- f:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		for {
			select {
			case queue <- f:
			default:
				// Full: the waiting frame is stale. Drop it for the new one.
				select {
				case old := <-queue:
					c.drop(old.Sequence)
				default:
				}
				continue
			}
			break
		}
	}
}

func (c *cameraStream) drop(seq int64) {
	c.dropped.Add(1)
	c.dropMu.Lock()
	defer c.dropMu.Unlock()
	if c.firstDropped == 0 {
		c.firstDropped = seq
	}
	c.lastDropped = seq
}

// analyse runs one decoded frame through the rules and answers: a notice of the frames dropped
// before it, its result (or its error), its fall alerts, the gait of the tracks that ended on
// it, every few frames the gait of the people in view, and now and then the statistics.
func (c *cameraStream) analyse(ctx context.Context, d decodedFrame) error {
	if err := c.reportDrops(); err != nil {
		return err
	}
	ev, out, err := c.frame(ctx, c.pipe, d)
	if err != nil {
		return err
	}
	c.processed++
	if ev.GetFrameError() != nil {
		c.errorFrames.Inc()
	} else {
		c.processedFrames.Inc()
		t := out.Timings
		c.metrics.wardStage.WithLabelValues("decode").Observe(d.took.Seconds())
		c.metrics.wardStage.WithLabelValues("detect").Observe(d.detectTook.Seconds())
		c.metrics.wardStage.WithLabelValues("pose").Observe(t.Pose.Seconds())
		c.metrics.wardStage.WithLabelValues("track").Observe(t.Track.Seconds())
		c.metrics.wardStage.WithLabelValues("analyze").Observe(t.Analyze.Seconds())
	}
	// A fall is in the review queue before anyone is told of it: a bridge that goes away
	// right after this frame loses the alert event, not the finding.
	// (A frame that could not be used has no result: no alert or ended track of the frame
	// before is reported twice.)
	fr := ev.GetFrameResult()
	var alerts []*vigilv1.WardEvent
	for _, f := range out.Falls {
		alerts = append(alerts, &vigilv1.WardEvent{Event: &vigilv1.WardEvent_Fall{Fall: c.storeFall(ctx, f, d.img)}})
	}
	if err := c.stream.Send(ev); err != nil {
		return err
	}
	for _, a := range alerts {
		if err := c.stream.Send(a); err != nil {
			return err
		}
	}
	if fr != nil {
		if err := c.gait(ctx, fr, out.Ended); err != nil {
			return err
		}
	}
	if time.Since(c.lastStats) >= c.opts.StatsEvery {
		c.lastStats = time.Now()
		return c.stream.Send(c.stats())
	}
	return nil
}

// gait stores and sends the gait of the tracks that ended on a frame and, every few seconds
// of frames, sends the gait so far of the people in view.
func (c *cameraStream) gait(ctx context.Context, fr *vigilv1.FrameResult, ended []ward.Summary) error {
	for _, sum := range ended {
		if err := c.final(ctx, sum); err != nil {
			return err
		}
	}
	if c.processed%gaitEvery != 0 {
		return nil
	}
	for _, tr := range fr.Tracks {
		g, ok := c.pipe.Gait(tr.TrackId)
		if !ok {
			continue
		}
		if err := c.stream.Send(&vigilv1.WardEvent{Event: &vigilv1.WardEvent_Gait{Gait: gaitEvent(tr.TrackId, g, risk.FromGait(g))}}); err != nil {
			return err
		}
	}
	return nil
}

// reportDrops tells the bridge of the frames dropped since the last notice.
func (c *cameraStream) reportDrops() error {
	n := c.dropped.Load()
	if n == c.reportedDrops {
		return nil
	}
	c.dropMu.Lock()
	ev := &vigilv1.FramesDropped{Count: n - c.reportedDrops, FirstSequence: c.firstDropped, LastSequence: c.lastDropped}
	c.firstDropped = 0
	c.dropMu.Unlock()
	c.droppedFrames.Add(float64(n - c.reportedDrops))
	c.reportedDrops = n
	return c.stream.Send(&vigilv1.WardEvent{Event: &vigilv1.WardEvent_Dropped{Dropped: ev}})
}

// storeTimeout bounds how long storing a finding may take once the stream that raised it has
// gone.
const storeTimeout = 10 * time.Second

// store puts a finding in the review queue, on a context that outlives the stream: a finding
// raised is kept even when the bridge goes away at once. A failure is logged and the stream
// goes on: the bridge still gets the event, without a finding ID.
func (c *cameraStream) store(ctx context.Context, f review.Finding) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	stored, err := c.wardService.store.Add(ctx, c.who, []review.Finding{f})
	if err != nil {
		c.log.Error("ward finding not stored", "camera", c.cfg.CameraId, "pipeline", f.Pipeline, "track", f.Source.TrackID, "err", err)
		return ""
	}
	return stored[0].ID
}

// fallKinds are the alerts' kinds as the bridge gets them.
var fallKinds = map[fall.Kind]vigilv1.FallKind{fall.Seen: vigilv1.FallKind_FALL_KIND_SEEN, fall.OnFloor: vigilv1.FallKind_FALL_KIND_ON_FLOOR}

// storeFall stores a fall's finding, with the frame that confirmed it drawn, and returns the
// alert for the bridge.
func (c *cameraStream) storeFall(ctx context.Context, f ward.Fall, img vision.Frame) *vigilv1.FallAlert {
	id := ""
	if finding, err := ward.FallFinding(c.cfg.CameraId, f, img, c.ref); err != nil {
		c.log.Error("fall keyframe not drawn", "camera", c.cfg.CameraId, "track", f.TrackID, "err", err)
	} else {
		id = c.store(ctx, finding)
	}
	return &vigilv1.FallAlert{TrackId: f.TrackID, DownTime: timestamppb.New(f.Down), FirstSequence: f.FirstSeq, LastSequence: f.LastSeq,
		HeuristicScore: float32(f.Strength), Reasons: f.Reasons, FindingId: id, Kind: fallKinds[f.Kind]}
}

// final stores a track's gait, when it has one, and sends its last summary.
func (c *cameraStream) final(ctx context.Context, sum ward.Summary) error {
	if !sum.Reportable() {
		return nil
	}
	ev := gaitEvent(sum.TrackID, sum.Gait, sum.Risk)
	ev.Final, ev.FindingId = true, c.store(ctx, ward.GaitFinding(c.cfg.CameraId, sum, c.ref))
	return c.stream.Send(&vigilv1.WardEvent{Event: &vigilv1.WardEvent_Gait{Gait: ev}})
}

func (c *cameraStream) stats() *vigilv1.WardEvent {
	return &vigilv1.WardEvent{Event: &vigilv1.WardEvent_Stats{Stats: &vigilv1.StreamStats{FramesReceived: c.received.Load(),
		FramesProcessed: c.processed, FramesDropped: c.dropped.Load(), FramesPerSecond: float64(c.processed) / time.Since(c.started).Seconds(),
		ActiveTracks: int32(c.pipe.ActiveTracks()), TracksStarted: c.pipe.TracksStarted(), IdSwitches: int64(c.pipe.Switches())}}}
}

// finish ends a stream the bridge closed: the drops after the last processed frame are
// counted, the gait of everyone still in view is stored and sent, then the last statistics.
func (c *cameraStream) finish() error {
	if n := c.dropped.Load(); n > c.reportedDrops {
		c.droppedFrames.Add(float64(n - c.reportedDrops))
	}
	for _, sum := range c.pipe.Summaries() {
		if err := c.final(c.stream.Context(), sum); err != nil {
			return err
		}
	}
	return c.stream.Send(c.stats())
}

// validCalibration checks a stream's calibration: a positive scale, or a floor homography of
// nine finite numbers that does not flatten the image.
func validCalibration(c *vigilv1.Calibration) error {
	if c == nil {
		return nil
	}
	if ppm := c.GetPixelsPerMetre(); c.GetFloorHomography() == nil && !(ppm > 0 && ppm < 1e6) {
		return status.Errorf(codes.InvalidArgument, "calibration pixels_per_metre must be positive, got %v", ppm)
	}
	if h := c.GetFloorHomography(); h != nil {
		if len(h.M) != 9 {
			return status.Errorf(codes.InvalidArgument, "calibration floor_homography needs 9 numbers (a row-major 3x3 matrix), got %d", len(h.M))
		}
		for _, v := range h.M {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return status.Error(codes.InvalidArgument, "calibration floor_homography has a number that is not finite")
			}
		}
		m := h.M
		det := m[0]*(m[4]*m[8]-m[5]*m[7]) - m[1]*(m[3]*m[8]-m[5]*m[6]) + m[2]*(m[3]*m[7]-m[4]*m[6])
		if math.Abs(det) < 1e-15 {
			return status.Error(codes.InvalidArgument, "calibration floor_homography is singular: it maps the image onto a line")
		}
	}
	return nil
}

// gaitEvent is a gait summary as the bridge gets it.
func gaitEvent(trackID int64, g gait.Summary, ins []risk.Indicator) *vigilv1.GaitSummary {
	ev := &vigilv1.GaitSummary{TrackId: trackID, Steps: int32(g.Steps), CadenceStepsPerMin: g.Cadence,
		StepTimeMeanS: g.StepTimeMean, StepTimeCv: g.StepTimeCV, Asymmetry: g.Asymmetry,
		SpeedBodyHeightsPerS: g.SpeedBodyHeights, SpeedMPerS: g.SpeedMetres, SwayBodyHeights: g.Sway, HeuristicScore: float32(g.Heuristic)}
	for _, in := range ins {
		ev.Risk = append(ev.Risk, &vigilv1.RiskIndicator{Name: in.Name, Value: in.Value, Unit: in.Unit, Elevated: in.Elevated, Reason: in.Reason})
	}
	return ev
}

// pipeline builds a stream's pipeline, and names the model its findings rest on: the
// keypoint model, whose skeletons every fall rule and gait figure is measured on.
func (s *wardService) pipeline(cfg *vigilv1.StreamConfig) (*ward.Pipeline, review.ModelRef, error) {
	fail := func(err error) (*ward.Pipeline, review.ModelRef, error) { return nil, review.ModelRef{}, err }
	detSession, err := s.registry.Session(s.opts.DetectorModel)
	if err != nil && s.opts.FallbackDetector != "" && errors.Is(err, inference.ErrModelNotReady) {
		if fb, fbErr := s.registry.Session(s.opts.FallbackDetector); fbErr == nil {
			s.fallbackOnce.Do(func() {
				s.log.Warn("ward: the detector is not ready, running the fallback detector", "detector", s.opts.DetectorModel, "fallback", s.opts.FallbackDetector, "reason", err.Error())
			})
			detSession, err = fb, nil
		}
	}
	if err != nil {
		return fail(err)
	}
	poseSession, err := s.registry.Session(s.opts.PoseModel)
	if err != nil {
		return fail(err)
	}
	det, err := detect.New(detSession, "person")
	if err != nil {
		return fail(err)
	}
	est, err := pose.New(poseSession)
	if err != nil {
		return fail(err)
	}
	man := poseSession.Manifest()
	ref := review.ModelRef{Name: man.Name, Version: man.Version, SHA256: man.Weights.SHA256}
	var beds, chairs [][]image.Point
	for _, z := range cfg.Zones {
		var poly []image.Point
		for _, pt := range z.Polygon {
			poly = append(poly, image.Pt(int(pt.X), int(pt.Y)))
		}
		switch z.Kind {
		case vigilv1.ZoneKind_ZONE_KIND_BED:
			beds = append(beds, poly)
		case vigilv1.ZoneKind_ZONE_KIND_CHAIR:
			chairs = append(chairs, poly)
		}
	}
	wc := ward.Config{PixelsPerMetre: cfg.GetCalibration().GetPixelsPerMetre(), Beds: beds, Chairs: chairs, FrameRate: cfg.FrameRate,
		MaxTracks: s.opts.MaxTracks, MaxHistory: s.opts.MaxHistory}
	if h := cfg.GetCalibration().GetFloorHomography(); h != nil {
		wc.Floor = new(ward.Homography)
		copy(wc.Floor[:], h.M)
	}
	return ward.New(det, est, wc), ref, nil
}

// decodedFrame is a frame as the decode stage hands it on: its pixels and the people the
// detector found on them, or the error event that replaces it.
type decodedFrame struct {
	f          *vigilv1.Frame
	img        vision.Frame
	err        *vigilv1.WardEvent
	dets       []detect.Detection
	detectErr  error
	took       time.Duration // decoding
	detectTook time.Duration
	release    func() // gives the buffer back for another frame
}

// frameBuffer is the memory a decoded frame lives in: reused, frame after frame.
type frameBuffer struct {
	pixels   vision.Frame
	dets     []detect.Detection
	reserved int64 // bytes of the frame-memory budget its pixels hold
}

// decodeAhead decodes the queued frames and detects their people on a goroutine of its own,
// into a few reused buffers. In realtime the handoff is unbuffered, so at most one decoded
// frame waits.
func (s *wardService) decodeAhead(ctx context.Context, queue <-chan *vigilv1.Frame, pipe *ward.Pipeline, realtime bool) <-chan decodedFrame {
	const buffers = 3 // one being decoded, one waiting, one in the models
	free := make(chan *frameBuffer, buffers)
	all := make([]*frameBuffer, buffers)
	for i := range all {
		all[i] = new(frameBuffer)
		free <- all[i]
	}
	size := 1
	if realtime {
		size = 0
	}
	out := make(chan decodedFrame, size)
	go func() {
		defer close(out)
		defer func() { // the stream is over: its buffers go back to the budget
			for _, b := range all {
				s.memory.give(b.reserved)
			}
		}()
		backgroundThread()
		var last time.Time // the capture time of the stream's last frame used
		for f := range queue {
			var buf *frameBuffer
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			d := decodedFrame{f: f, release: func() { free <- buf }}
			// A frame with an impossible capture time is not decoded: its error event goes on.
			if d.err = s.checkCapture(f, &last); d.err == nil {
				if err := panics.Catch("ward frame decoder", func() error { s.decodeAndDetect(ctx, pipe, buf, &d); return nil }); err != nil {
					d.img, d.err, d.dets, d.detectErr = vision.Frame{}, nil, nil, err // ends the stream with Internal
				}
			}
			select {
			case out <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// checkCapture refuses a frame whose capture time is not a time, is outside the window around
// the server's clock, or runs backwards from the stream's last frame: gait and the fall rules
// measure time between frames, and a finding dated after year 9999 cannot be stored. It
// returns the frame's error event, or nil and moves last on.
func (s *wardService) checkCapture(f *vigilv1.Frame, last *time.Time) *vigilv1.WardEvent {
	if f.CaptureTime == nil {
		return nil // stamped on arrival
	}
	refuse := func(format string, args ...any) *vigilv1.WardEvent {
		return &vigilv1.WardEvent{Event: &vigilv1.WardEvent_FrameError{FrameError: &vigilv1.FrameError{Sequence: f.Sequence,
			Code: codes.InvalidArgument.String(), Message: "the frame is not used: its capture time " + fmt.Sprintf(format, args...)}}}
	}
	if err := f.CaptureTime.CheckValid(); err != nil {
		return refuse("is not a valid time (years 0001 to 9999, nanoseconds under a second)")
	}
	at, now := f.CaptureTime.AsTime(), time.Now()
	switch {
	case at.After(now.Add(s.opts.CaptureAhead)):
		return refuse("is %s ahead of the server's clock, more than %s: check the camera's or the bridge's clock", at.Sub(now).Round(time.Second), s.opts.CaptureAhead)
	case at.Before(now.Add(-s.opts.CaptureBehind)):
		return refuse("is %s behind the server's clock, more than %s", now.Sub(at).Round(time.Second), s.opts.CaptureBehind)
	case at.Before(*last):
		return refuse("runs backwards, %s before the previous frame's", last.Sub(at))
	}
	*last = at
	return nil
}

// decodeAndDetect fills d with the frame's pixels (or its error event) and the people detected.
func (s *wardService) decodeAndDetect(ctx context.Context, pipe *ward.Pipeline, buf *frameBuffer, d *decodedFrame) {
	start := time.Now()
	d.img, d.err = s.decode(d.f, buf)
	d.took = time.Since(start)
	if d.err == nil {
		start = time.Now()
		dets, err := pipe.Detect(ctx, d.img)
		// The detector's slice is reused by its next call: the frame keeps a copy.
		buf.dets = append(buf.dets[:0], dets...)
		d.dets, d.detectErr, d.detectTook = buf.dets, err, time.Since(start)
	}
}

// decode turns a frame's bytes into pixels (into pixels when it is encoded), or into the
// error event that replaces its result.
func (s *wardService) decode(f *vigilv1.Frame, buf *frameBuffer) (vision.Frame, *vigilv1.WardEvent) {
	pixels := &buf.pixels
	frameError := func(msg string) *vigilv1.WardEvent {
		return &vigilv1.WardEvent{Event: &vigilv1.WardEvent_FrameError{FrameError: &vigilv1.FrameError{Sequence: f.Sequence, Code: codes.InvalidArgument.String(), Message: msg}}}
	}
	if len(f.Data) > s.opts.MaxFrameBytes {
		return vision.Frame{}, frameError(fmt.Sprintf("a frame of %d bytes is over the limit of %d (vigild --max-frame-bytes)", len(f.Data), s.opts.MaxFrameBytes))
	}
	switch f.Encoding {
	case vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, vigilv1.FrameEncoding_FRAME_ENCODING_PNG:
		w, h, err := vision.CheckSize(f.Data, s.opts.MaxSide)
		if errors.Is(err, vision.ErrTooLarge) {
			return vision.Frame{}, frameError(err.Error() + " (vigild --max-frame-side)")
		} else if err != nil {
			return vision.Frame{}, frameError(err.Error())
		}
		// The decoder's copy lives until the pixels are in the buffer; the buffer keeps what
		// it grows by until the stream ends.
		need := int64(w) * int64(h) * 3
		grow := max(0, need-int64(cap(pixels.BGR)))
		if !s.memory.take(need + grow) {
			return vision.Frame{}, &vigilv1.WardEvent{Event: &vigilv1.WardEvent_FrameError{FrameError: &vigilv1.FrameError{Sequence: f.Sequence,
				Code: codes.ResourceExhausted.String(), Message: fmt.Sprintf("decoding this %d x %d frame would take the server's decoded frames, across all streams, over %d MiB (vigild --max-frame-memory): the frame is not used", w, h, s.opts.MaxFrameMemory>>20)}}}
		}
		defer s.memory.give(need)
		buf.reserved += grow
		if err := vision.DecodeInto(pixels, f.Data); err != nil {
			return vision.Frame{}, frameError(err.Error())
		}
		return *pixels, nil
	case vigilv1.FrameEncoding_FRAME_ENCODING_BGR:
		w, h := int(f.Width), int(f.Height)
		if w <= 0 || h <= 0 || w > s.opts.MaxSide || h > s.opts.MaxSide {
			return vision.Frame{}, frameError(fmt.Sprintf("a raw frame of %d x %d is not within 1..%d (vigild --max-frame-side)", w, h, s.opts.MaxSide))
		}
		if len(f.Data) != w*h*3 {
			return vision.Frame{}, frameError(fmt.Sprintf("a raw %d x %d BGR frame needs %d bytes, got %d", w, h, w*h*3, len(f.Data)))
		}
		return vision.Frame{Width: w, Height: h, BGR: f.Data}, nil
	}
	return vision.Frame{}, frameError("frame encoding must be JPEG, PNG or BGR")
}

// frame runs a decoded frame through the pipeline and gives its result event. A frame that
// cannot be used becomes a FrameError event and the stream goes on; only a failure of the
// service itself ends the stream.
func (s *wardService) frame(ctx context.Context, pipe *ward.Pipeline, d decodedFrame) (*vigilv1.WardEvent, ward.Result, error) {
	if d.err != nil {
		return d.err, ward.Result{}, nil
	}
	f, img := d.f, d.img
	frameError := func(code codes.Code, msg string) *vigilv1.WardEvent {
		return &vigilv1.WardEvent{Event: &vigilv1.WardEvent_FrameError{FrameError: &vigilv1.FrameError{Sequence: f.Sequence, Code: code.String(), Message: msg}}}
	}
	at := time.Now()
	if f.CaptureTime != nil {
		at = f.CaptureTime.AsTime()
	}
	err := d.detectErr
	var out ward.Result
	if err == nil {
		out, err = pipe.ProcessDetected(ctx, img, d.dets, at, f.Sequence)
	}
	if err != nil {
		if errors.Is(err, inference.ErrOverloaded) || errors.Is(err, inference.ErrBadInput) || errors.Is(err, vision.ErrDecode) {
			return frameError(status.Code(toStatus(ctx, s.log, err)), err.Error()), ward.Result{}, nil
		}
		return nil, ward.Result{}, toStatus(ctx, s.log, err)
	}
	res := &vigilv1.FrameResult{Sequence: f.Sequence, CaptureTime: timestamppb.New(at)}
	for _, p := range out.People {
		tr := &vigilv1.Track{TrackId: p.TrackID, Box: rectToProto(p.Box), Score: float32(p.Score)}
		for k, kp := range p.Skeleton {
			tr.Keypoints = append(tr.Keypoints, &vigilv1.Keypoint{Name: pose.Names[k], Position: &vigilv1.Point{X: float32(kp.X), Y: float32(kp.Y)}, Score: float32(kp.Score)})
		}
		res.Tracks = append(res.Tracks, tr)
	}
	return &vigilv1.WardEvent{Event: &vigilv1.WardEvent_FrameResult{FrameResult: res}}, out, nil
}

func rectToProto(r image.Rectangle) *vigilv1.Box {
	return &vigilv1.Box{X: float32(r.Min.X), Y: float32(r.Min.Y), Width: float32(r.Dx()), Height: float32(r.Dy())}
}
