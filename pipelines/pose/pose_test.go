package pose

import (
	"context"
	"image"
	"io"
	"math"
	"testing"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/leakcheck"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/vision"
)

// TestMain fails the run when a native handle outlives the tests.
func TestMain(m *testing.M) { leakcheck.Run(m) }

func load(t testing.TB, e *inference.Engine, name string) *inference.Session {
	t.Helper()
	m, path := testenv.Model(t, name)
	s, err := e.Load(m, path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWalkersAreUpright runs detection then pose on a real walkers frame: every walker's
// skeleton has shoulders above hips above ankles, and its keypoints lie near its box.
func TestWalkersAreUpright(t *testing.T) {
	e, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	defer e.Close()
	det, err := detect.New(load(t, e, "fastestdet"), "person")
	if err != nil {
		t.Fatal(err)
	}
	est, err := New(load(t, e, "movenet-lightning"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := vision.OpenVideo(testenv.Shared(t, "video/walkers-vtest.avi"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var f vision.Frame
	for i := 0; i <= 100; i++ {
		if f, err = v.Read(); err == io.EOF {
			t.Fatal("short clip")
		}
	}
	people, err := det.Detect(context.Background(), f)
	if err != nil || len(people) < 4 {
		t.Fatalf("detection: %d people, %v", len(people), err)
	}
	upright := 0
	for _, p := range people {
		s, err := est.Estimate(context.Background(), f, p.Box)
		if err != nil {
			t.Fatal(err)
		}
		_, sy, ok1 := s.Mean(0.2, LeftShoulder, RightShoulder)
		_, hy, ok2 := s.Mean(0.2, LeftHip, RightHip)
		_, ay, ok3 := s.Mean(0.2, LeftAnkle, RightAnkle)
		t.Logf("person at %v: shoulders %.0f, hips %.0f, ankles %.0f", p.Box, sy, hy, ay)
		if ok1 && ok2 && ok3 && sy < hy && hy < ay {
			upright++
		}
		sq := SquareAround(p.Box)
		for k, kp := range s {
			if kp.Score >= 0.3 && (kp.X < float64(sq.Min.X) || kp.X > float64(sq.Max.X) || kp.Y < float64(sq.Min.Y) || kp.Y > float64(sq.Max.Y)) {
				t.Errorf("keypoint %d at (%.0f, %.0f) is outside the crop %v", k, kp.X, kp.Y, sq)
			}
		}
	}
	if upright*4 < len(people)*3 {
		t.Errorf("%d of %d walkers are upright, want at least three quarters", upright, len(people))
	}
}

// turnFrame is a frame turned a quarter clockwise: (x, y) goes to (h-1-y, x).
func turnFrame(f vision.Frame) vision.Frame {
	out := vision.Frame{Width: f.Height, Height: f.Width, BGR: make([]byte, len(f.BGR))}
	for y := 0; y < f.Height; y++ {
		for x := 0; x < f.Width; x++ {
			copy(out.BGR[3*((x)*out.Width+(f.Height-1-y)):][:3], f.BGR[3*(y*f.Width+x):][:3])
		}
	}
	return out
}

// TestLyingPersonAnyWayUp turns a real frame of a person standing (UP-Fall A7) a quarter
// round, so that they lie across the image: the model run the usual way up scores them lower,
// while EstimateAnyWayUp finds the skeleton it finds on the upright frame, in the turned frame's
// pixels.
func TestLyingPersonAnyWayUp(t *testing.T) {
	e, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	defer e.Close()
	est, err := New(load(t, e, "movenet-lightning"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := vision.OpenVideo(testenv.Shared(t, "video/falls-upfall/A7_S1_T1_Cam1.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f, err := v.Read()
	if err != nil {
		t.Fatal(err)
	}
	box := image.Rect(196, 172, 325, 461) // the person, as FastestDet finds them
	upright, err := est.Estimate(context.Background(), f, box)
	if err != nil {
		t.Fatal(err)
	}
	turned := turnFrame(f)
	tbox := image.Rect(f.Height-box.Max.Y, box.Min.X, f.Height-box.Min.Y, box.Max.X)
	plain, err := est.Estimate(context.Background(), turned, tbox)
	if err != nil {
		t.Fatal(err)
	}
	any, err := est.EstimateAnyWayUp(context.Background(), turned, tbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mean keypoint score: upright %.2f, lying the usual way up %.2f, any way up %.2f", upright.MeanScore(), plain.MeanScore(), any.MeanScore())
	if any.MeanScore() < plain.MeanScore()+0.1 {
		t.Errorf("any way up scores %.2f, the usual way %.2f: want at least 0.1 better", any.MeanScore(), plain.MeanScore())
	}
	for k, p := range upright {
		if p.Score < 0.5 {
			continue
		}
		// (x, y) upright is (h-1-y, x) turned.
		want := image.Pt(int(float64(f.Height)-1-p.Y), int(p.X))
		got := any[k]
		if d := math.Hypot(got.X-float64(want.X), got.Y-float64(want.Y)); d > 12 {
			t.Errorf("%s at (%.0f, %.0f), want near (%d, %d) (%.0f px away)", Names[k], got.X, got.Y, want.X, want.Y, d)
		}
	}
}
