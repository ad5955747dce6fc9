// Package fall raises a fall alert from one track's skeletons, with rules a nurse can read:
// the hips come down fast for the person's size, the torso turns towards horizontal, and the
// person stays down; never inside a bed zone, and not twice within a cooldown.
package fall

import (
	"fmt"
	"image"
	"math"
	"time"

	"github.com/vigil-health/vigil/pipelines/pose"
)

// Config holds the rules' thresholds. Each says why it has its value.
type Config struct {
	// MinDrop is how far the hip centre must come down, in standing body heights. Sitting on a
	// chair lowers the hips by about 0.25; reaching the floor by 0.4 or more.
	MinDrop float64
	// MinSpeed is how fast, on average over the descent, the hip centre must come down, in body
	// heights per second. Sitting down takes the hips down 0.3 in 1.5 to 2 s (0.15-0.2); a fall
	// takes them 0.4-0.6 down in 0.5-1.5 s (0.3 and more).
	MinSpeed float64
	// DeepDrop is a drop that counts as being on the floor even when the torso still looks
	// upright (a person sitting down hard on the floor).
	DeepDrop float64
	// DescentWindow bounds how long the coming down may take: falls take 0.5 to 1.5 s.
	DescentWindow time.Duration
	// TorsoAngle is the tilt from vertical, in degrees, that counts as lying: a bent-over
	// person stays under 60 while the hips stay up; a person on the floor is over it.
	TorsoAngle float64
	// Confirm is how long the person must stay down before the alert: long enough to skip a
	// stumble, short enough to alert within 2 s of the fall.
	Confirm time.Duration
	// Cooldown keeps one fall from raising a stream of alerts.
	Cooldown time.Duration
	// BoxShrink is the most the person's box may keep of its standing height for a fall: lying
	// or sitting on the floor, a box is half as high or less; walking, bending or crouching
	// keeps 0.8 or more.
	BoxShrink float64
	// MinScore is the least keypoint confidence a frame needs to count.
	MinScore float64
	// MinHeight is the least standing body height, in pixels, worth judging: on a person
	// smaller than this, far from the camera, the keypoints jump by a good part of the body's
	// height from frame to frame.
	MinHeight float64
}

// DefaultConfig are the thresholds the tests measure.
var DefaultConfig = Config{MinDrop: 0.35, MinSpeed: 0.25, DeepDrop: 0.45, DescentWindow: 1500 * time.Millisecond, TorsoAngle: 60,
	Confirm: time.Second, Cooldown: 30 * time.Second, BoxShrink: 0.75, MinScore: 0.2, MinHeight: 60}

// Alert is a confirmed fall.
type Alert struct {
	// Start is when the hips began to come down, Down when the person reached the ground, At
	// when the alert was confirmed.
	Start, Down, At time.Time
	// Reasons are the rules that fired, in plain words.
	Reasons    []string
	Confidence float64
	// Drop is how far the hips came down (body heights) at Speed (body heights per second);
	// Depth how far below standing they were at the confirmation, with the torso at Torso
	// degrees from vertical (NaN when the torso was not seen).
	Drop, Speed, Depth, Torso float64
}

type sample struct {
	t      time.Time
	hipX   float64 // hip centre, pixels
	hipY   float64
	lift   float64 // how high the hips are above the feet (the floor), pixels
	height float64 // shoulders to ankles, pixels; 0 when the ankles are not seen
	angle  float64 // torso tilt from vertical, degrees
}

// Detector follows one track.
type Detector struct {
	cfg Config
	// Beds are polygons (image pixels) where lying down is normal.
	Beds    [][]image.Point
	samples []sample
	// standing is the body height while upright, the scale of every rule; standingBox the
	// height of the person's box then.
	standing    float64
	standingBox float64
	downSince   time.Time
	downInfo    pending
	lastAlert   time.Time
	// floor is the image row of the feet, last seen.
	floor float64
	// fallen is the last fall while the person is still down; rise how long they took to get
	// up after the last one, when rose.
	fallen pending
	rise   time.Duration
	rose   bool
}

// pending is a descent waiting for confirmation, with the hips' height above the floor it
// started from.
type pending struct {
	Alert
	top float64
}

// New returns a detector for one track.
func New(cfg Config, beds [][]image.Point) *Detector { return &Detector{cfg: cfg, Beds: beds} }

// Add records a frame: the person's skeleton and box. It returns an alert when a fall is
// confirmed on it.
func (d *Detector) Add(t time.Time, s pose.Skeleton, box image.Rectangle) (Alert, bool) {
	cur, ok := d.measure(t, s, box)
	if ok {
		d.samples = append(d.samples, cur)
		for len(d.samples) > 0 && t.Sub(d.samples[0].t) > 4*time.Second {
			d.samples = d.samples[1:]
		}
	}
	if ok && cur.angle < 25 && cur.height > 0 && !box.Empty() {
		follow(&d.standingBox, float64(box.Dy()))
	}
	if d.standing < d.cfg.MinHeight || d.standing == 0 {
		return Alert{}, false
	}
	// After a fall: up again when the hips are back near standing height, the torso upright.
	if !d.fallen.Down.IsZero() && ok && cur.angle < 30 && (d.fallen.top-cur.lift)/d.standing < 0.15 {
		d.rise, d.rose = t.Sub(d.fallen.Down), true
		d.fallen = pending{}
	}
	if d.downSince.IsZero() {
		// The coming down must be seen in the skeleton itself.
		if !ok {
			return Alert{}, false
		}
		if a, ok := d.descent(cur); ok {
			d.downSince, d.downInfo = t, a
		}
		return Alert{}, false
	}
	// Down: the person must stay down, lying (torso towards horizontal) or deep. A person on
	// the floor is often half out of view or hidden by furniture, with no hips to see: then the
	// middle of their box stands in for the hips (it is at hip height on a standing person).
	if !ok {
		if box.Empty() {
			return Alert{}, false
		}
		cy := float64(box.Min.Y+box.Max.Y) / 2
		cur = sample{t: t, hipX: float64(box.Min.X+box.Max.X) / 2, hipY: cy, lift: d.floor - cy, angle: math.NaN()}
	}
	ref := d.downInfo
	drop := (ref.top - cur.lift) / d.standing
	if drop < d.cfg.MinDrop*0.8 {
		if ok {
			d.downSince = time.Time{} // got up again: a stumble, or a crouch
		}
		return Alert{}, false // a box says too little to cancel: legs in the air make it tall
	}
	if t.Sub(d.downSince) < d.cfg.Confirm {
		return Alert{}, false
	}
	if t.Sub(d.downSince) > d.cfg.Confirm+d.cfg.DescentWindow {
		d.downSince = time.Time{} // came down, but never lay down nor went deep: not a fall
		return Alert{}, false
	}
	lying := cur.angle >= d.cfg.TorsoAngle // false when the torso was not seen
	if !lying && drop < d.cfg.DeepDrop {
		return Alert{}, false // down, but sitting or kneeling upright: wait for more
	}
	// A second witness: the detector's box of a person down is much lower than standing.
	// Keypoints alone go wrong where people overlap (hips from one, ankles from another).
	shrunk := float64(box.Dy()) / d.standingBox
	if box.Empty() || d.standingBox == 0 || shrunk > d.cfg.BoxShrink {
		return Alert{}, false
	}
	d.downSince = time.Time{}
	ref.Depth, ref.Torso = drop, cur.angle
	if lying {
		ref.Reasons = append(ref.Reasons, fmt.Sprintf("torso at %.0f degrees from vertical", cur.angle))
	} else {
		ref.Reasons = append(ref.Reasons, fmt.Sprintf("hips %.2f body heights below standing", drop))
	}
	ref.Reasons = append(ref.Reasons, fmt.Sprintf("the person's box %.0f%% of its standing height", 100*shrunk))
	if inAny(d.Beds, image.Pt(int(cur.hipX), int(cur.hipY))) {
		return Alert{}, false // lying in bed is what beds are for
	}
	if !d.lastAlert.IsZero() && t.Sub(d.lastAlert) < d.cfg.Cooldown {
		return Alert{}, false
	}
	d.lastAlert = t
	ref.At = t
	d.fallen = ref
	ref.Reasons = append(ref.Reasons, fmt.Sprintf("still down %.1f s later", t.Sub(ref.Down).Seconds()))
	return ref.Alert, true
}

// Pending says whether a descent is waiting for confirmation, and where the hips were last
// seen: a person who has just come down is often lost by the detector and found again as
// someone new, who should then be checked against this descent.
func (d *Detector) Pending() (image.Point, bool) {
	if d.downSince.IsZero() || len(d.samples) == 0 {
		return image.Point{}, false
	}
	last := d.samples[len(d.samples)-1]
	return image.Pt(int(last.hipX), int(last.hipY)), true
}

// Rise is how long the person took to get up after their last fall, from reaching the floor to
// standing, and whether they have got up since one.
func (d *Detector) Rise() (time.Duration, bool) { return d.rise, d.rose }

// Standing is the person's standing body height in pixels, 0 until seen upright.
func (d *Detector) Standing() float64 { return d.standing }

// measure turns a skeleton into a sample: the hips are needed, the shoulders for the torso
// angle and the ankles for the height.
func (d *Detector) measure(t time.Time, s pose.Skeleton, box image.Rectangle) (sample, bool) {
	hx, hy, okH := s.Mean(d.cfg.MinScore, pose.LeftHip, pose.RightHip)
	if !okH {
		return sample{}, false
	}
	// The floor is where the feet are, or, unseen, the bottom of the person's box: hips
	// measured from it do not come down when a person walks towards the camera, only when
	// they come down to the floor.
	if _, ay, ok := s.Mean(d.cfg.MinScore, pose.LeftAnkle, pose.RightAnkle); ok {
		d.floor = ay
	} else if !box.Empty() {
		d.floor = float64(box.Max.Y)
	}
	if d.floor == 0 {
		return sample{}, false
	}
	cur := sample{t: t, hipY: hy, hipX: hx, lift: d.floor - hy, angle: math.NaN()}
	sx, sy, okS := s.Mean(d.cfg.MinScore, pose.LeftShoulder, pose.RightShoulder)
	if !okS {
		return cur, true
	}
	cur.angle = math.Abs(math.Atan2(hx-sx, hy-sy)) * 180 / math.Pi // 0 upright, 90 lying
	if cur.angle > 90 {
		cur.angle = 180 - cur.angle
	}
	if _, ay, ok := s.Mean(d.cfg.MinScore, pose.LeftAnkle, pose.RightAnkle); ok && ay > sy {
		cur.height = ay - sy
	}
	// The standing height follows the person while upright (tilt under 25 degrees).
	if cur.angle < 25 && cur.height > 0 {
		follow(&d.standing, cur.height)
	}
	return cur, true
}

// follow moves a running average a tenth of the way to v, or starts it at v.
func follow(avg *float64, v float64) {
	if *avg == 0 {
		*avg = v
		return
	}
	*avg = 0.9**avg + 0.1*v
}

// freeFall is half of gravity's acceleration in body heights (shoulders to ankles, about
// 1.4 m) per second squared: a body in free fall drops freeFall x t x t body heights in t s.
const freeFall = 9.81 / 2 / 1.4

// descent looks back over the descent window for a deep enough drop of the hips, made fast
// enough: from the last moment the hips were at their highest to now.
func (d *Detector) descent(cur sample) (pending, bool) {
	inWindow := func(s sample) bool { return cur.t.Sub(s.t) <= d.cfg.DescentWindow && s.t.Before(cur.t) }
	// The highest the hips were in the window...
	top, found := sample{}, false
	for _, s := range d.samples {
		if inWindow(s) && (!found || s.lift > top.lift) {
			top, found = s, true
		}
	}
	if !found {
		return pending{}, false
	}
	// ...and the last moment they were still up there: the descent starts then.
	for _, s := range d.samples {
		if inWindow(s) && s.lift >= top.lift-0.05*d.standing && s.t.After(top.t) {
			top.t = s.t
		}
	}
	drop := (top.lift - cur.lift) / d.standing
	dt := cur.t.Sub(top.t).Seconds()
	if drop < d.cfg.MinDrop || dt <= 0 {
		return pending{}, false
	}
	speed := drop / dt
	if speed < d.cfg.MinSpeed {
		return pending{}, false
	}
	// Nothing falls faster than gravity: hips 0.35 body heights (half a metre) down take a
	// third of a second in free fall. Twice as fast is the keypoint model jumping (to another
	// person, or along a leg), not a body.
	if drop > 2*freeFall*dt*dt {
		return pending{}, false
	}
	conf := math.Min(1, drop/0.6) * math.Min(1, speed/1.0)
	return pending{Alert: Alert{Start: top.t, Down: cur.t, Confidence: conf, Drop: drop, Speed: speed, Reasons: []string{
		fmt.Sprintf("hips came down %.2f body heights in %.1f s (%.2f body heights/s)", drop, dt, speed),
	}}, top: top.lift}, true
}

// inAny says whether p lies in one of the polygons.
func inAny(polys [][]image.Point, p image.Point) bool {
	for _, poly := range polys {
		in := false
		for i, j := 0, len(poly)-1; i < len(poly); j, i = i, i+1 {
			a, b := poly[i], poly[j]
			if (a.Y > p.Y) != (b.Y > p.Y) && float64(p.X) < float64(b.X-a.X)*float64(p.Y-a.Y)/float64(b.Y-a.Y)+float64(a.X) {
				in = !in
			}
		}
		if in {
			return true
		}
	}
	return false
}
