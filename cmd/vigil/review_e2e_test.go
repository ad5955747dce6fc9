package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/vigil-health/vigil/internal/testenv"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

const seedStudy = "1.2.826.0.1.3680043.2.1"

// overlayPNG is a 320x240 picture with a box drawn on it, standing in for a pipeline's overlay.
func overlayPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	for y := 0; y < 240; y++ {
		for x := 0; x < 320; x++ {
			v := uint8((x + y) / 3)
			img.Set(x, y, color.RGBA{v, v, v, 255})
			if (x == 100 || x == 140) && y >= 80 && y <= 110 || (y == 80 || y == 110) && x >= 100 && x <= 140 {
				img.Set(x, y, color.RGBA{255, 200, 0, 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// seedStore writes n pending triage findings into the store in dataDir, as the triage pipeline
// does for the PACS worker pacs-1, and returns them.
func seedStore(t *testing.T, dataDir string, n int) []review.Finding {
	t.Helper()
	s, err := review.OpenSQLite(filepath.Join(dataDir, "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return seedInto(t, s, n)
}

// seedInto adds n pending ultrasound findings of one study, each with an overlay.
func seedInto(t *testing.T, s review.Store, n int) []review.Finding {
	t.Helper()
	batch := make([]review.Finding, n)
	overlay := overlayPNG(t)
	for i := range batch {
		batch[i] = review.Finding{
			Pipeline: review.PipelineTriage, Label: "hypoechoic lesion", Score: 0.5 + float64(i%5)/10, Priority: i % 4,
			Box:          &review.Box{X: 100, Y: 80, Width: 40, Height: 30},
			Measurements: []review.Measurement{{Name: "long axis", Value: 11.5, Unit: "mm"}},
			Evidence:     []string{fmt.Sprintf("seeded as finding %d, with its evidence in plain words", i)},
			Model:        review.ModelRef{Name: "us-lesion-demo", Version: "1", SHA256: "cafe"},
			Source: review.Source{StudyInstanceUID: seedStudy, SeriesInstanceUID: seedStudy + ".1",
				SOPInstanceUID: fmt.Sprintf("%s.1.%d", seedStudy, i), SOPClassUID: "1.2.840.10008.5.1.4.1.1.6.1",
				Modality: "US", Frames: []int{1}, NumberOfFrames: 1},
			Overlay: &review.Image{MediaType: "image/png", Data: overlay, Width: 320, Height: 240},
		}
	}
	out, err := s.Add(context.Background(), "pacs-1", batch) // as the PACS worker the tests name pacs-1
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReviewCLI(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 4)
	d := startDaemonIn(t, dataDir, vigild)
	reviewer := addToken(t, dataDir, "reviewer", "dr.lee")
	pacs := addToken(t, dataDir, "pacs-worker", "pacs-1")
	run := func(args ...string) (string, string, int) {
		return cli(t, append([]string{"--server", d.grpc, "--token", reviewer, "review"}, args...)...)
	}

	out, errOut, code := run("list", "--json")
	var list struct{ Findings []findingJSON }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Findings) != 4 || list.Findings[0].Priority != 3 {
		t.Fatalf("list --json: exit %d %s\n%s", code, errOut, out)
	}
	out, _, code = run("claim", "--json")
	var claimed struct{ Finding findingJSON }
	json.Unmarshal([]byte(out), &claimed)
	if code != 0 || claimed.Finding.State != "claimed" || claimed.Finding.ClaimedBy != "dr.lee" {
		t.Fatalf("claim: exit %d\n%s", code, out)
	}
	if out, errOut, code := run("accept", claimed.Finding.ID, "--comment", "clear margins"); code != 0 || !strings.Contains(out, "accept by dr.lee") {
		t.Errorf("accept: exit %d %q %q", code, out, errOut)
	}
	other := seeded[0].ID
	if other == claimed.Finding.ID {
		other = seeded[1].ID
	}
	if _, errOut, code := run("reject", other); code != 1 || !strings.Contains(errOut, "InvalidArgument") {
		t.Errorf("reject without a reason: exit %d %q; want 1 and InvalidArgument", code, errOut)
	}
	out, errOut, code = run("amend", other, "--reason", "wrong-size", "--measure", "long axis=9.5mm", "--json")
	var amended struct{ Finding findingJSON }
	json.Unmarshal([]byte(out), &amended)
	if code != 0 || amended.Finding.State != "amended" || amended.Finding.Decision.Amendment.Measurements[0].Value != 9.5 ||
		amended.Finding.Decision.Amendment.Measurements[0].Unit != "mm" {
		t.Errorf("amend: exit %d %s\n%s", code, errOut, out)
	}
	// A stale version is refused with Aborted and changes nothing.
	if _, errOut, code := run("reject", seeded[2].ID, "--reason", "artefact", "--version", "7"); code != 1 || !strings.Contains(errOut, "Aborted") {
		t.Errorf("stale reject: exit %d %q; want 1 and Aborted", code, errOut)
	}
	overlay := filepath.Join(t.TempDir(), "overlay.png")
	out, _, code = run("show", claimed.Finding.ID, "--overlay", overlay)
	if data, _ := os.ReadFile(overlay); code != 0 || !bytes.Equal(data, overlayPNG(t)) || !strings.Contains(out, "dr.lee") || !strings.Contains(out, "pacs-1") {
		t.Errorf("show: exit %d, overlay %q\n%s", code, data, out)
	}
	out, _, code = run("counts", "--json")
	var counts struct {
		States map[string]int64
		Models []struct {
			AcceptanceRate float64 `json:"acceptance_rate"`
		}
	}
	json.Unmarshal([]byte(out), &counts)
	if code != 0 || counts.States["accepted"] != 1 || counts.States["amended"] != 1 || counts.States["pending"] != 2 || counts.Models[0].AcceptanceRate != 1 {
		t.Errorf("counts: %s", out)
	}
	// The PACS worker pulls the study's report: two decided findings, a valid SR.
	report := filepath.Join(t.TempDir(), "sr.dcm")
	out, errOut, code = cli(t, "--server", d.grpc, "--token", pacs, "review", "export", "--study", seedStudy, "--out", report)
	if code != 0 || !strings.Contains(out, "with 2 findings") {
		t.Fatalf("export: exit %d %q %q", code, out, errOut)
	}
	testenv.Dciodvfy(t, report)
	if text := testenv.Dsrdump(t, report); !strings.Contains(text, `"9.5" (mm,UCUM,"millimeter")`) {
		t.Errorf("the exported report lacks the amended 9.5 mm:\n%s", text)
	}
	if _, errOut, code := run("export", "--study", "1.2.3", "--out", report); code != 1 || !strings.Contains(errOut, "FailedPrecondition") {
		t.Errorf("export of a study with nothing decided: exit %d %q", code, errOut)
	}
	// The queue's figures are on /metrics.
	resp, err := http.Get("http://" + d.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`vigil_review_findings{state="pending"} 2`, `vigil_review_findings{state="amended"} 1`,
		`vigil_review_acceptance_ratio{model="us-lesion-demo",version="1"} 1`,
		`vigil_review_decision_seconds_count{outcome="accept",pipeline="triage"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// A PACS worker may not decide.
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", pacs, "review", "accept", seeded[3].ID, "--version", "1"); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("pacs-worker accepting: exit %d %q; want PermissionDenied", code, errOut)
	}
}

// TestDecisionsSurviveKill9 kills the server with SIGKILL during a burst of decisions from
// several reviewers: after a restart every acknowledged decision is there, as acknowledged.
func TestDecisionsSurviveKill9(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 400)
	d := startDaemonIn(t, dataDir, vigild)
	token := addToken(t, dataDir, "reviewer", "dr.burst")
	conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := vigilv1.NewReviewClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)

	type ack struct {
		version int64
		state   vigilv1.FindingState
	}
	var mu sync.Mutex
	acked := map[string]ack{}
	underWay := make(chan struct{}) // closed at the 60th acknowledged decision
	var wg sync.WaitGroup
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(seeded); i += workers {
				outcome, reason := vigilv1.Outcome_OUTCOME_ACCEPT, ""
				if i%3 == 0 {
					outcome, reason = vigilv1.Outcome_OUTCOME_REJECT, "false-positive"
				}
				resp, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[i].ID, Version: 1, Outcome: outcome, ReasonCode: reason})
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[seeded[i].ID] = ack{resp.Finding.Version, resp.Finding.State}
				if len(acked) == 60 {
					close(underWay)
				}
				mu.Unlock()
			}
		}()
	}
	// Kill once the burst is well under way.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-underWay:
	case <-finished:
		t.Fatalf("the reviewers stopped after %d decisions, before 60: %s", len(acked), d.logs())
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	wg.Wait()
	t.Logf("%d decisions acknowledged before kill -9", len(acked))
	if len(acked) >= len(seeded) {
		t.Fatalf("the burst finished before the kill; the test proves nothing")
	}

	d2 := startDaemonIn(t, dataDir, vigild)
	conn2, err := grpc.NewClient(d2.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	rc2 := vigilv1.NewReviewClient(conn2)
	for id, a := range acked {
		got, err := rc2.Get(ctx, &vigilv1.GetRequest{Id: id})
		if err != nil {
			t.Fatalf("after restart, %s: %v", id, err)
		}
		if got.Finding.Version != a.version || got.Finding.State != a.state || got.Finding.Decision == nil {
			t.Errorf("%s: after restart version %d state %v, acknowledged version %d state %v", id, got.Finding.Version, got.Finding.State, a.version, a.state)
		}
		if n := len(got.Audit); n != 2 {
			t.Errorf("%s: %d audit records, want create and the decision", id, n)
		}
	}
}
