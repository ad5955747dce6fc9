package pose

import (
	"context"
	"io"
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
