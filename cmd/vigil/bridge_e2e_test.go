package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
)

func bridgeEvents(t *testing.T, out string) (frames int, tracks map[int64]int, stats *bridgeStats) {
	t.Helper()
	tracks = map[int64]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev bridgeEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		switch ev.Type {
		case "frame":
			frames++
			for _, tr := range ev.Tracks {
				tracks[tr.ID]++
			}
		case "stats":
			stats = ev.Stats
		}
	}
	return frames, tracks, stats
}

func TestBridgeStreamsTheWalkersClip(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "ward-bridge", "lobby-bridge")
	out, errOut, code := cli(t, "--server", d.grpc, "--token", token, "bridge", "--json", "--camera", "lobby",
		"--source", testenv.Shared(t, "video/walkers-vtest.avi"), "--max-frames", "40")
	if code != 0 {
		t.Fatalf("bridge: exit %d: %s", code, errOut)
	}
	frames, tracks, stats := bridgeEvents(t, out)
	// People cross and hide each other in this clip, and walk in and out of view: count the
	// tracks followed for at least a second (10 frames).
	steady := 0
	for _, n := range tracks {
		if n >= 10 {
			steady++
		}
	}
	t.Logf("frames per track id: %v", tracks)
	if frames != 40 || stats == nil || stats.Processed != 40 || stats.Dropped != 0 {
		t.Errorf("got %d frame events and stats %+v; want 40 processed, none dropped", frames, stats)
	}
	if steady < 4 {
		t.Errorf("%d tracks lasted 10 frames or more, want at least 4 (tracks %v)", steady, tracks)
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
	frames, _, stats := bridgeEvents(t, stdout.String())
	t.Logf("%d frame events across the restart; last stats %+v", frames, stats)
	if stats == nil || stats.Received < 10 {
		t.Errorf("after the restart the second server received %v frames, want the rest of the clip", stats)
	}
}
