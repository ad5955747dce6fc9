package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	stdpng "image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
)

// bridgeRun is what a bridge printed: frame events, people per track, gait summaries (the
// final one of each track), fall alerts and the last statistics.
type bridgeRun struct {
	frames int
	tracks map[int64]int
	final  map[int64]*bridgeGait
	falls  []*bridgeFall
	stats  *bridgeStats
}

func bridgeEvents(t *testing.T, out string) bridgeRun {
	t.Helper()
	r := bridgeRun{tracks: map[int64]int{}, final: map[int64]*bridgeGait{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev bridgeEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		switch ev.Type {
		case "frame":
			r.frames++
			for _, tr := range ev.Tracks {
				r.tracks[tr.ID]++
			}
		case "gait":
			if ev.Gait.Final {
				r.final[ev.Gait.TrackID] = ev.Gait
			}
		case "fall":
			r.falls = append(r.falls, ev.Fall)
		case "stats":
			r.stats = ev.Stats
		}
	}
	return r
}

// TestBridgeStreamsTheWalkersClip sends the whole walkers clip through `vigil bridge --json`.
// The clip is PETS 2009 S2.L1 view 001, filmed at about 7 frames/s though its header says 10
// (the PETS 2009 camera table: Axis 223M, 768x576, ~7 fps); --fps 7 times it as filmed.
//
// At least 4 people are followed for 3 s or more; the likely ID switches are counted and
// reported; every track with a gait of at least 6 steps walks at 80 to 140 steps/min, and its
// gait is in the review queue; there is no fall alert (the false-alarm test).
func TestBridgeStreamsTheWalkersClip(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "ward-bridge", "lobby-bridge")
	out, errOut, code := cli(t, "--server", d.grpc, "--token", token, "bridge", "--json", "--camera", "lobby",
		"--fps", "7", "--source", testenv.Shared(t, "video/walkers-vtest.avi"))
	if code != 0 {
		t.Fatalf("bridge: exit %d: %s", code, errOut)
	}
	r := bridgeEvents(t, out)
	if r.frames != 795 || r.stats == nil || r.stats.Processed != 795 || r.stats.Dropped != 0 {
		t.Fatalf("got %d frame events and stats %+v; want all 795 processed, none dropped", r.frames, r.stats)
	}
	followed := 0
	for _, n := range r.tracks {
		if n >= 21 {
			followed++
		}
	}
	t.Logf("%d track IDs, %d followed for 3 s or more; %d likely ID switches", len(r.tracks), followed, r.stats.Switches)
	if followed < 4 {
		t.Errorf("%d people followed for 3 s or more, want at least 4", followed)
	}
	if r.stats.Started != int64(len(r.tracks)) {
		t.Errorf("the stats say %d tracks started, the frames show %d", r.stats.Started, len(r.tracks))
	}
	for _, f := range r.falls {
		t.Errorf("fall alert on a clip with no fall: %+v", f)
	}
	if len(r.final) < 4 {
		t.Errorf("%d tracks with a final gait of 6 steps or more, want at least 4", len(r.final))
	}
	for id, g := range r.final {
		t.Logf("track %d (%d frames): %d steps, %.0f steps/min, step time %.2f s (CV %.2f), %.2f body heights/s, sway %.3f, finding %s",
			id, r.tracks[id], g.Steps, g.Cadence, g.StepTime, g.StepTimeCV, g.Speed, g.Sway, g.FindingID)
		if g.Cadence < 80 || g.Cadence > 140 {
			t.Errorf("track %d: cadence %.0f steps/min over %d steps, want 80 to 140", id, g.Cadence, g.Steps)
		}
		if g.FindingID == "" || len(g.Risk) < 3 {
			t.Errorf("track %d: final gait with finding %q and %d risk indicators, want a stored finding and 3", id, g.FindingID, len(g.Risk))
		}
	}
	// The gait findings are in the review queue, under the camera, with their evidence.
	list, errOut, code := cli(t, "--server", d.grpc, "--token", addToken(t, d.dataDir, "reviewer", "dr-gait"), "review", "list", "--json", "--camera", "lobby", "--limit", "200")
	if code != 0 {
		t.Fatalf("review list: exit %d: %s", code, errOut)
	}
	var page struct{ Findings []findingJSON }
	if err := json.Unmarshal([]byte(list), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Findings) != len(r.final) {
		t.Errorf("%d findings for camera lobby, want one per final gait (%d)", len(page.Findings), len(r.final))
	}
	for _, f := range page.Findings {
		if f.Pipeline != "gait" && f.Pipeline != "fall-risk" || f.Priority > 1 || f.Source.CameraID != "lobby" || len(f.Evidence) < 3 {
			t.Errorf("finding %+v: want a gait or fall-risk finding of priority 0 or 1 from camera lobby, with its evidence", f)
		}
	}
}

// TestBridgeRaisesAFallFinding streams a real fall (UP-Fall A4, falls sideways): the bridge
// prints a fall alert with its frames; the finding heads the worklist at the top priority,
// with the keyframe drawn (the person's box and skeleton) and the rules as evidence.
func TestBridgeRaisesAFallFinding(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "ward-bridge", "office-bridge")
	out, errOut, code := cli(t, "--server", d.grpc, "--token", token, "bridge", "--json", "--camera", "office",
		"--source", testenv.Shared(t, "video/falls-upfall/A4_S1_T1_Cam1.mp4"))
	if code != 0 {
		t.Fatalf("bridge: exit %d: %s", code, errOut)
	}
	r := bridgeEvents(t, out)
	if len(r.falls) != 1 {
		t.Fatalf("%d fall alerts, want 1", len(r.falls))
	}
	f := r.falls[0]
	t.Logf("fall: %+v", f)
	// 18 frames/s: the person is on the floor by about frame 22; the alert comes within 2 s.
	if f.FindingID == "" || f.FirstSequence < 1 || f.FirstSequence >= f.LastSequence || f.LastSequence > 22+36 {
		t.Errorf("fall alert %+v: want a finding and frames from the descent to within 2 s of landing", f)
	}
	reviewer := addToken(t, d.dataDir, "reviewer", "nurse-ward")
	list, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "list", "--json")
	if code != 0 {
		t.Fatalf("review list: exit %d: %s", code, errOut)
	}
	var page struct{ Findings []findingJSON }
	if err := json.Unmarshal([]byte(list), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Findings) == 0 || page.Findings[0].ID != f.FindingID || page.Findings[0].Priority != 10 || page.Findings[0].Pipeline != "fall" {
		t.Fatalf("worklist %+v: want the fall first, at priority 10", page.Findings)
	}
	png := filepath.Join(t.TempDir(), "fall.png")
	if dir := os.Getenv("VIGIL_KEEP_KEYFRAME"); dir != "" {
		png = filepath.Join(dir, "fall.png")
	}
	shown, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "show", f.FindingID, "--json", "--overlay", png)
	if code != 0 {
		t.Fatalf("review show: exit %d: %s", code, errOut)
	}
	var show struct{ Finding findingJSON }
	if err := json.Unmarshal([]byte(shown), &show); err != nil {
		t.Fatal(err)
	}
	got := show.Finding
	if got.Source.CameraID != "office" || got.Source.FirstSequence != f.FirstSequence || got.Source.LastSequence != f.LastSequence ||
		len(got.Evidence) < 3 || got.Box == nil {
		t.Fatalf("finding %+v: want camera office, the alert's frames, a box and the rules as evidence", got)
	}
	file, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	img, err := stdpng.Decode(file)
	if err != nil {
		t.Fatalf("the keyframe is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 480 {
		t.Errorf("keyframe %v, want the camera's 640x480", b)
	}
	// The skeleton is drawn in yellow (255, 210, 0) inside the box.
	yellow := 0
	bx := got.Box
	for y := int(bx.Y); y < int(bx.Y+bx.Height); y++ {
		for x := int(bx.X); x < int(bx.X+bx.Width); x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 > 240 && g>>8 > 195 && g>>8 < 225 && b>>8 < 30 {
				yellow++
			}
		}
	}
	if yellow < 50 {
		t.Errorf("%d skeleton-yellow pixels in the box, want the skeleton drawn", yellow)
	}
}

// TestBridgeReconnects kills the server under a paced bridge and starts it again on the same
// address: the bridge reconnects and goes on to the end of its frames.
func TestBridgeReconnects(t *testing.T) {
	vigild, vigil := binaries(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dataDir := t.TempDir()
	d := startDaemonIn(t, dataDir, vigild, "--listen", addr)
	token := addToken(t, dataDir, "ward-bridge", "lobby-bridge")
	var stderr bytes.Buffer
	bridge := exec.Command(vigil, "--server", addr, "--token", token, "bridge", "--json", "--realtime", "--camera", "lobby",
		"--source", testenv.Shared(t, "video/walkers-vtest.avi"), "--max-frames", "60")
	bridge.Stderr = &stderr
	pipe, err := bridge.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bridge.Start(); err != nil {
		t.Fatal(err)
	}
	// Read the bridge's events as they come; kill the server once 15 frames are through.
	var stdout strings.Builder
	fifteen := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		frames := 0
		for sc.Scan() {
			stdout.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `"type":"frame"`) {
				if frames++; frames == 15 {
					close(fifteen)
				}
			}
		}
	}()
	select {
	case <-fifteen:
	case <-time.After(60 * time.Second):
		t.Fatal("the bridge sent no 15 frames within 60 s")
	}
	done := make(chan error, 1)
	go func() { <-read; done <- bridge.Wait() }()
	d.cmd.Process.Kill()
	<-d.exited
	startDaemonIn(t, dataDir, vigild, "--listen", addr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bridge: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		bridge.Process.Kill()
		t.Fatalf("the bridge did not finish within 60 s\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "reconnecting") {
		t.Errorf("the bridge did not report reconnecting: %q", stderr.String())
	}
	r := bridgeEvents(t, stdout.String())
	t.Logf("%d frame events across the restart; last stats %+v", r.frames, r.stats)
	if r.stats == nil || r.stats.Received < 10 {
		t.Errorf("after the restart the second server received %v frames, want the rest of the clip", r.stats)
	}
}

// metric reads one sample of vigild's /metrics, by its name and labels as printed.
func metric(t *testing.T, d *daemon, sample string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + d.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestKilledBridgeFreesItsSession kills a paced bridge with SIGKILL mid-stream: the server
// sees the connection go, ends the stream and frees its session (vigil_ward_streams back to
// 0), and the frames it processed are counted.
func TestKilledBridgeFreesItsSession(t *testing.T) {
	vigild, vigil := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "ward-bridge", "lobby-bridge")
	bridge := exec.Command(vigil, "--server", d.grpc, "--token", token, "bridge", "--json", "--realtime", "--camera", "lobby",
		"--source", testenv.Shared(t, "video/walkers-vtest.avi"))
	pipe, err := bridge.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bridge.Start(); err != nil {
		t.Fatal(err)
	}
	defer bridge.Process.Kill()
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for frames := 0; frames < 20 && sc.Scan(); {
		if strings.Contains(sc.Text(), `"type":"frame"`) {
			frames++
		}
	}
	if open, _ := metric(t, d, "vigil_ward_streams"); open != 1 {
		t.Fatalf("vigil_ward_streams %v while the bridge streams, want 1", open)
	}
	bridge.Process.Kill()
	bridge.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for {
		open, _ := metric(t, d, "vigil_ward_streams")
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vigil_ward_streams still %v 15 s after the bridge was killed", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, _ := metric(t, d, `vigil_ward_frames_total{camera="lobby",outcome="processed"}`); n < 20 {
		t.Errorf("%v frames counted as processed, want the 20 or more the bridge saw", n)
	}
}
