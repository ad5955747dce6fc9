package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
)

// TestSamplesAgainstARealServer builds the three clients in samples/ and runs each once
// against a real vigild: the PACS worker's instance gets findings, the reviewer claims and
// accepts one, and the bridge's frames come back with people on them.
func TestSamplesAgainstARealServer(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	dir := t.TempDir()
	for _, name := range []string{"pacs-worker", "reviewer", "ward-bridge"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./samples/"+name)
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./samples/%s: %v\n%s", name, err, out)
		}
	}
	run := func(token, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(dir, name), append([]string{"--server", d.grpc}, args...)...)
		cmd.Env = append(os.Environ(), "VIGIL_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("samples/%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	files := phantomFiles(t, 882000, 1)
	if out := run(addToken(t, d.dataDir, "pacs-worker", "pacs-sample"), "pacs-worker", files[0]); !regexp.MustCompile(`, [1-9]\d* findings \(already analysed: false\)\n  f-`).MatchString(out) {
		t.Errorf("samples/pacs-worker on a phantom with a lesion:\n%s", out)
	}
	if out := run(addToken(t, d.dataDir, "reviewer", "dr.sample"), "reviewer", "--decide", "accept"); !strings.Contains(out, "claimed f-") || !strings.Contains(out, "is now FINDING_STATE_ACCEPTED") {
		t.Errorf("samples/reviewer:\n%s", out)
	}
	clip := testenv.Shared(t, "video/walkers-vtest.avi")
	if out := run(addToken(t, d.dataDir, "ward-bridge", "bridge-sample"), "ward-bridge", "--camera", "sample-cam", "--source", clip, "--max-frames", "20"); !strings.Contains(out, " people") {
		t.Errorf("samples/ward-bridge on the walkers clip:\n%s", out)
	}
}
