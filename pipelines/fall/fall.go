// Package fall raises a fall alert from one track's skeletons, with rules a nurse can read:
// the hips come down fast for the person's size, the person then lies (torso towards
// horizontal, or head down towards the camera) or is low and wide on the floor, and stays
// down; never inside a bed zone, and not twice within a cooldown. A second rule needs no
// descent: a person seen lying outside every bed and chair zone for FloorTime is on the floor
// (they fell out of view, the camera started late, someone stood in front of the fall), and
// raises an alert of its own kind.
//
// Every length is in standing body heights (shoulders to ankles, or, with the feet out of
// view, 2.7 torso lengths) and every duration in seconds, so that the rules do not depend on
// the camera's distance, resolution or frame rate.
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
	// DeepDrop is a drop that counts as being on the floor when the box has shrunk too, even
	// with the torso upright (a person sitting down hard on the floor).
	DeepDrop float64
	// DescentWindow bounds how long the coming down may take: falls take 0.5 to 1.5 s.
	DescentWindow time.Duration
	// TorsoAngle is the tilt from upright, in degrees, that counts as lying once the hips are
	// down: a bent-over person tilts as far but keeps the hips up. A person lying with the
	// head towards the camera has the shoulders below the hips in the image: up to 180.
	TorsoAngle float64
	// WideBox is the width-to-height ratio of a person's box that counts as lying across the
	// view: standing or walking people are 0.25-0.5, sitting or crouching 0.5-1.
	WideBox float64
	// BoxShrink is the most the person's box may keep of its standing height, with a deep
	// drop and an upright torso, for the person to count as down: sitting on the floor, a box
	// is half as high or less; sitting on a chair or crouching keeps 0.6-0.8.
	BoxShrink float64
	// Confirm is how long the person must stay down before the alert: long enough to skip a
	// stumble or a bend, short enough to alert within 2 s of the fall.
	Confirm time.Duration
	// DownShare is the least share of the frames the person is seen on, after coming down,
	// that must show them down: the keypoints of a person on the floor are often poor.
	DownShare float64
	// Patience is how long after Confirm a descent may wait for enough frames showing the
	// person down (a person on the floor is often lost by the detector) before it is dropped.
	Patience time.Duration
	// Cooldown keeps one fall from raising a stream of alerts.
	Cooldown time.Duration
	// MinScore is the least keypoint confidence a keypoint needs to count.
	MinScore float64
	// MinHeight is the least standing body height, in pixels, worth judging: on a person
	// smaller than this, far from the camera, the keypoints jump by a good part of the body's
	// height from frame to frame.
	MinHeight float64
	// Settle is the time constant of the standing references (body height, box height): they
	// follow a person who walks nearer or further in about this time.
	Settle time.Duration
	// FloorTime is how long a person must be seen lying outside every bed and chair zone, with
	// no descent seen, to raise an "on the floor" alert. On a ward nobody lies on the floor on
	// purpose for long: a person bending to pick something up or look under a bed is up again
	// within seconds, while a person who fell out of view is still there; 5 s tells the two
	// apart and still reaches a nurse within seconds of the first sight of them.
	FloorTime time.Duration
}

// Kind says how an alert was reached.
type Kind int

const (
	// Seen is a fall whose descent was seen.
	Seen Kind = iota
	// OnFloor is a person seen lying on the floor for FloorTime, the descent not seen.
	OnFloor
)

// DefaultConfig holds thresholds chosen from the physics and the proportions of the human
// body given beside each field, and checked on clips of one camera before being measured on
// the other (docs/FALLS.md).
var DefaultConfig = Config{MinDrop: 0.35, MinSpeed: 0.25, DeepDrop: 0.45, DescentWindow: 1500 * time.Millisecond, TorsoAngle: 60,
	WideBox: 1.2, BoxShrink: 0.6, Confirm: time.Second, DownShare: 0.5, Patience: 1500 * time.Millisecond,
	Cooldown: 30 * time.Second, MinScore: 0.2, MinHeight: 50, Settle: 500 * time.Millisecond, FloorTime: 5 * time.Second}

// Alert is a confirmed fall.
type Alert struct {
	Kind Kind
	// Start is when the hips began to come down, Down when the person reached the ground, At
	// when the alert was confirmed. For OnFloor, Start and Down are when the person was first
	// seen lying.
	Start, Down, At time.Time
	// Reasons are the rules that fired, in plain words.
	Reasons []string
	// Strength is a heuristic in 0..1 of how clearly the rules fired (how deep and fast the
	// descent, how many frames showed the person down): not a probability, and not a model's
	// score.
	Strength float64
	// Drop is how far the hips came down (body heights) at Speed (body heights per second);
	// Depth how far below standing they were at the confirmation, with the torso at Torso
	// degrees from upright (NaN when the torso was not seen).
	Drop, Speed, Depth, Torso float64
}

type sample struct {
	t          time.Time
	hipX, hipY float64 // hip centre, or the middle of the box when the hips are unseen
	hips       bool    // the hips themselves were seen
	lift       float64 // how high the hips are above the floor (the feet), pixels; NaN unknown
	height     float64 // a standing-height estimate from this frame, pixels; 0 when none
	tilt       float64 // torso from upright, degrees, 0..180; NaN when unseen
	aspect     float64 // the box's width over its height; NaN without a box
	boxH       float64
	lying      bool   // the pose of a person lying, whatever came before (see lying)
	lyingWhy   string // why, in words
}

// Detector follows one track.
type Detector struct {
	cfg Config
	// Beds are polygons (image pixels) where lying down is normal, Chairs where sitting is.
	Beds, Chairs [][]image.Point
	samples      []sample
	// lie is the person lying on the floor now, before FloorTime has passed; nil when not.
	lie *lie
	// standing is the body height while upright, the scale of every rule; standingBox the
	// height of the person's box then; lastUpright when they were last seen upright.
	standing, standingBox float64
	lastUpright           time.Time
	// lastSeen is when the person was last seen, with their hips (or the middle of the box)
	// at lastAt.
	lastSeen time.Time
	lastAt   image.Point
	// pend is a descent waiting for confirmation.
	pend      *pending
	lastAlert time.Time
	// fallen is the last fall while the person is still down; rise how long they took to get
	// up after the last one, when rose.
	fallen *pending
	rise   time.Duration
	rose   bool
}

// pending is a descent waiting for confirmation: where the hips started from, and the frames
// seen since the person came down.
type pending struct {
	Alert
	top, topY  float64 // the hips' height above the floor, and their image row, at the start
	seen, down int
	last       sample // the last frame seen down
	why        string // what showed the person down on it
}

// lie is a person seen lying outside the zones: since when, on how many of the frames seen,
// and the last such frame.
type lie struct {
	start      time.Time
	seen, down int
	last       sample
}

// maxSamples bounds a track's history: four seconds at 120 frames/s.
const maxSamples = 480

// New returns a detector for one track.
func New(cfg Config, beds, chairs [][]image.Point) *Detector {
	return &Detector{cfg: cfg, Beds: beds, Chairs: chairs}
}

// Add records a frame the person was seen on: their skeleton and box. It returns an alert
// when a fall is confirmed on it.
func (d *Detector) Add(t time.Time, s pose.Skeleton, box image.Rectangle) (Alert, bool) {
	cur, ok := d.measure(t, s, box)
	if !ok {
		return d.Tick(t)
	}
	d.lastSeen, d.lastAt = t, image.Pt(int(cur.hipX), int(cur.hipY))
	d.follow(cur)
	if cur.hips {
		d.samples = append(d.samples, cur)
		// Four seconds of history, and never more than maxSamples whatever the clock says.
		for len(d.samples) > 0 && (t.Sub(d.samples[0].t) > 4*time.Second || len(d.samples) > maxSamples) {
			d.samples = d.samples[1:]
		}
	}
	if d.standing < d.cfg.MinHeight {
		return d.Tick(t)
	}
	if d.fallen != nil && d.up(d.fallen, cur) {
		d.rise, d.rose = t.Sub(d.fallen.Down), true
		d.fallen = nil
	}
	if d.pend == nil {
		// The coming down must be seen in the skeleton itself.
		if cur.hips {
			d.pend = d.descent(cur)
		}
		return d.onFloor(t)
	}
	if d.up(d.pend, cur) {
		d.pend = nil // up again: a stumble, a crouch or a bend
		return d.onFloor(t)
	}
	why, down := d.down(d.pend, cur)
	if down || d.pend.down > 0 {
		// Counted from the first frame showing the person down: the descent is seen before
		// the person reaches the floor.
		d.pend.seen++
	}
	if down {
		d.pend.down++
		d.pend.last, d.pend.why = cur, why
	}
	return d.Tick(t)
}

// Tick judges a waiting descent, and a person lying on the floor, at t, whether or not the
// person was seen: call it on every frame the person was not. It returns an alert when a
// fall is confirmed.
func (d *Detector) Tick(t time.Time) (Alert, bool) {
	if a, ok := d.descended(t); ok {
		return a, true
	}
	return d.onFloor(t)
}

// descended judges a waiting descent at t.
func (d *Detector) descended(t time.Time) (Alert, bool) {
	p := d.pend
	if p == nil || t.Sub(p.Down) < d.cfg.Confirm {
		return Alert{}, false
	}
	if p.down < 2 || float64(p.down) < d.cfg.DownShare*float64(p.seen) {
		if t.Sub(p.Down) > d.cfg.Confirm+d.cfg.Patience {
			d.pend = nil // came down, but was never seen lying or low: not a fall
		}
		return Alert{}, false
	}
	d.pend = nil
	if inAny(d.Beds, image.Pt(int(p.last.hipX), int(p.last.hipY))) {
		return Alert{}, false // lying in bed is what beds are for
	}
	if !d.lastAlert.IsZero() && t.Sub(d.lastAlert) < d.cfg.Cooldown {
		return Alert{}, false
	}
	d.lastAlert, d.lie = t, nil
	a := p.Alert
	a.At = t
	a.Depth, a.Torso = d.drop(p, p.last), p.last.tilt
	a.Reasons = append(a.Reasons, p.why,
		fmt.Sprintf("seen down on %d of %d frames, still down %.1f s later", p.down, p.seen, t.Sub(p.Down).Seconds()))
	a.Strength *= float64(p.down) / float64(max(p.seen, 1))
	d.fallen = p
	return a, true
}

// follow keeps the record of a person lying outside the zones: a frame of them lying adds to
// it, a frame of them upright ends it, and so does a frame with them lying in a bed or a
// chair zone, or a long time unseen.
func (d *Detector) follow(cur sample) {
	if d.lie != nil && cur.t.Sub(d.lie.last.t) > d.cfg.FloorTime {
		d.lie = nil // lost for long: what comes now is not the same lie
	}
	at := image.Pt(int(cur.hipX), int(cur.hipY))
	switch {
	case cur.lying && !inAny(d.Beds, at) && !inAny(d.Chairs, at):
		if d.lie == nil {
			d.lie = &lie{start: cur.t}
		}
		d.lie.seen++
		d.lie.down++
		d.lie.last = cur
	case d.lie == nil:
	case d.upright(cur) || cur.lying || cur.lyingWhy == "propped":
		// Up again, or held up on straight arms (getting up, or a push-up), or lying in a bed
		// or a chair: the lie, if any, starts again.
		d.lie = nil
	default:
		d.lie.seen++
	}
}

// onFloor raises an "on the floor" alert when the person has been seen lying outside the
// zones for FloorTime, on at least DownShare of the frames seen since, and lately: no descent
// need have been seen.
func (d *Detector) onFloor(t time.Time) (Alert, bool) {
	l := d.lie
	if l == nil || d.cfg.FloorTime <= 0 || t.Sub(l.start) < d.cfg.FloorTime || t.Sub(l.last.t) > d.cfg.Confirm {
		return Alert{}, false
	}
	if l.down < 3 || float64(l.down) < d.cfg.DownShare*float64(l.seen) {
		return Alert{}, false
	}
	if !d.lastAlert.IsZero() && t.Sub(d.lastAlert) < d.cfg.Cooldown {
		return Alert{}, false
	}
	d.lastAlert, d.lie = t, nil
	a := Alert{Kind: OnFloor, Start: l.start, Down: l.start, At: t, Drop: math.NaN(), Speed: math.NaN(), Depth: math.NaN(),
		Torso: l.last.tilt, Strength: float64(l.down) / float64(max(l.seen, 1))}
	a.Reasons = []string{
		fmt.Sprintf("seen lying on the floor for %.1f s, outside any bed or chair zone (the rule: %.0f s), with no fall seen", t.Sub(l.start).Seconds(), d.cfg.FloorTime.Seconds()),
		l.last.lyingWhy,
		fmt.Sprintf("seen lying on %d of %d frames", l.down, l.seen),
	}
	return a, true
}

// upright says whether a frame shows the person upright: torso upright, box narrow, feet
// well below the hips.
func (d *Detector) upright(cur sample) bool {
	return cur.tilt < 30 && (math.IsNaN(cur.aspect) || cur.aspect < 0.8) && cur.height > 0
}

// drop is how far below the descent's start the hips are, in body heights: measured from the
// floor when the feet were seen at the start and now, else in the image.
func (d *Detector) drop(p *pending, cur sample) float64 {
	if cur.hips && !math.IsNaN(p.top) && !math.IsNaN(cur.lift) {
		return (p.top - cur.lift) / d.standing
	}
	return (cur.hipY - p.topY) / d.standing
}

// down says whether a frame shows the person down after a descent, and why: the hips still
// low, and lying, or across the view, or sitting deep with the box shrunk.
func (d *Detector) down(p *pending, cur sample) (string, bool) {
	drop := d.drop(p, cur)
	if drop < d.cfg.MinDrop*0.8 {
		return "", false
	}
	switch {
	case cur.tilt >= d.cfg.TorsoAngle:
		return fmt.Sprintf("torso at %.0f degrees from upright, hips %.2f body heights down", cur.tilt, drop), true
	case cur.aspect >= d.cfg.WideBox:
		return fmt.Sprintf("the person's box %.1f times wider than high, hips %.2f body heights down", cur.aspect, drop), true
	case drop >= d.cfg.DeepDrop && d.standingBox > 0 && cur.boxH <= d.cfg.BoxShrink*d.standingBox:
		return fmt.Sprintf("hips %.2f body heights down, the person's box %.0f%% of its standing height", drop, 100*cur.boxH/d.standingBox), true
	}
	return "", false
}

// up says whether a frame shows the person up again after a descent: torso upright and hips
// back near where they started.
func (d *Detector) up(p *pending, cur sample) bool {
	return cur.hips && cur.tilt < 30 && d.drop(p, cur) < d.cfg.MinDrop*0.4
}

// Pending says whether a descent is waiting for confirmation, and where the hips were last
// seen: a person who has just come down is often lost by the detector and found again as
// someone new, who should then be checked against this descent.
func (d *Detector) Pending() (image.Point, bool) {
	if d.pend == nil || len(d.samples) == 0 {
		return image.Point{}, false
	}
	last := d.samples[len(d.samples)-1]
	if d.pend.down > 0 {
		last = d.pend.last
	}
	return image.Pt(int(last.hipX), int(last.hipY)), true
}

// LastSeen is when the person was last seen, and where their hips (or the middle of their
// box) were then; zero before the first frame.
func (d *Detector) LastSeen() (time.Time, image.Point) { return d.lastSeen, d.lastAt }

// Rise is how long the person took to get up after their last fall, from reaching the floor to
// standing, and whether they have got up since one.
func (d *Detector) Rise() (time.Duration, bool) { return d.rise, d.rose }

// Standing is the person's standing body height in pixels, 0 until seen upright.
func (d *Detector) Standing() float64 { return d.standing }

// measure turns a skeleton and box into a sample: the hips (or, unseen, the middle of the
// box), the shoulders for the torso's tilt and the ankles for the floor and the height.
func (d *Detector) measure(t time.Time, s pose.Skeleton, box image.Rectangle) (sample, bool) {
	cur := sample{t: t, lift: math.NaN(), tilt: math.NaN(), aspect: math.NaN()}
	if !box.Empty() {
		cur.aspect, cur.boxH = float64(box.Dx())/float64(box.Dy()), float64(box.Dy())
	}
	hx, hy, okH := s.Mean(d.cfg.MinScore, pose.LeftHip, pose.RightHip)
	switch {
	case okH:
		cur.hipX, cur.hipY, cur.hips = hx, hy, true
	case !box.Empty():
		cur.hipX, cur.hipY = float64(box.Min.X+box.Max.X)/2, float64(box.Min.Y+box.Max.Y)/2
	default:
		return sample{}, false
	}
	// The floor is where the feet are: hips measured from it do not come down when a person
	// walks towards the camera, only when they come down to the floor.
	_, ay, okA := s.Mean(d.cfg.MinScore, pose.LeftAnkle, pose.RightAnkle)
	if okA && cur.hips {
		cur.lift = ay - hy
	}
	sx, sy, okS := s.Mean(d.cfg.MinScore, pose.LeftShoulder, pose.RightShoulder)
	if okS && okH {
		// 0 upright, 90 lying across the view, 180 head down (lying towards the camera).
		cur.tilt = math.Atan2(math.Abs(hx-sx), hy-sy) * 180 / math.Pi
		torso := math.Hypot(hx-sx, hy-sy)
		switch {
		case okA && ay > hy:
			cur.height = ay - sy
		case torso > 0:
			// Feet out of view: shoulders to ankles is about 2.7 shoulder-to-hip lengths.
			cur.height = 2.7 * torso
		}
	}
	cur.lying, cur.lyingWhy = d.lying(s, box, cur)
	// The standing references follow the person while upright: torso upright, box narrow, and
	// not much lower than standing (a person kneeling or sitting upright is lower; one walking
	// away from the camera shrinks by a few percent a frame).
	if cur.tilt < 25 && cur.height > 0 && (math.IsNaN(cur.aspect) || cur.aspect < 0.8) && cur.height >= 0.85*d.standing {
		k := 1.0
		if !d.lastUpright.IsZero() {
			k = 1 - math.Exp(-t.Sub(d.lastUpright).Seconds()/d.cfg.Settle.Seconds())
		}
		d.standing += k * (cur.height - d.standing)
		if !box.Empty() {
			if d.standingBox == 0 {
				d.standingBox = cur.boxH
			}
			d.standingBox += k * (cur.boxH - d.standingBox)
		}
		d.lastUpright = t
	}
	return cur, true
}

// lying says whether a frame shows the pose of a person lying, whatever came before: the
// torso seen towards horizontal or head down; the legs not standing under the hips; and the
// body not held up on straight arms (a push-up, a person on all fours getting up).
func (d *Detector) lying(s pose.Skeleton, box image.Rectangle, cur sample) (bool, string) {
	long := float64(max(box.Dx(), box.Dy()))
	if box.Empty() || long < d.cfg.MinHeight {
		return false, ""
	}
	_, ay, okA := s.Mean(d.cfg.MinScore, pose.LeftAnkle, pose.RightAnkle)
	sx, sy, okS := s.Mean(d.cfg.MinScore, pose.LeftShoulder, pose.RightShoulder)
	_, wy, okW := s.Mean(d.cfg.MinScore, pose.LeftWrist, pose.RightWrist)
	torso := 0.0
	if okS && cur.hips {
		torso = math.Hypot(cur.hipX-sx, cur.hipY-sy)
	}
	if propped(cur, okS, okW, sy, wy, torso) {
		return false, "propped"
	}
	// The torso itself must be seen lying: a wide box alone is as often a desk or a bed that
	// the detector scores weakly as a person.
	if !(cur.tilt >= d.cfg.TorsoAngle) {
		return false, ""
	}
	why := fmt.Sprintf("torso at %.0f degrees from upright", cur.tilt)
	if cur.aspect >= d.cfg.WideBox {
		why += fmt.Sprintf(", the person's box %.1f times wider than high", cur.aspect)
	}
	// Standing legs: the feet far below the hips (a bend, a yoga pose, a person reaching down).
	if okA && cur.hips && ay-cur.hipY > 0.3*long {
		return false, ""
	}
	return true, why
}

// propped says whether the body is held up on straight arms: the wrists below the shoulders
// by most of an arm's length, the torso leaning over but not head down. A push-up, or a person on all fours
// getting up.
func propped(cur sample, okS, okW bool, sy, wy, torso float64) bool {
	return okW && okS && torso > 0 && wy-sy > 0.8*torso && cur.tilt >= 45 && cur.tilt < 120
}

// freeFall is half of gravity's acceleration in body heights (shoulders to ankles, about
// 1.4 m) per second squared: a body in free fall drops freeFall x t x t body heights in t s.
const freeFall = 9.81 / 2 / 1.4

// descent looks back over the descent window for a deep enough drop of the hips, made fast
// enough: from the last moment the hips were at their highest to now. Height is measured above
// the floor (the feet) when the feet were seen at both ends, so that walking towards a camera
// is no descent and falling towards it is; else in the image.
func (d *Detector) descent(cur sample) *pending {
	inWindow := func(s sample) bool { return cur.t.Sub(s.t) <= d.cfg.DescentWindow && s.t.Before(cur.t) }
	// The highest the hips were in the window (the smallest image row)...
	top, found := sample{}, false
	for _, s := range d.samples {
		if inWindow(s) && (!found || s.hipY < top.hipY) {
			top, found = s, true
		}
	}
	if !found {
		return nil
	}
	// ...and the last moment they were still up there: the descent starts then.
	for _, s := range d.samples {
		if inWindow(s) && s.hipY <= top.hipY+0.05*d.standing && s.t.After(top.t) {
			top.t = s.t
		}
	}
	p := &pending{top: top.lift, topY: top.hipY}
	drop := (cur.hipY - top.hipY) / d.standing
	if !math.IsNaN(top.lift) && !math.IsNaN(cur.lift) {
		drop = (top.lift - cur.lift) / d.standing
	}
	dt := cur.t.Sub(top.t).Seconds()
	if drop < d.cfg.MinDrop || dt <= 0 {
		return nil
	}
	speed := drop / dt
	if speed < d.cfg.MinSpeed {
		return nil
	}
	// Nothing falls faster than gravity: hips 0.35 body heights (half a metre) down take a
	// third of a second in free fall. Twice as fast is the keypoint model jumping (to another
	// person, or along a leg), not a body.
	if drop > 2*freeFall*dt*dt {
		return nil
	}
	p.Alert = Alert{Start: top.t, Down: cur.t, Drop: drop, Speed: speed,
		Strength: math.Min(1, drop/0.6) * math.Min(1, speed/1.0),
		Reasons:  []string{fmt.Sprintf("hips came down %.2f body heights in %.1f s (%.2f body heights/s)", drop, dt, speed)}}
	return p
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
