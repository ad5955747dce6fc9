package bench

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/pipelines/ward"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/vision"
)

// clipFPS is the walkers clip's true rate (PETS 2009 S2.L1, filmed at about 7 frames/s).
const clipFPS = 7

// measureWard times the first frames of the walkers clip three ways, interleaved: the models
// alone (the detector on each frame, the pose model once per person the pipeline found, spread
// over the pose model's workers as the pipeline spreads them), the ward pipeline in process on
// decoded frames, and the whole Ward stream over gRPC from the JPEGs a bridge sends.
func measureWard(ctx context.Context, rg *rig, o Options, r *Report) error {
	o.Progress("ward: models alone, pipeline in process, Ward stream over gRPC")
	frames, jpegs, err := vision.ReadClip(o.Video, o.WardFrames, 85)
	if err != nil {
		return err
	}
	detSess, poseSess := rg.Session("fastestdet"), rg.Session("movenet-lightning")
	det, err := detect.New(detSess, "person")
	if err != nil {
		return err
	}
	est, err := pose.New(poseSess)
	if err != nil {
		return err
	}
	start := time.Now().Add(-time.Hour).Truncate(time.Second) // within the server's capture window
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Second / clipFPS) }

	// One untimed pass finds each frame's people, for the models-alone path.
	boxes := make([][]image.Rectangle, len(frames))
	people := 0
	p := ward.New(det, est, ward.Config{})
	for i, f := range frames {
		res, err := p.Process(ctx, f, at(i), int64(i+1))
		if err != nil {
			return err
		}
		for _, q := range res.People {
			boxes[i] = append(boxes[i], q.Box)
		}
		people += len(res.People)
	}
	modelsAlone, err := newModelsAlone(det, est, detSess, poseSess, frames, boxes)
	if err != nil {
		return err
	}
	inProcess := func(i int, p *ward.Pipeline) error {
		_, err := p.Process(ctx, frames[i], at(i), int64(i+1))
		return err
	}

	var aloneT, aheadT, procT, streamT []time.Duration
	var aloneAll, aheadAll, procAll, streamAll time.Duration
	// Each round takes the paths in a different order, so that none always follows another.
	paths := []struct {
		samples *[]time.Duration
		total   *time.Duration
		run     func() ([]time.Duration, time.Duration, error)
	}{
		{&aloneT, &aloneAll, func() ([]time.Duration, time.Duration, error) {
			return timeFrames(len(frames), func(i int) error { return modelsAlone.frame(ctx, i) })
		}},
		{&aheadT, &aheadAll, func() ([]time.Duration, time.Duration, error) {
			return timeFrames(len(frames), func(i int) error { return modelsAlone.frameAhead(ctx, i) })
		}},
		{&procT, &procAll, func() ([]time.Duration, time.Duration, error) {
			p := ward.New(det, est, ward.Config{})
			return timeFrames(len(frames), func(i int) error { return inProcess(i, p) })
		}},
		{&streamT, &streamAll, func() ([]time.Duration, time.Duration, error) { return streamOverGRPC(ctx, rg, jpegs, at) }},
	}
	for round := range o.Rounds {
		for k := range paths {
			m := paths[(k+round)%len(paths)]
			d, all, err := m.run()
			if err != nil {
				return err
			}
			*m.samples, *m.total = append(*m.samples, d...), *m.total+all
		}
	}
	alone := row("ward", "models alone: FastestDet, then MoveNet per person", 1, "frame", aloneT, aloneAll)
	ahead := row("ward", "models alone, the next frame's FastestDet beside this frame's MoveNet", 1, "frame", aheadT, aheadAll)
	proc := row("ward", "ward pipeline in process, Process frame by frame (decoded frames)", 1, "frame", procT, procAll)
	stream := row("ward", "Ward stream over gRPC from JPEG q85 (decode and detect one ahead)", 1, "frame", streamT, streamAll)
	r.Rows = append(r.Rows, alone, ahead, proc, stream)
	r.note("ward: %d frames of the walkers clip at %dx%d, %.1f people a frame; the stream's per-frame times are the gaps between its frame results",
		len(frames), frames[0].Width, frames[0].Height, float64(people)/float64(len(frames)))
	r.ratio("ward: pipeline in process / models alone, frames/s", proc.Throughput/alone.Throughput, 0.85, false)
	r.ratio("ward: Ward stream / models alone, frames/s", stream.Throughput/alone.Throughput, 0.85, false)
	r.info("ward: Ward stream / models alone scheduled as the stream schedules them, frames/s", stream.Throughput/ahead.Throughput)
	return nil
}

// timeFrames times f on each frame index in order.
func timeFrames(n int, f func(i int) error) ([]time.Duration, time.Duration, error) {
	i := 0
	return timeEach(n, func() error {
		err := f(i)
		i++
		return err
	})
}

// modelsAlone is the ward path's model work with everything else taken away: inputs prepared
// beforehand, outputs into kept tensors.
type modelsAlone struct {
	det, pose *inference.Session
	detIn     [][]inference.Tensor
	poseIn    [][][]inference.Tensor
	detOut    []inference.Tensor
	poseOut   [][]inference.Tensor
}

func newModelsAlone(det *detect.Detector, est *pose.Estimator, detSess, poseSess *inference.Session, frames []vision.Frame, boxes [][]image.Rectangle) (*modelsAlone, error) {
	m := &modelsAlone{det: detSess, pose: poseSess, detIn: make([][]inference.Tensor, len(frames)), poseIn: make([][][]inference.Tensor, len(frames))}
	for i, f := range frames {
		t, err := det.Prepare(f)
		if err != nil {
			return nil, err
		}
		m.detIn[i] = []inference.Tensor{t.Clone()}
		for _, box := range boxes[i] {
			t, _, err := est.Prepare(f, box)
			if err != nil {
				return nil, err
			}
			m.poseIn[i] = append(m.poseIn[i], []inference.Tensor{t.Clone()})
		}
	}
	var err error
	if m.detOut, err = outputsFor(detSess); err != nil {
		return nil, err
	}
	for range poseSess.Workers() {
		out, err := outputsFor(poseSess)
		if err != nil {
			return nil, err
		}
		m.poseOut = append(m.poseOut, out)
	}
	return m, nil
}

// frame runs frame i's models: the detector, then its people side by side on the pose
// model's workers, worker w taking every w-th person as the pipeline does.
func (m *modelsAlone) frame(ctx context.Context, i int) error {
	if err := m.det.RunInto(ctx, m.detIn[i], m.detOut); err != nil {
		return err
	}
	return m.poses(ctx, i)
}

// frameAhead runs frame i's pose models beside the detector on frame i+1, as the Ward stream
// schedules them (the first frame's detector runs first).
func (m *modelsAlone) frameAhead(ctx context.Context, i int) error {
	if i == 0 {
		if err := m.det.RunInto(ctx, m.detIn[0], m.detOut); err != nil {
			return err
		}
	}
	detErr := make(chan error, 1)
	go func() {
		if i+1 < len(m.detIn) {
			detErr <- m.det.RunInto(ctx, m.detIn[i+1], m.detOut)
			return
		}
		detErr <- nil
	}()
	return errors.Join(m.poses(ctx, i), <-detErr)
}

// poses runs the pose model on frame i's people.
func (m *modelsAlone) poses(ctx context.Context, i int) error {
	workers := len(m.poseOut)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < len(m.poseIn[i]); k += workers {
				if err := m.pose.RunInto(ctx, m.poseIn[i][k], m.poseOut[w]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// outputsFor is room for a session's outputs, whose shapes are fixed.
func outputsFor(s *inference.Session) ([]inference.Tensor, error) {
	var out []inference.Tensor
	for _, spec := range s.Outputs() {
		t, err := inference.Zeros(spec)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// streamOverGRPC sends the JPEGs down one Ward stream, every frame processed, and times the
// gaps between frame results: the stream's rate once it is flowing, from the first result to
// the last (the first frame, which waits for the stream to open and has nothing to overlap
// with, is the stream's start-up, not its rate).
func streamOverGRPC(ctx context.Context, rg *rig, jpegs [][]byte, at func(int) time.Time) ([]time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(rg.As(ctx, auth.RoleWardBridge))
	defer cancel()
	stream, err := vigilv1.NewWardClient(rg.Conn).StreamCamera(ctx)
	if err != nil {
		return nil, 0, err
	}
	cfg := &vigilv1.StreamConfig{CameraId: "bench", FrameRate: clipFPS, Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}
	if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: cfg}}); err != nil {
		return nil, 0, err
	}
	sendErr := make(chan error, 1)
	go func() {
		for i, data := range jpegs {
			f := &vigilv1.Frame{Sequence: int64(i + 1), CaptureTime: timestamppb.New(at(i)), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}
			if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: f}}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	var gaps []time.Duration
	var first, last time.Time
	results := 0
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if fe := ev.GetFrameError(); fe != nil {
			return nil, 0, fmt.Errorf("frame %d: %s: %s", fe.Sequence, fe.Code, fe.Message)
		}
		if ev.GetFrameResult() != nil {
			now := time.Now()
			if results == 0 {
				first = now
			} else {
				gaps = append(gaps, now.Sub(last))
			}
			last = now
			results++
		}
	}
	elapsed := last.Sub(first)
	if err := <-sendErr; err != nil {
		return nil, 0, err
	}
	if results != len(jpegs) {
		return nil, 0, fmt.Errorf("%d frame results for %d frames", results, len(jpegs))
	}
	return gaps, elapsed, nil
}
