package eval

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/loopback"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/fall"
	"github.com/vigil-health/vigil/pipelines/geom"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/server"
	"github.com/vigil-health/vigil/vision"
)

// Options configure an evaluation.
type Options struct {
	Engine   inference.Config
	Entries  []models.Entry
	Resolver *models.Resolver
	// Labels are one or more labels files, each with its Dir set.
	Labels []*Labels
	// Within is how long after the end of a fall its alert may come and still count: the
	// product's promise is 2 s.
	Within time.Duration
	// Late is how long after the end of a fall an alert still belongs to it (counted as late,
	// not as a false alert).
	Late time.Duration
	// Floor is the server's floor time: an "on the floor" alert is in time within Floor and
	// Within of a fall's end. Zero takes fall.DefaultConfig's.
	Floor time.Duration
	// Quality is the JPEG quality frames are sent at, as vigil bridge sends them.
	Quality int
	// Transform, when set, changes every clip before it is sent.
	Transform *Transform
	// Detector is the person detector the ward runs; empty means the server's default.
	Detector string
	Progress func(string)
}

// Report is an evaluation's outcome.
type Report struct {
	Clips []ClipResult `json:"clips"`
	// Sources are the same figures per source of clips, and HeldOut over the sources the
	// rules were never tuned on.
	Sources []Tally `json:"sources"`
	HeldOut Tally   `json:"held_out"`
	Tally
	WithinS float64 `json:"within_s"`
	// Transform names the change made to every clip, if any.
	Transform string `json:"transform,omitempty"`
}

// Tally is the outcome over a set of clips: all of them, one source's, or the held-out
// sources'.
type Tally struct {
	// Name is the source's; Tuned says whether the rules were tuned on it.
	Name  string `json:"name,omitempty"`
	Tuned bool   `json:"tuned"`
	Clips int    `json:"clips"`
	// Falls is how many labelled falls there are, Alerted how many were alerted in time
	// (within Within of their end, or for an "on the floor" finding within the floor time
	// and Within), Late how many only later.
	Falls   int     `json:"falls"`
	Alerted int     `json:"alerted"`
	Late    int     `json:"late"`
	Recall  float64 `json:"recall"`
	// FalseAlerts are alerts that belong to no fall, anywhere; NonFallHours is the footage of
	// the clips with no fall, in hours.
	FalseAlerts        int     `json:"false_alerts"`
	NonFallHours       float64 `json:"non_fall_hours"`
	FalseAlertsPerHour float64 `json:"false_alerts_per_hour"`
	// Latency is from the end of a fall to its first alert, over the falls alerted in time.
	LatencyMedian float64 `json:"latency_median_s"`
	LatencyWorst  float64 `json:"latency_worst_s"`
}

// ClipResult is one clip's outcome.
type ClipResult struct {
	File     string     `json:"file"`
	Source   string     `json:"source"`
	Tuned    bool       `json:"tuned"`
	Activity string     `json:"activity"`
	Frames   int        `json:"frames"`
	Seconds  float64    `json:"seconds"`
	Falls    []Interval `json:"falls"`
	Alerts   []Alert    `json:"alerts"`
	// Alerted and Late count this clip's falls; FalseAlerts its alerts that belong to none.
	Alerted     int `json:"alerted"`
	Late        int `json:"late"`
	FalseAlerts int `json:"false_alerts"`
	// Latencies are from the end of each fall alerted in time to its first alert, in seconds.
	Latencies []float64 `json:"latencies_s"`
}

// Alert is a fall alert as the stream gave it.
type Alert struct {
	// At is the confirming frame's time, Down when the rules saw the person reach the ground,
	// both in seconds from the clip's start.
	At    float64 `json:"at_s"`
	Down  float64 `json:"down_s"`
	Track int64   `json:"track"`
	// Fall is the index of the labelled fall the alert belongs to, -1 for a false alert.
	Fall int `json:"fall"`
	// OnFloor says the alert is a person seen lying on the floor, not a descent seen: it is in
	// time within the floor time and Within of the fall's end.
	OnFloor bool     `json:"on_floor"`
	Reasons []string `json:"reasons"`
}

// Falls runs every labelled clip through a Ward stream on a loopback server and matches the
// alerts to the labels.
func Falls(ctx context.Context, o Options) (*Report, error) {
	if o.Labels == nil {
		return nil, errors.New("eval: no labels")
	}
	if o.Within == 0 {
		o.Within = 2 * time.Second
	}
	if o.Late == 0 {
		o.Late = 10 * time.Second
	}
	if o.Floor == 0 {
		o.Floor = fall.DefaultConfig.FloorTime
	}
	if o.Quality == 0 {
		o.Quality = 85
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	engine, err := inference.Open(o.Engine)
	if err != nil {
		return nil, err
	}
	defer engine.Close()
	ward := server.WardOptions{DetectorModel: o.Detector}
	detector := cmp.Or(o.Detector, server.DefaultDetector)
	srv, err := loopback.Start(ctx, engine, loopback.Options{Entries: o.Entries, Resolver: o.Resolver, Ward: ward,
		Load: []string{detector, "movenet-lightning"}, Roles: []auth.Role{auth.RoleWardBridge}})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	r := &Report{WithinS: o.Within.Seconds()}
	for _, l := range o.Labels {
		for _, c := range l.Clips {
			res, err := streamClip(srv.As(ctx, auth.RoleWardBridge), vigilv1.NewWardClient(srv.Conn), filepath.Join(l.Dir, c.File), c, o.Quality, o.Transform)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.File, err)
			}
			src := l.source(c)
			res.Source, res.Tuned = src.Name, src.Tuned
			res.match(o.Within.Seconds(), o.Late.Seconds(), o.Floor.Seconds())
			progress(fmt.Sprintf("%s: %d frames, %d alerts, %d of %d falls in time, %d false", c.File, res.Frames, len(res.Alerts), res.Alerted, len(res.Falls), res.FalseAlerts))
			r.Clips = append(r.Clips, res)
		}
	}
	r.total()
	return r, nil
}

// streamClip sends a clip's frames down one every-frame Ward stream, stamped at the clip's
// rate, and collects the fall alerts.
func streamClip(ctx context.Context, client vigilv1.WardClient, path string, c Clip, quality int, tr *Transform) (ClipResult, error) {
	// Empty lists, not null, in JSON.
	res := ClipResult{File: c.File, Activity: c.Activity, Falls: append([]Interval{}, c.Falls...), Alerts: []Alert{}, Latencies: []float64{}}
	v, err := vision.OpenVideo(path)
	if err != nil {
		return res, err
	}
	defer v.Close()
	fps := c.FPS
	if fps == 0 {
		fps = v.FPS()
	}
	if !(fps > 0) {
		return res, fmt.Errorf("the clip's frame rate is unknown: give fps in the labels")
	}
	every := 1
	if tr != nil && tr.Every > 1 {
		every = tr.Every
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.StreamCamera(ctx)
	if err != nil {
		return res, err
	}
	cfg := &vigilv1.StreamConfig{CameraId: "eval-" + c.File, FrameRate: fps / float64(every), Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}
	for _, z := range c.Zones {
		zone := &vigilv1.Zone{Name: z.Name, Kind: vigilv1.ZoneKind_ZONE_KIND_BED}
		if z.Kind == "chair" {
			zone.Kind = vigilv1.ZoneKind_ZONE_KIND_CHAIR
		}
		for _, pt := range z.Polygon {
			// A transform that changes the frame's geometry changes the zone's with it.
			x, y := pt[0], pt[1]
			if tr != nil && tr.Point != nil {
				x, y = tr.Point(x, y)
			}
			zone.Polygon = append(zone.Polygon, &vigilv1.Point{X: float32(x), Y: float32(y)})
		}
		cfg.Zones = append(cfg.Zones, zone)
	}
	if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: cfg}}); err != nil {
		return res, err
	}
	// Capture times as a live camera's would be: an hour ago onwards (the server refuses
	// times far from its clock).
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	at := func(seq int64) time.Time {
		return start.Add(time.Duration(float64(seq-1) / fps * float64(time.Second)))
	}
	sent := make(chan int, 1)
	sendErr := make(chan error, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for read := 0; ; read++ {
			f, err := v.Read()
			if errors.Is(err, io.EOF) {
				sendErr <- stream.CloseSend()
				return
			}
			if err == nil && (read%every != 0 || float64(read)/fps < c.From) {
				continue
			}
			if err == nil && c.Until > 0 && float64(read)/fps >= c.Until {
				sendErr <- stream.CloseSend()
				return
			}
			if err == nil && tr != nil && tr.Frame != nil {
				f, err = tr.Frame(f)
			}
			if err == nil {
				var data []byte
				if data, err = vision.EncodeJPEG(f, quality); err == nil {
					n++
					// A frame is stamped with its place in the clip: read 0 is at 0 s.
					err = stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{
						Sequence: int64(read + 1), CaptureTime: timestamppb.New(at(int64(read + 1))), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: data}}})
				}
			}
			if err != nil {
				sendErr <- err
				return
			}
		}
	}()
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, err
		}
		switch {
		case ev.GetFrameError() != nil:
			fe := ev.GetFrameError()
			return res, fmt.Errorf("frame %d: %s: %s", fe.Sequence, fe.Code, fe.Message)
		case ev.GetFrameResult() != nil:
			res.Frames++
		case ev.GetFall() != nil:
			a := ev.GetFall()
			res.Alerts = append(res.Alerts, Alert{At: seconds(at(a.LastSequence).Sub(start)), Down: seconds(a.DownTime.AsTime().Sub(start)),
				Track: a.TrackId, Fall: -1, Reasons: a.Reasons, OnFloor: a.Kind == vigilv1.FallKind_FALL_KIND_ON_FLOOR})
		}
	}
	if err := <-sendErr; err != nil {
		return res, err
	}
	if n := <-sent; n != res.Frames {
		return res, fmt.Errorf("%d frame results for %d frames", res.Frames, n)
	}
	res.Seconds = float64(res.Frames*every) / fps
	return res, nil
}

// match gives each alert the fall it belongs to: one that comes from the start of the fall
// (less half a second: labels by eye are that coarse) to within seconds of its end is in time;
// up to late seconds, late; any other alert is false.
func (res *ClipResult) match(within, late, floor float64) {
	firstAlert := make([]float64, len(res.Falls))
	for i := range firstAlert {
		firstAlert[i] = math.Inf(1)
	}
	for i := range res.Alerts {
		a := &res.Alerts[i]
		for j, f := range res.Falls {
			if a.At >= f.Start-0.5 && a.At <= f.End+late {
				a.Fall = j
				firstAlert[j] = math.Min(firstAlert[j], a.At)
				break
			}
		}
		if a.Fall < 0 {
			res.FalseAlerts++
		}
	}
	inTime := make([]bool, len(res.Falls))
	for _, a := range res.Alerts {
		if a.Fall < 0 {
			continue
		}
		limit := res.Falls[a.Fall].End + within
		if a.OnFloor {
			limit += floor
		}
		inTime[a.Fall] = inTime[a.Fall] || a.At <= limit
	}
	for j, f := range res.Falls {
		switch first := firstAlert[j]; {
		case inTime[j]:
			res.Alerted++
			res.Latencies = append(res.Latencies, geom.Round(first-f.End, 2))
		case !math.IsInf(first, 1):
			res.Late++
		}
	}
}

// seconds is a duration in seconds to the hundredth: frames are 17 ms apart at 60 frames/s.
func seconds(d time.Duration) float64 { return geom.Round(d.Seconds(), 2) }

// total sums the clips: in all, per source (in the order first met) and over the sources
// never tuned on.
func (r *Report) total() {
	r.Tally = tally(r.Clips, func(ClipResult) bool { return true })
	r.Sources = nil
	seen := map[string]bool{}
	for _, c := range r.Clips {
		if seen[c.Source] {
			continue
		}
		seen[c.Source] = true
		t := tally(r.Clips, func(o ClipResult) bool { return o.Source == c.Source })
		t.Name, t.Tuned = c.Source, c.Tuned
		r.Sources = append(r.Sources, t)
	}
	r.HeldOut = tally(r.Clips, func(c ClipResult) bool { return !c.Tuned })
	r.HeldOut.Name = "held out"
}

// tally sums the clips that keep says to.
func tally(clips []ClipResult, keep func(ClipResult) bool) Tally {
	var t Tally
	var lat []float64
	for _, c := range clips {
		if !keep(c) {
			continue
		}
		t.Clips++
		t.Falls += len(c.Falls)
		t.Alerted += c.Alerted
		t.Late += c.Late
		t.FalseAlerts += c.FalseAlerts
		lat = append(lat, c.Latencies...)
		if len(c.Falls) == 0 {
			t.NonFallHours += c.Seconds / 3600
		}
	}
	if t.Falls > 0 {
		t.Recall = float64(t.Alerted) / float64(t.Falls)
	}
	if t.NonFallHours > 0 {
		t.FalseAlertsPerHour = float64(t.FalseAlerts) / t.NonFallHours
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		t.LatencyMedian = lat[len(lat)/2]
		if len(lat)%2 == 0 {
			t.LatencyMedian = (lat[len(lat)/2-1] + lat[len(lat)/2]) / 2
		}
		t.LatencyWorst = lat[len(lat)-1]
	}
	return t
}

// WriteTable prints the report for people: a row per clip, then the totals.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%-22s %-40s %6s %-14s %-22s %s\n", "clip", "activity", "frames", "fall (s)", "alerts (s)", "outcome")
	for _, c := range r.Clips {
		var falls, alerts []string
		for _, f := range c.Falls {
			falls = append(falls, fmt.Sprintf("%.1f-%.1f", f.Start, f.End))
		}
		for _, a := range c.Alerts {
			mark := ""
			if a.OnFloor {
				mark = " floor"
			}
			alerts = append(alerts, fmt.Sprintf("%.2f%s", a.At, mark))
		}
		fmt.Fprintf(w, "%-22s %-40s %6d %-14s %-22s %s\n", c.File, clipText(c.Activity, 40), c.Frames, list(falls), list(alerts), c.outcome())
	}
	if len(r.Sources) > 1 {
		fmt.Fprintf(w, "\n%-18s %-6s %5s %-16s %4s %-13s %-16s %s\n", "source", "tuned", "clips", "falls in time", "late", "false alerts", "daily footage", "latency median, worst")
		for _, t := range append(r.Sources, r.HeldOut) {
			if t.Clips > 0 {
				t.writeRow(w)
			}
		}
	}
	fmt.Fprintf(w, "\nfalls alerted within %.0f s of their end: %d of %d (recall %.2f); late: %d\n", r.WithinS, r.Alerted, r.Falls, r.Recall, r.Late)
	fmt.Fprintf(w, "false alerts: %d over %.3f h of daily-activity footage (%.1f per hour)\n", r.FalseAlerts, r.NonFallHours, r.FalseAlertsPerHour)
	if r.Alerted > 0 {
		fmt.Fprintf(w, "latency from the end of the fall: median %.2f s, worst %.2f s\n", r.LatencyMedian, r.LatencyWorst)
	}
	if r.HeldOut.Clips > 0 {
		fmt.Fprintf(w, "on sources never tuned on: %d of %d falls in time, %d false alerts over %.1f min of daily activity\n",
			r.HeldOut.Alerted, r.HeldOut.Falls, r.HeldOut.FalseAlerts, r.HeldOut.NonFallHours*60)
	}
}

// writeRow prints one line of the per-source table.
func (t Tally) writeRow(w io.Writer) {
	tuned := "no"
	if t.Tuned {
		tuned = "yes"
	}
	if t.Name == "held out" {
		tuned = "-"
	}
	latency := "-"
	if t.Alerted > 0 {
		latency = fmt.Sprintf("%.2f s, %.2f s", t.LatencyMedian, t.LatencyWorst)
	}
	fmt.Fprintf(w, "%-18s %-6s %5d %-16s %4d %-13d %-16s %s\n", t.Name, tuned, t.Clips, fmt.Sprintf("%d of %d", t.Alerted, t.Falls), t.Late,
		t.FalseAlerts, fmt.Sprintf("%.1f min", t.NonFallHours*60), latency)
}

func (c ClipResult) outcome() string {
	var out string
	switch {
	case len(c.Falls) == 0 && c.FalseAlerts == 0:
		out = "no alert: right"
	case len(c.Falls) > 0 && c.Alerted == len(c.Falls):
		out = "alerted"
		for _, l := range c.Latencies {
			out += fmt.Sprintf(" %+.2f s", l)
		}
	case c.Late > 0:
		out = "LATE"
	case len(c.Falls) > 0:
		out = "MISSED"
	}
	if c.FalseAlerts > 0 {
		if out != "" {
			out += "; "
		}
		out += fmt.Sprintf("%d FALSE ALERT(S)", c.FalseAlerts)
	}
	return out
}

// list joins a table cell's items with commas, or says "-" for none.
func list(items []string) string {
	if len(items) == 0 {
		return "-"
	}
	return strings.Join(items, ",")
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
