package inference

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/vision"
)

// TestMain fails the run when any native handle outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := LiveHandles(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d ONNX Runtime handles leaked (created and never destroyed)\n", n)
		code = 1
	}
	os.Exit(code)
}

func openEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("open ONNX Runtime: %v (run `make deps`)", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return e
}

func loadModel(t testing.TB, e *Engine, name string) *Session {
	t.Helper()
	m, path := testenv.Model(t, name)
	s, err := e.Load(m, path)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return s
}

// walkersFrame is frame n of the real walkers clip.
func walkersFrame(t testing.TB, n int) vision.Frame {
	t.Helper()
	v, err := vision.OpenVideo(testenv.Shared(t, "video/walkers-vtest.avi"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i := 0; ; i++ {
		f, err := v.Read()
		if err == io.EOF {
			t.Fatalf("walkers clip has fewer than %d frames", n+1)
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == n {
			return f
		}
	}
}

// detectorInput is FastestDet's input as its manifest says: 352x352, BGR, 0..1, NCHW.
func detectorInput(t testing.TB, f vision.Frame) Tensor {
	t.Helper()
	r, err := vision.Resize(f, 352, 352)
	if err != nil {
		t.Fatal(err)
	}
	plane := 352 * 352
	data := make([]float32, 3*plane)
	for i := 0; i < plane; i++ {
		for c := 0; c < 3; c++ {
			data[c*plane+i] = float32(r.BGR[i*3+c]) / 255
		}
	}
	in, err := NewTensor([]int64{1, 3, 352, 352}, data)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// person is FastestDet's best person cell, decoded as upstream does: score obj^0.6 * cls^0.4,
// centre offsets through tanh, size through sigmoid, relative to the image.
type person struct {
	score, cx, cy, w, h float64
}

func bestPerson(t testing.TB, out Tensor) person {
	t.Helper()
	v, err := Values[float32](out)
	if err != nil {
		t.Fatal(err)
	}
	const grid = 22
	at := func(c, gy, gx int) float64 { return float64(v[c*grid*grid+gy*grid+gx]) }
	sigmoid := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	var best person
	for gy := 0; gy < grid; gy++ {
		for gx := 0; gx < grid; gx++ {
			s := math.Pow(at(0, gy, gx), 0.6) * math.Pow(at(5, gy, gx), 0.4)
			if s > best.score {
				best = person{s,
					(float64(gx) + math.Tanh(at(1, gy, gx))) / grid, (float64(gy) + math.Tanh(at(2, gy, gx))) / grid,
					sigmoid(at(3, gy, gx)), sigmoid(at(4, gy, gx))}
			}
		}
	}
	return best
}

// poseInput crops a square around the person (padding with black), scales it to 192x192 RGB
// int32 NHWC as MoveNet's manifest says, and returns the crop's side in frame pixels.
func poseInput(t testing.TB, f vision.Frame, p person) Tensor {
	t.Helper()
	side := int(math.Max(p.w*float64(f.Width), p.h*float64(f.Height)) * 1.25)
	x0 := int(p.cx*float64(f.Width)) - side/2
	y0 := int(p.cy*float64(f.Height)) - side/2
	crop := vision.Frame{Width: side, Height: side, BGR: make([]byte, side*side*3)}
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			fx, fy := x0+x, y0+y
			if fx < 0 || fy < 0 || fx >= f.Width || fy >= f.Height {
				continue
			}
			copy(crop.BGR[(y*side+x)*3:][:3], f.BGR[(fy*f.Width+fx)*3:][:3])
		}
	}
	r, err := vision.Resize(crop, 192, 192)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]int32, 192*192*3)
	for i := 0; i < 192*192; i++ {
		data[i*3], data[i*3+1], data[i*3+2] = int32(r.BGR[i*3+2]), int32(r.BGR[i*3+1]), int32(r.BGR[i*3])
	}
	in, err := NewTensor([]int64{1, 192, 192, 3}, data)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func grey(width, height int) vision.Frame {
	return vision.Frame{Width: width, Height: height, BGR: bytes.Repeat([]byte{128}, width*height*3)}
}

func run(t testing.TB, s *Session, in Tensor) Tensor {
	t.Helper()
	out, err := s.Run(context.Background(), []Tensor{in})
	if err != nil {
		t.Fatalf("run %s: %v", s.Manifest().Name, err)
	}
	return out[0]
}

const walkersTestFrame = 100

func TestFastestDetFindsAWalker(t *testing.T) {
	e := openEngine(t, Config{})
	s := loadModel(t, e, "fastestdet")
	if s.Provider() != "cpu" {
		t.Errorf("got provider %q, want cpu", s.Provider())
	}
	p := bestPerson(t, run(t, s, detectorInput(t, walkersFrame(t, walkersTestFrame))))
	t.Logf("best person on walkers frame %d: %+v", walkersTestFrame, p)
	if p.score < 0.7 || p.h < 0.1 || p.h > 0.6 || p.h < p.w {
		t.Errorf("best person %+v: want score >= 0.7 and an upright box 10-60%% of the frame high", p)
	}
	blank := bestPerson(t, run(t, s, detectorInput(t, grey(768, 576))))
	if blank.score > 0.3 {
		t.Errorf("a flat grey frame gives a person with score %.2f, want < 0.3", blank.score)
	}
}

func TestMoveNetFindsAnUprightSkeleton(t *testing.T) {
	e := openEngine(t, Config{})
	det, pose := loadModel(t, e, "fastestdet"), loadModel(t, e, "movenet-lightning")
	frame := walkersFrame(t, walkersTestFrame)
	p := bestPerson(t, run(t, det, detectorInput(t, frame)))
	kp, err := Values[float32](run(t, pose, poseInput(t, frame, p)))
	if err != nil {
		t.Fatal(err)
	}
	if len(kp) != 17*3 {
		t.Fatalf("got %d keypoint values, want 51", len(kp))
	}
	// (y, x, score) per COCO keypoint: 0 nose, 5/6 shoulders, 11/12 hips, 15/16 ankles.
	y := func(i int) float32 { return kp[i*3] }
	var mean float32
	for i := 0; i < 17; i++ {
		mean += kp[i*3+2] / 17
	}
	t.Logf("mean keypoint score %.2f; nose y %.2f, shoulders %.2f %.2f, hips %.2f %.2f, ankles %.2f %.2f",
		mean, y(0), y(5), y(6), y(11), y(12), y(15), y(16))
	if mean < 0.3 {
		t.Errorf("mean keypoint score %.2f on a walker, want >= 0.3", mean)
	}
	shoulders, hips, ankles := (y(5)+y(6))/2, (y(11)+y(12))/2, (y(15)+y(16))/2
	if !(shoulders < hips && hips < ankles) {
		t.Errorf("walker is not upright: shoulders y %.2f, hips y %.2f, ankles y %.2f; want increasing", shoulders, hips, ankles)
	}
}

// TestSessionsRunConcurrently runs both models from many goroutines at once and checks every
// result against a single run: a tensor freed too early or shared between runs gives other
// numbers.
func TestSessionsRunConcurrently(t *testing.T) {
	e := openEngine(t, Config{Workers: 2})
	det, pose := loadModel(t, e, "fastestdet"), loadModel(t, e, "movenet-lightning")
	frame := walkersFrame(t, walkersTestFrame)
	detIn := detectorInput(t, frame)
	poseIn := poseInput(t, frame, bestPerson(t, run(t, det, detIn)))
	wantDet, _ := Values[float32](run(t, det, detIn))
	wantPose, _ := Values[float32](run(t, pose, poseIn))

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				s, in, want := det, detIn, wantDet
				if (g+i)%2 == 1 {
					s, in, want = pose, poseIn, wantPose
				}
				out, err := s.Run(context.Background(), []Tensor{in})
				if err != nil {
					errs <- err
					return
				}
				got, _ := Values[float32](out[0])
				for k := range want {
					if math.Abs(float64(got[k]-want[k])) > 1e-5 {
						errs <- fmt.Errorf("%s: value %d is %v concurrently, %v alone", s.Manifest().Name, k, got[k], want[k])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDynamicShapes(t *testing.T) {
	e := openEngine(t, Config{})
	m := &models.Manifest{
		Name: "relu", Version: "1", Task: "test",
		Weights: models.Weights{File: "relu.onnx", SHA256: strings.Repeat("0", 64)},
		Inputs:  []models.InputSpec{{TensorSpec: models.TensorSpec{Name: "x", DType: models.Float32, Shape: []int64{-1, -1}}}},
		Outputs: []models.TensorSpec{{Name: "y", DType: models.Float32, Shape: []int64{-1, -1}}},
		Decoder: models.DecoderConfig{Kind: models.DecoderClassification},
	}
	s, err := e.Load(m, writeReluModel(t, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, shape := range [][]int64{{1, 3}, {4, 2}, {2, 5}} {
		n := int(shape[0] * shape[1])
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(i) - float32(n)/2
		}
		in, _ := NewTensor(shape, data)
		out := run(t, s, in)
		if fmt.Sprint(out.Shape) != fmt.Sprint(shape) {
			t.Errorf("got output shape %v, want %v", out.Shape, shape)
		}
		got, _ := Values[float32](out)
		for i, x := range data {
			if want := max(x, 0); got[i] != want {
				t.Errorf("shape %v: relu(%v) = %v, want %v", shape, x, got[i], want)
			}
		}
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	e := openEngine(t, Config{})
	s := loadModel(t, e, "fastestdet")
	wrongShape, _ := NewTensor([]int64{1, 3, 320, 320}, make([]float32, 3*320*320))
	wrongType, _ := NewTensor([]int64{1, 3, 352, 352}, make([]int32, 3*352*352))
	tests := []struct {
		name   string
		inputs []Tensor
		want   string
	}{
		{"wrong shape", []Tensor{wrongShape}, "[1 3 320 320]"},
		{"wrong type", []Tensor{wrongType}, "wants float32, got int32"},
		{"no inputs", nil, "takes 1 inputs, got 0"},
		{"empty tensor", []Tensor{{}}, "wants float32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tt.inputs)
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrBadInput containing %q", err, tt.want)
			}
		})
	}
	if _, err := NewTensor([]int64{2, 2}, []float32{1, 2, 3}); !errors.Is(err, ErrBadInput) {
		t.Errorf("NewTensor with 3 values for shape [2 2]: got %v, want ErrBadInput", err)
	}
}

func TestLoadRefusesSignatureMismatch(t *testing.T) {
	e := openEngine(t, Config{})
	m, path := testenv.Model(t, "fastestdet")
	wrong := *m
	wrong.Inputs = append([]models.InputSpec(nil), m.Inputs...)
	wrong.Inputs[0].Shape = []int64{1, 3, 320, 320}
	_, err := e.Load(&wrong, path)
	if !errors.Is(err, models.ErrSignatureMismatch) {
		t.Fatalf("got %v, want ErrSignatureMismatch", err)
	}
	for _, part := range []string{"[1,3,320,320]", "[1,3,352,352]"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not name %s", err, part)
		}
	}
}

// TestGPUProviderFallsBackToCPU runs on this CPU-only ONNX Runtime build: asking for CUDA or
// TensorRT loads the models on the CPU, logs the reason once, and reports cpu.
func TestGPUProviderFallsBackToCPU(t *testing.T) {
	for _, provider := range []string{"cuda", "tensorrt"} {
		t.Run(provider, func(t *testing.T) {
			var logs bytes.Buffer
			e := openEngine(t, Config{Provider: provider, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			det, pose := loadModel(t, e, "fastestdet"), loadModel(t, e, "movenet-lightning")
			for _, s := range []*Session{det, pose} {
				if s.Provider() != "cpu" {
					t.Errorf("%s: got provider %q, want cpu", s.Manifest().Name, s.Provider())
				}
			}
			if got := bestPerson(t, run(t, det, detectorInput(t, walkersFrame(t, walkersTestFrame)))).score; got < 0.7 {
				t.Errorf("after fallback the detector scores %.2f, want >= 0.7", got)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "provider="+provider) || !strings.Contains(lines[0], "reason=") {
				t.Fatalf("got log %q, want one line naming %s and the reason", logs.String(), provider)
			}
			t.Logf("%s", lines[0])
		})
	}
}

func TestEngineCloseFreesEveryHandle(t *testing.T) {
	before := LiveHandles()
	e, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := loadModel(t, e, "fastestdet")
	run(t, s, detectorInput(t, grey(352, 352)))
	if LiveHandles() <= before {
		t.Errorf("an open engine and session count %d handles, want more than %d", LiveHandles(), before)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if got := LiveHandles(); got != before {
		t.Errorf("after Close: %d live handles, want %d", got, before)
	}
	if _, err := s.Run(context.Background(), []Tensor{detectorInput(t, grey(352, 352))}); !errors.Is(err, ErrClosed) {
		t.Errorf("run after close: got %v, want ErrClosed", err)
	}
}
