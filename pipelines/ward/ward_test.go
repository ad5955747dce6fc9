package ward

import (
	"context"
	"errors"
	"image"
	"io"
	"math"
	"testing"
	"time"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/leakcheck"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/pose"
	"github.com/vigil-health/vigil/vision"
)

func TestMain(m *testing.M) { leakcheck.Run(m) }

// models loads the detector and the pose model once per test.
func models(t testing.TB) (*detect.Detector, *pose.Estimator) {
	t.Helper()
	e, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	load := func(name string) *inference.Session {
		m, path := testenv.Model(t, name)
		s, err := e.Load(m, path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	det, err := detect.New(load("fastestdet"), "person")
	if err != nil {
		t.Fatal(err)
	}
	est, err := pose.New(load("movenet-lightning"))
	if err != nil {
		t.Fatal(err)
	}
	return det, est
}

// play runs a video (its first limit frames, when limit is over 0) through a pipeline, frames
// stamped at fps, and calls each with every frame's people and the alerts raised on it.
func play(t *testing.T, p *Pipeline, path string, fps float64, limit int, each func(n int, at time.Time, people []Person, falls []Fall)) {
	t.Helper()
	v, err := vision.OpenVideo(path)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	for n := 0; limit == 0 || n < limit; n++ {
		f, err := v.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		at := start.Add(time.Duration(float64(n) / fps * float64(time.Second)))
		res, err := p.Process(context.Background(), f, at, int64(n+1))
		if err != nil {
			t.Fatal(err)
		}
		each(n, at, res.People, res.Falls)
	}
}

// The shared UP-Fall clips, falls and daily activities from both cameras, are measured through
// the Ward service by eval.TestSharedFallClips (vigil eval falls).

// walkingTracks runs the first frames of the walkers clip (captured at about 7 frames/s) and
// returns the skeletons of tracks seen upright, with good ankles, on every frame of a run of
// at least n frames.
func walkingTracks(t *testing.T, n int) [][]pose.Skeleton {
	det, est := models(t)
	p := New(det, est, Config{})
	runs := map[int64][]pose.Skeleton{}
	var done [][]pose.Skeleton
	seen := map[int64]bool{}
	path := testenv.Shared(t, "video/walkers-vtest.avi")
	play(t, p, path, 7, 200, func(_ int, _ time.Time, people []Person, _ []Fall) {
		clear(seen)
		for _, q := range people {
			s := q.Skeleton
			_, ay, okA := s.Mean(0.3, pose.LeftAnkle, pose.RightAnkle)
			_, sy, okS := s.Mean(0.3, pose.LeftShoulder, pose.RightShoulder)
			if !okA || !okS || ay-sy < 60 {
				continue
			}
			seen[q.TrackID] = true
			runs[q.TrackID] = append(runs[q.TrackID], s)
		}
		for id, r := range runs {
			if !seen[id] {
				if len(r) >= n {
					done = append(done, r)
				}
				delete(runs, id)
			}
		}
	})
	for _, r := range runs {
		if len(r) >= n {
			done = append(done, r)
		}
	}
	if len(done) < 3 {
		t.Fatalf("%d walking tracks of %d frames in the walkers clip, want at least 3", len(done), n)
	}
	return done
}

// turn rotates every keypoint of s about pivot by deg degrees (positive: clockwise on screen)
// and moves it down by dy pixels.
func turn(s pose.Skeleton, pivot image.Point, deg, dy float64) pose.Skeleton {
	r := deg * math.Pi / 180
	sin, cos := math.Sin(r), math.Cos(r)
	for i := range s {
		x, y := s[i].X-float64(pivot.X), s[i].Y-float64(pivot.Y)
		s[i].X, s[i].Y = float64(pivot.X)+x*cos-y*sin, float64(pivot.Y)+x*sin+y*cos+dy
	}
	return s
}

// scenario is what a person does after walking: over dur, progress k goes from 0 to 1 and
// move says where the last walking skeleton's points are at k; then the person holds still.
type scenario struct {
	name string
	dur  time.Duration
	move func(s pose.Skeleton, k float64) pose.Skeleton
	beds func(last pose.Skeleton) [][]image.Point
	fall bool
}

// TestFallsFromRealWalks turns real walking tracks of the walkers clip into falls and into
// normal movements: a fall raises an alert within 2 s of the person coming down; sitting down
// slowly, bending over and lying down in a bed zone raise none.
func TestFallsFromRealWalks(t *testing.T) {
	const fps = 7.0
	frame := time.Second / fps
	walks := walkingTracks(t, 21) // 3 s each
	feet := func(s pose.Skeleton) image.Point {
		x, y, _ := s.Mean(0, pose.LeftAnkle, pose.RightAnkle)
		return image.Pt(int(x), int(y))
	}
	hips := func(s pose.Skeleton) image.Point {
		x, y, _ := s.Mean(0, pose.LeftHip, pose.RightHip)
		return image.Pt(int(x), int(y))
	}
	height := func(s pose.Skeleton) float64 {
		_, ay, _ := s.Mean(0, pose.LeftAnkle, pose.RightAnkle)
		_, sy, _ := s.Mean(0, pose.LeftShoulder, pose.RightShoulder)
		return ay - sy
	}
	// fallOver rotates the body about the feet towards horizontal (forwards or backwards) and
	// lowers it onto the floor.
	fallOver := func(deg float64) func(pose.Skeleton, float64) pose.Skeleton {
		return func(s pose.Skeleton, k float64) pose.Skeleton {
			return turn(s, feet(s), deg*k, 0.1*height(s)*k)
		}
	}
	var scenarios []scenario
	for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond} {
		scenarios = append(scenarios,
			scenario{name: "falls forwards in " + d.String(), dur: d, move: fallOver(80), fall: true},
			scenario{name: "falls backwards in " + d.String(), dur: d, move: fallOver(-85), fall: true})
	}
	scenarios = append(scenarios,
		scenario{name: "sits down slowly", dur: 2 * time.Second, move: func(s pose.Skeleton, k float64) pose.Skeleton {
			// Everything above the knees comes down by 0.3 body heights; the torso stays upright.
			drop := 0.3 * height(s) * k
			for _, i := range []int{pose.Nose, pose.LeftEye, pose.RightEye, pose.LeftEar, pose.RightEar, pose.LeftShoulder,
				pose.RightShoulder, pose.LeftElbow, pose.RightElbow, pose.LeftWrist, pose.RightWrist, pose.LeftHip, pose.RightHip} {
				s[i].Y += drop
			}
			return s
		}},
		scenario{name: "bends over to pick something up", dur: 2 * time.Second, move: func(s pose.Skeleton, k float64) pose.Skeleton {
			// The torso tips forwards about the hips, 80 degrees at the middle, and comes back.
			deg := 80 * math.Sin(math.Pi*k)
			c := hips(s)
			for _, i := range []int{pose.Nose, pose.LeftEye, pose.RightEye, pose.LeftEar, pose.RightEar, pose.LeftShoulder,
				pose.RightShoulder, pose.LeftElbow, pose.RightElbow, pose.LeftWrist, pose.RightWrist} {
				one := turn(pose.Skeleton{s[i]}, c, deg, 0)
				s[i] = one[0]
			}
			return s
		}},
		scenario{name: "lies down in a bed zone", dur: time.Second, move: fallOver(85), beds: func(last pose.Skeleton) [][]image.Point {
			r := last.Bounds(0).Inset(-40)
			return [][]image.Point{{r.Min, image.Pt(r.Max.X, r.Min.Y), r.Max, image.Pt(r.Min.X, r.Max.Y)}}
		}},
	)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for w, walk := range walks {
				last := walk[len(walk)-1]
				var beds [][]image.Point
				if sc.beds != nil {
					beds = sc.beds(sc.move(last, 1))
				}
				d := fall.New(fall.DefaultConfig, beds, nil)
				at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
				var alerts []time.Time
				add := func(s pose.Skeleton) {
					at = at.Add(frame)
					if a, ok := d.Add(at, s, s.Bounds(0.2)); ok {
						alerts = append(alerts, a.At)
						t.Logf("walk %d: alert: %v", w, a.Reasons)
					}
				}
				for _, s := range walk {
					add(s)
				}
				n := int(sc.dur / frame)
				for i := 1; i <= n; i++ {
					add(sc.move(last, float64(i)/float64(n)))
				}
				down := at
				// Then still for 4 s, the keypoints jittering as the model's do.
				end := sc.move(last, 1)
				for i := 0; i < int(4*fps); i++ {
					s := end
					for k := range s {
						s[k].X += float64(i%3 - 1)
						s[k].Y += float64((i+1)%3 - 1)
					}
					add(s)
				}
				switch {
				case sc.fall && len(alerts) != 1:
					t.Errorf("walk %d: %d alerts, want 1", w, len(alerts))
				case sc.fall && alerts[0].Sub(down) > 2*time.Second:
					t.Errorf("walk %d: alert %v after coming down, want within 2 s", w, alerts[0].Sub(down))
				case !sc.fall && len(alerts) != 0:
					t.Errorf("walk %d: %d alerts, want none", w, len(alerts))
				}
			}
		})
	}
}

func TestHomographyMapsToTheFloor(t *testing.T) {
	// 100 px a metre, origin at (50, 20); a projective row that sends y = 500 to infinity
	// and stretches rows further up the image (w = 1 - y/500).
	h := Homography{0.01, 0, -0.5, 0, 0.01, -0.2, 0, -0.002, 1}
	for _, c := range []struct{ x, y, mx, my float64 }{{150, 0, 1, -0.2}, {150, 250, 2, 4.6}} {
		if x, y, ok := h.Map(c.x, c.y); !ok || math.Abs(x-c.mx) > 1e-9 || math.Abs(y-c.my) > 1e-9 {
			t.Errorf("(%v, %v) -> (%v, %v, %v), want (%v, %v)", c.x, c.y, x, y, ok, c.mx, c.my)
		}
	}
	if _, _, ok := h.Map(10, 500); ok {
		t.Error("a point on the horizon mapped to the floor")
	}
}

// TestNurseBesideAFall: a carer standing beside a patient who falls and lies on the floor is
// neither merged with the patient nor dropped, and raises no alert of their own; the patient's
// fall is alerted. The carer is the person of UP-Fall A7 (standing, the same camera and room),
// copied with the floor around them beside the person falling in A4.
func TestNurseBesideAFall(t *testing.T) {
	det, est := models(t)
	p := New(det, est, Config{})
	patient, err := vision.OpenVideo(testenv.Shared(t, "video/falls-upfall/A4_S1_T1_Cam1.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer patient.Close()
	carer, err := vision.OpenVideo(testenv.Shared(t, "video/falls-upfall/A7_S1_T1_Cam1.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	defer carer.Close()
	// The carer stands at x 196-325 in A7; the patient stands at x 300-400 and falls to the
	// left, along the lower edge. The carer is moved 230 px to the right of where they stood.
	from, shift := image.Rect(190, 160, 335, 470), 230
	nurse := from.Add(image.Pt(shift, 0))
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	const fps = 18.0
	var alerts []Fall
	nurseIDs := map[int64]int{}
	frames, merged, patientSeen, afterFall := 0, 0, 0, 0
	for n := 0; ; n++ {
		f, err := patient.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := carer.Read()
		if err != nil {
			t.Fatal(err)
		}
		for y := from.Min.Y; y < from.Max.Y; y++ {
			copy(f.BGR[(y*f.Width+from.Min.X+shift)*3:(y*f.Width+from.Max.X+shift)*3], c.BGR[(y*c.Width+from.Min.X)*3:(y*c.Width+from.Max.X)*3])
		}
		at := start.Add(time.Duration(float64(n) / fps * float64(time.Second)))
		res, err := p.Process(context.Background(), f, at, int64(n+1))
		if err != nil {
			t.Fatal(err)
		}
		frames++
		alerts = append(alerts, res.Falls...)
		lying := false
		for _, q := range res.People {
			in := q.Box.Intersect(nurse)
			switch {
			case q.Box.Min.X < nurse.Min.X-60 && q.Box.Max.X > nurse.Min.X+40:
				merged++ // one box over both people
			case in.Dx()*in.Dy() > q.Box.Dx()*q.Box.Dy()*3/4:
				nurseIDs[q.TrackID]++
			case at.Sub(start) > 1500*time.Millisecond && q.Box.Min.Y > 300:
				lying = true
			}
		}
		if at.Sub(start) > 1500*time.Millisecond {
			afterFall++
			if lying {
				patientSeen++
			}
		}
	}
	if merged > 0 {
		t.Errorf("%d frames with one box over the carer and the patient, want none", merged)
	}
	most, id := 0, int64(0)
	for k, v := range nurseIDs {
		if v > most {
			most, id = v, k
		}
	}
	if most < frames*9/10 {
		t.Errorf("the carer is followed as one person on %d of %d frames (tracks %v), want 90%%", most, frames, nurseIDs)
	}
	if patientSeen < afterFall*7/10 {
		t.Errorf("the patient on the floor is seen on %d of %d frames after the fall, want 70%%", patientSeen, afterFall)
	}
	if len(alerts) != 1 {
		t.Fatalf("%d fall alerts, want 1 (the patient's)", len(alerts))
	}
	if a := alerts[0]; a.TrackID == id || a.At.Sub(start) > 1200*time.Millisecond+2*time.Second {
		t.Errorf("the alert is for track %d at %v (the carer is %d), want the patient's within 2 s of 1.2 s", a.TrackID, a.At.Sub(start), id)
	}
	t.Logf("carer on %d of %d frames as track %d; patient on the floor on %d of %d frames; alert at %v: %v",
		most, frames, id, patientSeen, afterFall, alerts[0].At.Sub(start), alerts[0].Reasons)
}

// TestRecentFramesBoundedByCount: a client whose clock stands still does not make the
// pipeline remember every frame; a moving clock keeps the last 10 s.
func TestRecentFramesBoundedByCount(t *testing.T) {
	var p Pipeline
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for seq := range int64(5000) {
		p.remember(at, seq)
	}
	if len(p.recent) != maxRecent || p.recent[len(p.recent)-1].seq != 4999 {
		t.Errorf("a still clock: %d frames remembered, want %d ending at 4999", len(p.recent), maxRecent)
	}
	var q Pipeline
	for seq := range int64(300) {
		q.remember(at.Add(time.Duration(seq)*100*time.Millisecond), seq)
	}
	if len(q.recent) != 101 || q.recent[0].seq != 199 {
		t.Errorf("10 frames a second for 30 s: %d remembered from %d, want 101 from 199", len(q.recent), q.recent[0].seq)
	}
}
