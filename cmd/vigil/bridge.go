package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/vision"
)

// bridgeEvent is one line of `vigil bridge --json` (docs/cli.md): a type and its fields.
type bridgeEvent struct {
	Type     string         `json:"type"` // frame, gait, fall, error, dropped, stats, gap
	Sequence int64          `json:"sequence,omitempty"`
	Tracks   []bridgeTrack  `json:"tracks,omitempty"`
	Gait     *bridgeGait    `json:"gait,omitempty"`
	Error    *errorJSON     `json:"error,omitempty"`
	Dropped  *bridgeDropped `json:"dropped,omitempty"`
	Stats    *bridgeStats   `json:"stats,omitempty"`
	Fall     *bridgeFall    `json:"fall,omitempty"`
	Gap      *bridgeGap     `json:"gap,omitempty"`
}

// bridgeGap is a time a live camera gave no frames: it stalled or dropped, and the bridge
// reopened it.
type bridgeGap struct {
	Seconds       float64 `json:"seconds"`
	FramesMissed  int64   `json:"frames_missed"`
	AfterSequence int64   `json:"after_sequence"`
	Reopens       int     `json:"reopens"`
}

type bridgeFall struct {
	TrackID        int64    `json:"track_id"`
	DownTime       string   `json:"down_time"`
	FirstSequence  int64    `json:"first_sequence"`
	LastSequence   int64    `json:"last_sequence"`
	HeuristicScore float32  `json:"heuristic_score"`
	Reasons        []string `json:"reasons"`
	FindingID      string   `json:"finding_id,omitempty"`
}

type bridgeRisk struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Elevated bool    `json:"elevated"`
	Reason   string  `json:"reason"`
}

type bridgeTrack struct {
	ID    int64   `json:"id"`
	Box   boxJSON `json:"box"`
	Score float32 `json:"score"`
}

type bridgeGait struct {
	TrackID        int64        `json:"track_id"`
	Steps          int32        `json:"steps"`
	Cadence        float64      `json:"cadence_steps_per_min"`
	StepTime       float64      `json:"step_time_s"`
	StepTimeCV     float64      `json:"step_time_cv"`
	Asymmetry      float64      `json:"asymmetry"`
	Speed          float64      `json:"speed_body_heights_per_s"`
	SpeedM         float64      `json:"speed_m_per_s,omitempty"`
	Sway           float64      `json:"sway_body_heights"`
	HeuristicScore float32      `json:"heuristic_score"`
	Risk           []bridgeRisk `json:"risk,omitempty"`
	// Final marks a track's last summary, stored for review as FindingID.
	Final     bool   `json:"final,omitempty"`
	FindingID string `json:"finding_id,omitempty"`
}

type bridgeDropped struct {
	Count int64 `json:"count"`
	First int64 `json:"first_sequence"`
	Last  int64 `json:"last_sequence"`
}

type bridgeStats struct {
	Received  int64   `json:"frames_received"`
	Processed int64   `json:"frames_processed"`
	Dropped   int64   `json:"frames_dropped"`
	FPS       float64 `json:"frames_per_second"`
	Active    int32   `json:"active_tracks"`
	Started   int64   `json:"tracks_started"`
	Switches  int64   `json:"id_switches"`
}

// runBridge streams a video source to Ward and prints the events. It reconnects with backoff
// when the server goes away, and goes on with the next frame.
func runBridge(g *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	source := fs.String("source", "", "a video file, an rtsp:// URL or a /dev/videoN device")
	camera := fs.String("camera", "", "the camera's ID")
	realtime := fs.Bool("realtime", false, "pace a file at its frame rate and let the server drop stale frames")
	asJSON := fs.Bool("json", false, "print JSON lines, one event per line with a type field (docs/cli.md)")
	maxFrames := fs.Int("max-frames", 0, "stop after this many frames (0: the whole source)")
	quality := fs.Int("jpeg-quality", 85, "JPEG quality of the frames sent")
	rate := fs.Float64("fps", 0, "the rate a file was captured at, when its header says otherwise (0: the header's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *source == "" || *camera == "" {
		return usageError{"usage: vigil bridge --source FILE|rtsp://…|/dev/videoN --camera ID [--realtime] [--json]"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	video, err := openSource(*source, *rate, stderr)
	if err != nil {
		return err
	}
	defer video.Close()
	fps := video.fps
	// A file's frames are stamped with their place in it, so that gait and falls are timed
	// as filmed however fast the file is sent; a camera's with the time they arrive.
	live := video.live

	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := vigilv1.NewWardClient(conn)
	print := eventPrinter(stdout, *asJSON)
	video.onGap = func(g bridgeGap) { print(nil, &g) }

	policy := vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME
	if *realtime {
		policy = vigilv1.FramePolicy_FRAME_POLICY_REALTIME
	}
	start := time.Now()
	var seq, sent int64 // sequence numbers count a camera's missed frames too
	ended := false
	backoff := 500 * time.Millisecond
	for !ended {
		stream, err := client.StreamCamera(ctx)
		if err == nil {
			err = stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
				CameraId: *camera, FrameRate: fps, Policy: policy}}})
		}
		if err != nil {
			if err = waitToReconnect(ctx, err, &backoff, stderr); err != nil {
				return err
			}
			continue
		}
		if p, ok := peer.FromContext(stream.Context()); ok {
			// With several replicas, which one this camera's stream lives on now.
			fmt.Fprintf(stderr, "vigil bridge: streaming camera %s to %s\n", *camera, p.Addr)
		}
		// The receiver prints events until the server ends the stream.
		var wg sync.WaitGroup
		recvErr := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ev, err := stream.Recv()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						recvErr <- err
					}
					return
				}
				print(ev, nil)
			}
		}()
		var sendErr error
		for {
			if *maxFrames > 0 && sent >= int64(*maxFrames) {
				ended = true
				break
			}
			f, missed, err := video.Read(ctx)
			if errors.Is(err, io.EOF) {
				ended = true
				break
			}
			if err != nil {
				return err
			}
			seq += 1 + missed // a camera's gap shows in the sequence numbers
			due := start.Add(time.Duration(float64(seq-1) / fps * float64(time.Second)))
			if *realtime && !live {
				time.Sleep(time.Until(due))
			}
			captured := timestamppb.Now()
			if !live {
				captured = timestamppb.New(due)
			}
			data, err := vision.EncodeJPEG(f, *quality)
			if err != nil {
				return err
			}
			sendErr = stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{
				Sequence: seq, CaptureTime: captured, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}}})
			if sendErr != nil {
				break
			}
			sent++
			backoff = 500 * time.Millisecond
		}
		if ended {
			// Everything is sent: wait for the server's last events.
			stream.CloseSend()
			wg.Wait()
			select {
			case err := <-recvErr:
				return err
			default:
			}
			break
		}
		// The stream broke mid-way. Send reports only io.EOF; the receiver has the reason.
		wg.Wait()
		select {
		case err := <-recvErr:
			sendErr = err
		default:
		}
		if err := waitToReconnect(ctx, sendErr, &backoff, stderr); err != nil {
			return err
		}
	}
	return nil
}

// waitToReconnect sleeps with exponential backoff when the error is one a reconnect can cure,
// and returns it otherwise.
func waitToReconnect(ctx context.Context, err error, backoff *time.Duration, stderr io.Writer) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.Aborted:
	default:
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(stderr, "vigil bridge: %s: reconnecting in %s\n", status.Code(err), *backoff)
	select {
	case <-time.After(*backoff):
	case <-ctx.Done():
		return ctx.Err()
	}
	*backoff = min(*backoff*2, 10*time.Second)
	return nil
}

// eventPrinter prints the server's events and the bridge's own (a camera's gaps).
func eventPrinter(w io.Writer, asJSON bool) func(*vigilv1.WardEvent, *bridgeGap) {
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	return func(ev *vigilv1.WardEvent, gap *bridgeGap) {
		mu.Lock()
		defer mu.Unlock()
		out := bridgeEvent{}
		switch {
		case gap != nil:
			out.Type, out.Gap = "gap", gap
		case ev.GetFrameResult() != nil:
			fr := ev.GetFrameResult()
			out.Type, out.Sequence = "frame", fr.Sequence
			for _, t := range fr.Tracks {
				out.Tracks = append(out.Tracks, bridgeTrack{ID: t.TrackId, Box: *boxOf(t.Box), Score: t.Score})
			}
		case ev.GetGait() != nil:
			g := ev.GetGait()
			out.Type = "gait"
			out.Gait = &bridgeGait{TrackID: g.TrackId, Steps: g.Steps, Cadence: g.CadenceStepsPerMin, StepTime: g.StepTimeMeanS,
				StepTimeCV: g.StepTimeCv, Asymmetry: g.Asymmetry, Speed: g.SpeedBodyHeightsPerS, SpeedM: g.SpeedMPerS, Sway: g.SwayBodyHeights,
				HeuristicScore: g.HeuristicScore, Final: g.Final, FindingID: g.FindingId}
			for _, r := range g.Risk {
				out.Gait.Risk = append(out.Gait.Risk, bridgeRisk{r.Name, r.Value, r.Unit, r.Elevated, r.Reason})
			}
		case ev.GetFall() != nil:
			f := ev.GetFall()
			out.Type = "fall"
			out.Fall = &bridgeFall{TrackID: f.TrackId, DownTime: f.DownTime.AsTime().Format(time.RFC3339Nano), FirstSequence: f.FirstSequence,
				LastSequence: f.LastSequence, HeuristicScore: f.HeuristicScore, Reasons: f.Reasons, FindingID: f.FindingId}
		case ev.GetFrameError() != nil:
			e := ev.GetFrameError()
			out.Type, out.Sequence, out.Error = "error", e.Sequence, &errorJSON{Code: e.Code, Message: e.Message}
		case ev.GetDropped() != nil:
			d := ev.GetDropped()
			out.Type, out.Dropped = "dropped", &bridgeDropped{d.Count, d.FirstSequence, d.LastSequence}
		case ev.GetStats() != nil:
			s := ev.GetStats()
			out.Type, out.Stats = "stats", &bridgeStats{s.FramesReceived, s.FramesProcessed, s.FramesDropped, s.FramesPerSecond,
				s.ActiveTracks, s.TracksStarted, s.IdSwitches}
		default:
			return
		}
		if asJSON {
			enc.Encode(out)
			return
		}
		switch out.Type {
		case "frame":
			ids := make([]string, len(out.Tracks))
			for i, t := range out.Tracks {
				ids[i] = fmt.Sprint(t.ID)
			}
			fmt.Fprintf(w, "frame %d: %d people [%s]\n", out.Sequence, len(out.Tracks), strings.Join(ids, " "))
		case "gait":
			g := out.Gait
			final := ""
			if g.Final {
				final = " (final, finding " + g.FindingID + ")"
			}
			fmt.Fprintf(w, "gait track %d: %d steps, %.0f steps/min, step time %.2f s (CV %.2f), asymmetry %.2f, %.2f body heights/s, sway %.3f%s\n",
				g.TrackID, g.Steps, g.Cadence, g.StepTime, g.StepTimeCV, g.Asymmetry, g.Speed, g.Sway, final)
			for _, r := range g.Risk {
				if r.Elevated {
					fmt.Fprintf(w, "  fall risk: %s\n", r.Reason)
				}
			}
		case "fall":
			f := out.Fall
			fmt.Fprintf(w, "FALL track %d, frames %d-%d, heuristic score %.2f, finding %s: %s\n", f.TrackID, f.FirstSequence, f.LastSequence,
				f.HeuristicScore, f.FindingID, strings.Join(f.Reasons, "; "))
		case "error":
			fmt.Fprintf(w, "frame %d: %s: %s\n", out.Sequence, out.Error.Code, out.Error.Message)
		case "dropped":
			fmt.Fprintf(w, "dropped %d stale frames (%d-%d)\n", out.Dropped.Count, out.Dropped.First, out.Dropped.Last)
		case "gap":
			g := out.Gap
			fmt.Fprintf(w, "camera gap: %.1f s without frames (about %d missed) after frame %d; reopened %d time(s)\n",
				g.Seconds, g.FramesMissed, g.AfterSequence, g.Reopens)
		case "stats":
			s := out.Stats
			fmt.Fprintf(w, "stats: %d received, %d processed, %d dropped, %.1f frames/s; %d tracks now, %d so far, %d likely ID switches\n",
				s.Received, s.Processed, s.Dropped, s.FPS, s.Active, s.Started, s.Switches)
		}
	}
}

// cameraSource is the bridge's video source. A file ends at its end; a live camera (rtsp://,
// /dev/video) that stalls or drops is reopened with backoff, and the frames it missed in
// the meantime are counted.
type cameraSource struct {
	url     string
	live    bool
	fps     float64
	video   *vision.Video
	stderr  io.Writer
	last    time.Time // when the last frame was read
	lastSeq int64     // how many frames were read, missed ones counted
	onGap   func(bridgeGap)
}

// rtspOptions make FFmpeg (OpenCV's backend) take RTSP over TCP and give up on a read after
// 5 s without data, instead of its default of 30 s: a stalled camera is noticed and reopened.
const rtspOptions = "rtsp_transport;tcp|timeout;5000000"

func openSource(url string, rate float64, stderr io.Writer) (*cameraSource, error) {
	s := &cameraSource{url: url, stderr: stderr, live: strings.HasPrefix(url, "rtsp://") || strings.HasPrefix(url, "/dev/")}
	if strings.HasPrefix(url, "rtsp://") && os.Getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS") == "" {
		os.Setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", rtspOptions)
	}
	v, err := vision.OpenVideo(url)
	if err != nil {
		return nil, err
	}
	s.video, s.fps, s.last = v, v.FPS(), time.Now()
	if rate > 0 {
		s.fps = rate
	}
	if s.fps <= 0 || s.fps > 240 {
		s.fps = 10
	}
	return s, nil
}

// Read returns the next frame, and how many frames a live camera missed before it (0 for a
// file). A file's end is io.EOF; a camera's is a gap.
func (s *cameraSource) Read(ctx context.Context) (vision.Frame, int64, error) {
	f, err := s.video.Read()
	if err == nil || !s.live {
		s.last = time.Now()
		s.lastSeq++
		return f, 0, err
	}
	// The camera stopped: reopen it until it answers, with backoff.
	lost, reopens := s.last, 0
	backoff := 500 * time.Millisecond
	for {
		if s.video != nil {
			s.video.Close()
			s.video = nil
		}
		fmt.Fprintf(s.stderr, "vigil bridge: camera %s gave no frame: reopening in %s\n", redactURL(s.url), backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return vision.Frame{}, 0, ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
		reopens++
		v, err := vision.OpenVideo(s.url)
		if err != nil {
			continue
		}
		s.video = v
		if f, err = v.Read(); err == nil {
			break
		}
	}
	gap := time.Since(lost)
	missed := max(int64(gap.Seconds()*s.fps+0.5)-1, 0)
	if s.onGap != nil {
		s.onGap(bridgeGap{Seconds: gap.Seconds(), FramesMissed: missed, AfterSequence: s.lastSeq, Reopens: reopens})
	}
	s.last = time.Now()
	s.lastSeq += 1 + missed
	return f, missed, nil
}

// Close releases the source.
func (s *cameraSource) Close() error {
	if s.video == nil {
		return nil
	}
	return s.video.Close()
}

// redactURL keeps a camera's credentials out of the output.
func redactURL(u string) string {
	if at := strings.Index(u, "@"); at > 0 {
		if scheme := strings.Index(u, "://"); scheme > 0 && scheme < at {
			return u[:scheme+3] + "…@" + u[at+1:]
		}
	}
	return u
}
