package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/vision"
)

// rtspCamera is a real RTSP server (gortsplib) playing the walkers clip as Motion-JPEG at
// 10 frames/s, which a test can stall (no packets, connections open) or drop (server gone).
type rtspCamera struct {
	t      *testing.T
	addr   string
	frames [][]byte
	forma  *format.MJPEG
	media  *description.Media

	mu      sync.Mutex
	server  *gortsplib.Server
	stream  *gortsplib.ServerStream
	stalled bool
	sent    int
	stop    chan struct{}
	done    chan struct{}
}

func (c *rtspCamera) OnDescribe(*gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *rtspCamera) OnSetup(*gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *rtspCamera) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func startRTSPCamera(t *testing.T) *rtspCamera {
	t.Helper()
	v, err := vision.OpenVideo(testenv.Shared(t, "video/walkers-vtest.avi"))
	if err != nil {
		t.Fatal(err)
	}
	c := &rtspCamera{t: t, forma: &format.MJPEG{}}
	for range 200 {
		f, err := v.Read()
		if err != nil {
			break
		}
		// RFC 2435 wants baseline JPEG with the standard tables: Go's encoder writes that.
		img := image.NewRGBA(image.Rect(0, 0, f.Width, f.Height))
		for i := 0; i < f.Width*f.Height; i++ {
			img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = f.BGR[3*i+2], f.BGR[3*i+1], f.BGR[3*i], 255
		}
		var buf bytes.Buffer
		jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
		c.frames = append(c.frames, buf.Bytes())
	}
	v.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	lis.Close()
	c.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{c.forma}}
	c.up()
	t.Cleanup(c.down)
	return c
}

func (c *rtspCamera) url() string { return "rtsp://" + c.addr + "/ward-7" }

// up starts the server and the frames.
func (c *rtspCamera) up() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.server = &gortsplib.Server{Handler: c, RTSPAddress: c.addr}
	if err := c.server.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.stream = gortsplib.NewServerStream(c.server, &description.Session{Medias: []*description.Media{c.media}})
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go c.play(c.stream, c.stop, c.done)
}

// down drops the camera: the server and every connection go.
func (c *rtspCamera) down() {
	c.mu.Lock()
	if c.server == nil {
		c.mu.Unlock()
		return
	}
	close(c.stop)
	stream, server, done := c.stream, c.server, c.done
	c.server, c.stream = nil, nil
	c.mu.Unlock()
	<-done
	stream.Close()
	server.Close()
}

// stall stops the frames while the connections stay open, or starts them again.
func (c *rtspCamera) stall(stalled bool) {
	c.mu.Lock()
	c.stalled = stalled
	c.mu.Unlock()
}

func (c *rtspCamera) play(stream *gortsplib.ServerStream, stop, done chan struct{}) {
	defer close(done)
	enc, err := c.forma.CreateEncoder()
	if err != nil {
		c.t.Error(err)
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		stalled, i := c.stalled, c.sent
		if !stalled {
			c.sent++
		}
		c.mu.Unlock()
		if stalled {
			continue
		}
		pkts, err := enc.Encode(c.frames[i%len(c.frames)])
		if err != nil {
			c.t.Error(err)
			return
		}
		ts := uint32(time.Since(start).Seconds() * float64(c.forma.ClockRate()))
		for _, p := range pkts {
			p.Timestamp = ts
			stream.WritePacketRTP(c.media, p)
		}
	}
}

// TestBridgeRidesOutACameraThatStallsAndDrops streams a real RTSP camera through `vigil
// bridge` to a real vigild. The camera stalls (no frames, connection open) and later drops
// (server gone, back 3 s later): the bridge reopens it with backoff each time, the one Ward
// stream goes on, and each gap is reported with the frames it cost.
func TestBridgeRidesOutACameraThatStallsAndDrops(t *testing.T) {
	vigild, vigil := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "ward-bridge", "bridge-rtsp")
	cam := startRTSPCamera(t)

	const frames = 120
	// In realtime the server drops what it cannot keep up with, so the bridge reads the camera
	// at the camera's pace however busy the machine is, and sees each stall as it happens.
	cmd := exec.Command(vigil, "--server", d.grpc, "--token", token, "bridge", "--source", cam.url(), "--camera", "ward-7", "--json",
		"--realtime", "--max-frames", fmt.Sprint(frames))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var gaps []bridgeGap
	results, dropped, lastSeq := 0, int64(0), int64(0)
	var stats *bridgeStats
	stage, resumedAt := 0, 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var ev bridgeEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON event: %s", sc.Text())
		}
		switch ev.Type {
		case "frame":
			results++
			lastSeq = max(lastSeq, ev.Sequence)
		case "dropped":
			dropped += ev.Dropped.Count
			lastSeq = max(lastSeq, ev.Dropped.Last)
		case "gap":
			gaps = append(gaps, *ev.Gap)
		case "stats":
			stats = ev.Stats
		}
		// Twenty frames in, the camera stalls for 8 s; ten frames after it is back, it drops
		// for 3 s. Frames are counted as the bridge sent them, answered or dropped by a busy
		// server alike, so that the stages come on a loaded machine too.
		sent := results + int(dropped)
		switch {
		case stage == 0 && sent >= 20:
			stage++
			go func() { cam.stall(true); time.Sleep(8 * time.Second); cam.stall(false) }()
		case stage == 1 && len(gaps) == 1:
			stage, resumedAt = stage+1, sent
		case stage == 2 && sent >= resumedAt+10:
			stage++
			go func() {
				t.Logf("drop at %s", time.Now().Format("15:04:05.000"))
				cam.down()
				time.Sleep(3 * time.Second)
				cam.up()
				t.Logf("up at %s", time.Now().Format("15:04:05.000"))
			}()
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the bridge: %v\n%s", err, stderr.String())
	}
	if len(gaps) != 2 {
		t.Fatalf("%d gaps reported, want 2 (a stall and a drop)\n%s", len(gaps), stderr.String())
	}
	for i, g := range gaps {
		if g.Seconds < 3 || g.FramesMissed < 25 || g.Reopens < 1 {
			t.Errorf("gap %d: %+v, want over 3 s, 25 or more frames missed, reopened at least once", i+1, g)
		}
	}
	if !strings.Contains(stderr.String(), "reopening in 500ms") || !strings.Contains(stderr.String(), "reopening in 1s") {
		t.Errorf("the bridge did not back off between reopens:\n%s", stderr.String())
	}
	if int64(results)+dropped != frames {
		t.Errorf("%d frame results and %d dropped, want %d in all: every frame sent, on one stream", results, dropped, frames)
	}
	missed := gaps[0].FramesMissed + gaps[1].FramesMissed
	if lastSeq != frames+missed {
		t.Errorf("the last sequence number is %d, want %d frames and %d missed", lastSeq, frames, missed)
	}
	if stats == nil || stats.Received != frames {
		t.Errorf("the server's final stats %+v, want %d frames received on the one stream", stats, frames)
	}
}
