package fall

import (
	"image"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/pipelines/pose"
)

const height = 100.0 // standing body height, pixels

// body is a person seen side-on: the hip centre, the torso's tilt from vertical (degrees) and
// the legs' tilt. Upright: shoulders 0.45 above the hips, ankles 0.55 below.
func body(hx, hy, torso, legs float64) pose.Skeleton {
	var s pose.Skeleton // the points not set here are unseen (score 0)
	tr, lr := torso*math.Pi/180, legs*math.Pi/180
	sx, sy := hx+0.45*height*math.Sin(tr), hy-0.45*height*math.Cos(tr)
	ax, ay := hx-0.55*height*math.Sin(lr), hy+0.55*height*math.Cos(lr)
	s[pose.LeftShoulder], s[pose.RightShoulder] = pose.Keypoint{X: sx, Y: sy, Score: 0.8}, pose.Keypoint{X: sx, Y: sy, Score: 0.8}
	s[pose.LeftHip], s[pose.RightHip] = pose.Keypoint{X: hx, Y: hy, Score: 0.8}, pose.Keypoint{X: hx, Y: hy, Score: 0.8}
	s[pose.LeftAnkle], s[pose.RightAnkle] = pose.Keypoint{X: ax - 5, Y: ay, Score: 0.8}, pose.Keypoint{X: ax + 5, Y: ay, Score: 0.8}
	return s
}

// motion is a piece of a scenario: over dur, the hips move by (dx, dy) and the torso and legs
// turn to the given angles, linearly.
type motion struct {
	dur         time.Duration
	dx, dy      float64
	torso, legs float64
}

type result struct {
	alerts []Alert
	down   time.Time // when the last motion that lowers the hips ended
}

// play runs a scenario at 10 frames per second from a person standing at (200, 300).
func play(d *Detector, motions ...motion) result { return playAt(d, 10, nil, motions...) }

// playAt runs a scenario at fps frames per second; see, when set, changes what the camera sees
// of each frame's skeleton (nil: the whole of it), and may hide the person (false).
func playAt(d *Detector, fps float64, see func(s pose.Skeleton) (pose.Skeleton, bool), motions ...motion) result {
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	hx, hy, torso, legs := 200.0, 300.0, 0.0, 0.0
	t := start
	var r result
	step := time.Duration(float64(time.Second) / fps)
	for _, m := range motions {
		n := int(m.dur / step)
		fx, fy, ft, fl := hx, hy, torso, legs
		for i := 1; i <= n; i++ {
			k := float64(i) / float64(n)
			hx, hy = fx+m.dx*k, fy+m.dy*k
			torso, legs = ft+(m.torso-ft)*k, fl+(m.legs-fl)*k
			t = t.Add(step)
			s, seen := body(hx, hy, torso, legs), true
			if see != nil {
				s, seen = see(s)
			}
			var a Alert
			var ok bool
			if seen {
				a, ok = d.Add(t, s, s.Bounds(0.5))
			} else {
				a, ok = d.Tick(t)
			}
			if ok {
				r.alerts = append(r.alerts, a)
			}
		}
		if m.dy > 0.2*height {
			r.down = t
		}
	}
	return r
}

// walk is three seconds of walking upright.
var walk = motion{dur: 3 * time.Second, dx: 150}

func TestFallsRaiseAnAlertWithinTwoSeconds(t *testing.T) {
	for _, dur := range []time.Duration{500 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond} {
		for _, angle := range []float64{80, 90} {
			d := New(DefaultConfig, nil, nil)
			r := play(d, walk,
				motion{dur: dur, dx: 30, dy: 0.5 * height, torso: angle, legs: -angle},
				motion{dur: 4 * time.Second, torso: angle, legs: -angle})
			if len(r.alerts) != 1 {
				t.Errorf("fall over %s to %.0f degrees: %d alerts, want 1", dur, angle, len(r.alerts))
				continue
			}
			if late := r.alerts[0].At.Sub(r.down); late > 2*time.Second || late < 0 {
				t.Errorf("fall over %s: alert %s after coming down, want within 2 s", dur, late)
			}
			t.Logf("fall over %s to %.0f degrees: %v", dur, angle, r.alerts[0].Reasons)
		}
	}
}

func TestNormalMovementsRaiseNone(t *testing.T) {
	tests := []struct {
		name    string
		motions []motion
	}{
		// Onto a chair: the hips come 0.2 body heights nearer the feet, which stay on the floor
		// (hips 20 lower, ankles 0.35 below them at 50 degrees: 355, where they stood).
		{"sitting down slowly", []motion{walk, {dur: 2 * time.Second, dy: 0.2 * height, torso: 15, legs: 50}, {dur: 5 * time.Second, torso: 15, legs: 50}}},
		{"bending to pick something up", []motion{walk, {dur: 700 * time.Millisecond, dy: 0.15 * height, torso: 75}, {dur: time.Second, torso: 75}, {dur: 700 * time.Millisecond, dy: -0.15 * height, torso: 0}, walk}},
		{"a stumble, caught", []motion{walk, {dur: 400 * time.Millisecond, dx: 10, dy: 0.4 * height, torso: 40, legs: -20}, {dur: 300 * time.Millisecond, dy: -0.4 * height, torso: 0, legs: 0}, walk}},
		{"just walking", []motion{walk, walk, walk}},
	}
	for _, tt := range tests {
		d := New(DefaultConfig, nil, nil)
		if r := play(d, tt.motions...); len(r.alerts) != 0 {
			t.Errorf("%s: %d alerts (%v), want none", tt.name, len(r.alerts), r.alerts[0].Reasons)
		}
	}
}

func TestLyingInABedZoneRaisesNone(t *testing.T) {
	bed := [][]image.Point{{{150, 300}, {400, 300}, {400, 420}, {150, 420}}}
	d := New(DefaultConfig, bed, nil)
	r := play(d, walk, motion{dur: 800 * time.Millisecond, dx: 20, dy: 0.5 * height, torso: 90, legs: -90}, motion{dur: 4 * time.Second, torso: 90, legs: -90})
	if len(r.alerts) != 0 {
		t.Errorf("lying down in bed: %d alerts, want none", len(r.alerts))
	}
	// The same fall outside the bed raises one.
	d = New(DefaultConfig, [][]image.Point{{{600, 300}, {800, 300}, {800, 420}, {600, 420}}}, nil)
	if r := play(d, walk, motion{dur: 800 * time.Millisecond, dx: 20, dy: 0.5 * height, torso: 90, legs: -90}, motion{dur: 4 * time.Second, torso: 90, legs: -90}); len(r.alerts) != 1 {
		t.Errorf("a fall outside the bed: %d alerts, want 1", len(r.alerts))
	}
}

func TestCooldown(t *testing.T) {
	d := New(DefaultConfig, nil, nil)
	fallAndRise := []motion{walk, {dur: 800 * time.Millisecond, dy: 0.5 * height, torso: 90, legs: -90}, {dur: 3 * time.Second, torso: 90, legs: -90},
		{dur: 2 * time.Second, dy: -0.5 * height, torso: 0, legs: 0}}
	r := play(d, append(fallAndRise, fallAndRise...)...)
	if len(r.alerts) != 1 {
		t.Errorf("two falls 10 s apart within a 30 s cooldown: %d alerts, want 1", len(r.alerts))
	}
}

func TestTimeToGetUp(t *testing.T) {
	d := New(DefaultConfig, nil, nil)
	r := play(d, walk, motion{dur: 800 * time.Millisecond, dy: 0.5 * height, torso: 90, legs: -90},
		motion{dur: 6 * time.Second, torso: 90, legs: -90},
		motion{dur: 3 * time.Second, dy: -0.5 * height, torso: 0, legs: 0}, walk)
	if len(r.alerts) != 1 {
		t.Fatalf("%d alerts, want 1", len(r.alerts))
	}
	// Down at 3.8 s; 6 s on the floor, then up over 3 s: standing again at about 12.5 s,
	// when the hips are within 0.15 body heights of standing and the torso under 30 degrees.
	rise, ok := d.Rise()
	if !ok || rise < 8*time.Second || rise > 9*time.Second {
		t.Errorf("time to get up %v (measured: %v), want about 8.5 s", rise, ok)
	}
	if d2 := New(DefaultConfig, nil, nil); func() bool { play(d2, walk, walk); _, ok := d2.Rise(); return ok }() {
		t.Error("a time to get up with no fall")
	}
}

// TestFallsAtEveryFrameRate plays the same falls and daily movements at the frame rates of
// real cameras, 7 to 60 frames per second: the rules count seconds, not frames.
func TestFallsAtEveryFrameRate(t *testing.T) {
	fall := []motion{walk, {dur: 800 * time.Millisecond, dx: 30, dy: 0.5 * height, torso: 85, legs: -85}, {dur: 4 * time.Second, torso: 85, legs: -85}}
	sit := []motion{walk, {dur: 1500 * time.Millisecond, dy: 0.2 * height, torso: 15, legs: 50}, {dur: 5 * time.Second, torso: 15, legs: 50}}
	bend := []motion{walk, {dur: 700 * time.Millisecond, dy: 0.15 * height, torso: 75}, {dur: 800 * time.Millisecond, torso: 75},
		{dur: 700 * time.Millisecond, dy: -0.15 * height, torso: 0}, walk}
	for _, fps := range []float64{7, 12.5, 18, 30, 60} {
		if r := playAt(New(DefaultConfig, nil, nil), fps, nil, fall...); len(r.alerts) != 1 {
			t.Errorf("%v frames/s: a fall raised %d alerts, want 1", fps, len(r.alerts))
		} else if late := r.alerts[0].At.Sub(r.down); late < 0 || late > 2*time.Second {
			t.Errorf("%v frames/s: alert %v after coming down, want within 2 s", fps, late)
		}
		if r := playAt(New(DefaultConfig, nil, nil), fps, nil, sit...); len(r.alerts) != 0 {
			t.Errorf("%v frames/s: sitting down raised %d alerts, want none", fps, len(r.alerts))
		}
		if r := playAt(New(DefaultConfig, nil, nil), fps, nil, bend...); len(r.alerts) != 0 {
			t.Errorf("%v frames/s: bending over raised %d alerts, want none", fps, len(r.alerts))
		}
	}
}

// TestFallWithTheFeetOutOfView: a phone or a camera close to the bed sees the person from the
// knees up. The body's scale then comes from the torso, and a fall is still a fall.
func TestFallWithTheFeetOutOfView(t *testing.T) {
	noFeet := func(s pose.Skeleton) (pose.Skeleton, bool) {
		s[pose.LeftAnkle].Score, s[pose.RightAnkle].Score = 0, 0
		return s, true
	}
	d := New(DefaultConfig, nil, nil)
	r := playAt(d, 30, noFeet, walk, motion{dur: 700 * time.Millisecond, dx: 20, dy: 0.5 * height, torso: 80, legs: -80}, motion{dur: 4 * time.Second, torso: 80, legs: -80})
	if len(r.alerts) != 1 {
		t.Fatalf("%d alerts, want 1", len(r.alerts))
	}
	// Shoulders to hips are 0.45 body heights here; the standing height is taken as 2.7 of it.
	if got, want := d.Standing(), 2.7*0.45*height; math.Abs(got-want) > 1 {
		t.Errorf("standing height %.1f px from the torso, want %.1f", got, want)
	}
	if r := playAt(New(DefaultConfig, nil, nil), 30, noFeet, walk, walk); len(r.alerts) != 0 {
		t.Errorf("walking with the feet out of view: %d alerts, want none", len(r.alerts))
	}
}

// TestFallHeadTowardsTheCamera: seen from a high camera, a person lying with the head towards
// it has the shoulders below the hips in the image; the torso is then 180 degrees from
// upright, not 0.
func TestFallHeadTowardsTheCamera(t *testing.T) {
	r := play(New(DefaultConfig, nil, nil), walk, motion{dur: 600 * time.Millisecond, dy: 0.6 * height, torso: 175, legs: 175}, motion{dur: 3 * time.Second, torso: 175, legs: 175})
	if len(r.alerts) != 1 {
		t.Fatalf("%d alerts, want 1", len(r.alerts))
	}
	if a := r.alerts[0]; a.Torso < 150 {
		t.Errorf("torso %.0f degrees from upright, want about 175", a.Torso)
	}
}

// TestFallThenLostByTheDetector: a person on the floor is often no longer found. Seen down on
// a few frames after the descent, they are alerted on all the same, on time; a person who is
// lost and never seen down is not.
func TestFallThenLostByTheDetector(t *testing.T) {
	frames := 0
	lostAfter := func(n int) func(s pose.Skeleton) (pose.Skeleton, bool) {
		frames = 0
		return func(s pose.Skeleton) (pose.Skeleton, bool) {
			frames++
			return s, frames <= n
		}
	}
	fall := []motion{walk, {dur: 600 * time.Millisecond, dx: 20, dy: 0.5 * height, torso: 85, legs: -85}, {dur: 4 * time.Second, torso: 85, legs: -85}}
	// Walking takes 30 frames, the fall 6: the person is seen down on 3 more.
	r := playAt(New(DefaultConfig, nil, nil), 10, lostAfter(39), fall...)
	if len(r.alerts) != 1 {
		t.Fatalf("lost on the floor: %d alerts, want 1", len(r.alerts))
	}
	if late := r.alerts[0].At.Sub(r.down); late > 2*time.Second {
		t.Errorf("alert %v after coming down, want within 2 s", late)
	}
	if r := playAt(New(DefaultConfig, nil, nil), 10, lostAfter(35), fall...); len(r.alerts) != 0 {
		t.Errorf("lost while coming down, never seen down: %d alerts, want none", len(r.alerts))
	}
}

// lieStill feeds a person lying across the view, hips at (hx, hy), for dur at 10 frames/s
// from at, the hips trembling by a pixel; arms, when set, props the shoulders on straight arms
// (a push-up). It returns the alerts and the time after the last frame.
func lieStill(d *Detector, at time.Time, dur time.Duration, hx, hy float64, arms bool) ([]Alert, time.Time) {
	var alerts []Alert
	for i := 0; i < int(dur/(100*time.Millisecond)); i++ {
		at = at.Add(100 * time.Millisecond)
		s := body(hx+float64(i%2), hy, 90, 90)
		if arms {
			sx, sy := s[pose.LeftShoulder].X, s[pose.LeftShoulder].Y
			w := pose.Keypoint{X: sx, Y: sy + 0.5*height, Score: 0.8}
			s[pose.LeftWrist], s[pose.RightWrist] = w, w
		}
		if a, ok := d.Add(at, s, s.Bounds(0.5)); ok {
			alerts = append(alerts, a)
		}
	}
	return alerts, at
}

var dawn = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func TestLyingFromTheStartIsOnTheFloor(t *testing.T) {
	d := New(DefaultConfig, nil, nil)
	alerts, _ := lieStill(d, dawn, 8*time.Second, 300, 400, false)
	if len(alerts) != 1 {
		t.Fatalf("a person lying from the first frame for 8 s: %d alerts, want 1", len(alerts))
	}
	a := alerts[0]
	if a.Kind != OnFloor {
		t.Errorf("kind %v, want OnFloor", a.Kind)
	}
	if lay := a.At.Sub(a.Start); lay < DefaultConfig.FloorTime || lay > DefaultConfig.FloorTime+200*time.Millisecond {
		t.Errorf("alerted after %v of lying, want %v", lay, DefaultConfig.FloorTime)
	}
	if len(a.Reasons) == 0 || !strings.Contains(a.Reasons[0], "on the floor") {
		t.Errorf("reasons %q, want the floor rule named first", a.Reasons)
	}
}

func TestLyingInAZoneIsNotOnTheFloor(t *testing.T) {
	zone := [][]image.Point{{{200, 350}, {400, 350}, {400, 450}, {200, 450}}}
	for _, tt := range []struct {
		name         string
		beds, chairs [][]image.Point
	}{{"bed", zone, nil}, {"chair", nil, zone}} {
		alerts, _ := lieStill(New(DefaultConfig, tt.beds, tt.chairs), dawn, 20*time.Second, 300, 400, false)
		if len(alerts) != 0 {
			t.Errorf("lying in a %s zone for 20 s: %d alerts, want none", tt.name, len(alerts))
		}
	}
	// Beside the zone, the same person is on the floor.
	if alerts, _ := lieStill(New(DefaultConfig, zone, nil), dawn, 8*time.Second, 600, 400, false); len(alerts) != 1 {
		t.Errorf("lying beside a bed zone: %d alerts, want 1", len(alerts))
	}
}

func TestHeldUpOnStraightArmsIsNotLying(t *testing.T) {
	if alerts, _ := lieStill(New(DefaultConfig, nil, nil), dawn, 20*time.Second, 300, 400, true); len(alerts) != 0 {
		t.Errorf("a push-up held for 20 s: %d alerts, want none", len(alerts))
	}
}

func TestStandingUpEndsTheLie(t *testing.T) {
	d := New(DefaultConfig, nil, nil)
	alerts, at := lieStill(d, dawn, 3500*time.Millisecond, 300, 400, false)
	for range 10 {
		at = at.Add(100 * time.Millisecond)
		s := body(300, 350, 0, 0)
		if a, ok := d.Add(at, s, s.Bounds(0.5)); ok {
			alerts = append(alerts, a)
		}
	}
	more, _ := lieStill(d, at, 3500*time.Millisecond, 300, 400, false)
	// Lying down again from standing in a tenth of a second may be judged a seen fall; it must
	// not be judged on the floor.
	for _, a := range append(alerts, more...) {
		if a.Kind == OnFloor {
			t.Errorf("3.5 s lying, up for 1 s, 3.5 s lying: an on-the-floor alert at %v, want none", a.At.Sub(dawn))
		}
	}
}

func TestASeenFallIsNotAlsoOnTheFloor(t *testing.T) {
	d := New(DefaultConfig, nil, nil)
	r := play(d, walk, motion{dur: 800 * time.Millisecond, dy: 0.5 * height, torso: 90, legs: 90}, motion{dur: 10 * time.Second, torso: 90, legs: 90})
	if len(r.alerts) != 1 || r.alerts[0].Kind != Seen {
		t.Fatalf("a fall seen, then 10 s on the floor: %d alerts (%v), want one seen fall", len(r.alerts), r.alerts)
	}
}
