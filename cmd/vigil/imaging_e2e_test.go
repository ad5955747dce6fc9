package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/testenv"
)

func TestAnalyzeRealFiles(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	pacs := addToken(t, d.dataDir, "pacs-worker", "pacs-1")
	us, _ := filepath.Glob(filepath.Join(testenv.SharedDir(), "dicom", "ultrasound", "*.dcm"))
	other, _ := filepath.Glob(filepath.Join(testenv.SharedDir(), "dicom", "other", "*.dcm"))
	if len(us) != 6 || len(other) != 2 {
		t.Fatalf("found %d ultrasound and %d other shared files, want 6 and 2", len(us), len(other))
	}
	out, errOut, code := cli(t, append([]string{"--server", d.grpc, "--token", pacs, "analyze", "--json"}, us...)...)
	var results []analyzedJSON
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 0 || len(results) != 6 {
		t.Fatalf("analyze ultrasound: exit %d, %v, %s\n%s", code, err, errOut, out)
	}
	// The real files name no obstetric exam and are not phantoms: no route takes them, and
	// the answer says so.
	for _, r := range results {
		if r.Error != nil || r.SOPInstanceUID == "" || r.Model != "" || len(r.Findings) != 0 || !strings.Contains(r.Routing, "no model's routes match") {
			t.Errorf("%s: %+v; want no model, no findings, no error", filepath.Base(r.File), r)
		}
	}
	// Named, a model runs on every one of them: every transfer syntax decodes on the whole path.
	out, errOut, code = cli(t, append([]string{"--server", d.grpc, "--token", pacs, "analyze", "--json", "--model", "us-lesion-demo"}, us...)...)
	results = nil
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 0 || len(results) != 6 {
		t.Fatalf("analyze ultrasound with a model named: exit %d, %v, %s\n%s", code, err, errOut, out)
	}
	for _, r := range results {
		if r.Error != nil || r.FramesAnalyzed == 0 || r.Model != "us-lesion-demo" || r.Routing != "asked for by the request" {
			t.Errorf("%s: %+v; want frames analysed by the model asked for", filepath.Base(r.File), r)
		}
		t.Logf("%s: %d findings, %d frames, already analysed %v", filepath.Base(r.File), len(r.Findings), r.FramesAnalyzed, r.AlreadyAnalyzed)
	}
	// Other modalities: no route either; named, the ultrasound model refuses them.
	out, _, code = cli(t, append([]string{"--server", d.grpc, "--token", pacs, "analyze", "--json"}, other...)...)
	results = nil
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 0 || len(results) != 2 || results[0].Model != "" {
		t.Fatalf("analyze other modalities: exit %d\n%s", code, out)
	}
	out, _, code = cli(t, append([]string{"--server", d.grpc, "--token", pacs, "analyze", "--json", "--model", "us-lesion-demo"}, other...)...)
	results = nil
	json.Unmarshal([]byte(out), &results)
	if code != 1 || len(results) != 2 {
		t.Fatalf("analyze other modalities with a model named: exit %d\n%s", code, out)
	}
	for _, r := range results {
		if r.Error == nil || r.Error.Code != "FailedPrecondition" || !strings.Contains(r.Error.Message, "not US") {
			t.Errorf("%s: %+v; want FailedPrecondition saying it is not ultrasound", filepath.Base(r.File), r.Error)
		}
	}
}

// TestAnalyzedFindingsSurviveKill9 kills the server the moment it has answered: after a
// restart, every finding it reported is in the store.
func TestAnalyzedFindingsSurviveKill9(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	d := startDaemonIn(t, dataDir, vigild)
	pacs := addToken(t, dataDir, "pacs-worker", "pacs-1")
	reviewer := addToken(t, dataDir, "reviewer", "dr.k")
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 777001, Rows: 480, Cols: 640, Frames: 6, Lesions: 2})
	data, err := dicomio.PhantomDICOM(&p)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "phantom.dcm")
	os.WriteFile(file, data, 0o644)
	out, errOut, code := cli(t, "--server", d.grpc, "--token", pacs, "analyze", "--json", file)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	var results []analyzedJSON
	if err := json.Unmarshal([]byte(out), &results); err != nil || code != 0 || len(results[0].Findings) == 0 {
		t.Fatalf("analyze: exit %d %s\n%s", code, errOut, out)
	}
	d2 := startDaemonIn(t, dataDir, vigild)
	for _, f := range results[0].Findings {
		out, errOut, code := cli(t, "--server", d2.grpc, "--token", reviewer, "review", "show", f.ID, "--json")
		if code != 0 || !strings.Contains(out, p.Truth.SOPInstance) {
			t.Errorf("after kill -9 and restart, finding %s: exit %d %s", f.ID, code, errOut)
		}
	}
	// The instance is still known: sending it again returns the stored result.
	out, _, _ = cli(t, "--server", d2.grpc, "--token", pacs, "analyze", "--json", file)
	json.Unmarshal([]byte(out), &results)
	if !results[0].AlreadyAnalyzed || len(results[0].Findings) == 0 {
		t.Errorf("after restart, resubmission: %s", out)
	}
}
