package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
)

// These tests build the real vigild and vigil, start vigild on loopback ports with real ONNX
// Runtime and the real models, and drive it with the CLI as an operator would.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t *testing.T) (vigild, vigil string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "vigil-e2e-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ out, pkg, cgo string }{
			{"vigild", "./cmd/vigild", "1"},
			{"vigil", "./cmd/vigil", "1"},
			{"vigild-nocgo", "./cmd/vigild", "0"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			cmd.Dir = testenv.RepoRoot()
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "vigild"), filepath.Join(binDir, "vigil")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// daemon is a running vigild.
type daemon struct {
	cmd     *exec.Cmd
	grpc    string
	http    string
	dataDir string
	logMu   sync.Mutex
	log     bytes.Buffer
	exited  chan error
	ready   chan []string
}

func (d *daemon) logs() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

var servingLine = regexp.MustCompile(`msg="vigild serving" grpc=(\S+) http=(\S+)`)

func startDaemon(t *testing.T, binary string, args ...string) *daemon {
	t.Helper()
	return startDaemonIn(t, t.TempDir(), binary, args...)
}

// startDaemonIn starts vigild on an existing data folder.
func startDaemonIn(t *testing.T, dataDir, binary string, args ...string) *daemon {
	t.Helper()
	d := launchDaemon(t, dataDir, binary, args...)
	d.waitServing(t)
	return d
}

// launchDaemon starts vigild without waiting for it to serve, so that several can start at once.
func launchDaemon(t *testing.T, dataDir, binary string, args ...string) *daemon {
	t.Helper()
	d := &daemon{dataDir: dataDir, exited: make(chan error, 1), ready: make(chan []string, 1)}
	cacheDir := t.TempDir()
	d.cmd = exec.Command(binary, append([]string{"--data-dir", d.dataDir,
		"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--model-cache", cacheDir,
		"--model-mirror", strings.Join(testenv.Resolver().Mirrors, ",")}, args...)...)
	d.cmd.Env = append(os.Environ(), "VIGIL_ORT_LIB="+filepath.Join(testenv.RepoRoot(), ".deps/onnxruntime/libonnxruntime.so.1"))
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.logMu.Lock()
			d.log.WriteString(line + "\n")
			d.logMu.Unlock()
			if m := servingLine.FindStringSubmatch(line); m != nil {
				d.ready <- m[1:]
			}
		}
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("vigild log:\n%s", d.logs())
		}
	})
	return d
}

// waitServing waits until a launched vigild reports its addresses.
func (d *daemon) waitServing(t *testing.T) {
	t.Helper()
	select {
	case addrs := <-d.ready:
		d.grpc, d.http = addrs[0], addrs[1]
	case err := <-d.exited:
		t.Fatalf("vigild exited before serving: %v\n%s", err, d.logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("vigild did not report serving within 60s\n%s", d.logs())
	}
}

// cli runs the vigil binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	_, vigil := binaries(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(vigil, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func addToken(t *testing.T, dataDir, role, principal string) string {
	t.Helper()
	out, errOut, code := cli(t, "token", "add", "--data-dir", dataDir, "--role", role, "--principal", principal)
	if code != 0 {
		t.Fatalf("token add: exit %d: %s", code, errOut)
	}
	return strings.TrimSpace(out)
}

// brokenModels writes a models folder with two models that must show as invalid: one whose
// weights file (found in the mirror) has another sha256, one whose input shape disagrees with
// its ONNX file.
func brokenModels(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var fastest, movenet *models.Manifest
	for _, e := range models.Builtin() {
		switch e.Name {
		case "fastestdet":
			fastest = e.Manifest
		case "movenet-lightning":
			movenet = e.Manifest
		}
	}
	badSum := *fastest
	badSum.Name = "fastestdet-wrong-sha"
	badSum.Weights.SHA256 = strings.Repeat("0123456789abcdef", 4)
	badShape := *movenet
	badShape.Name = "movenet-wrong-shape"
	badShape.Inputs = append([]models.InputSpec(nil), movenet.Inputs...)
	badShape.Inputs[0].Shape = []int64{1, 256, 256, 3}
	for _, m := range []models.Manifest{badSum, badShape} {
		data, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, m.Name), 0o755)
		if err := os.WriteFile(filepath.Join(dir, m.Name, models.ManifestFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestServeModelsHealthAndTokens(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild, "--provider", "cuda", "--models-dir", brokenModels(t))
	admin := addToken(t, d.dataDir, "admin", "ops")

	// Health.
	out, errOut, code := cli(t, "--server", d.grpc, "--token", admin, "health")
	if code != 0 || strings.TrimSpace(out) != "SERVING" {
		t.Fatalf("health: exit %d, %q %q; want 0 and SERVING", code, out, errOut)
	}

	// Models: the two real ones ready on cpu though cuda was asked for; the broken ones
	// invalid with their reasons.
	out, errOut, code = cli(t, "models", "--json", "--server", d.grpc, "--token", admin)
	if code != 0 {
		t.Fatalf("models --json: exit %d: %s", code, errOut)
	}
	var list modelsJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("models --json is not JSON: %v\n%s", err, out)
	}
	byName := map[string]modelJSON{}
	for _, m := range list.Models {
		byName[m.Name] = m
	}
	for _, name := range []string{"fastestdet", "movenet-lightning"} {
		m := byName[name]
		if m.State != "ready" || m.Provider != "cpu" || m.RequestedProvider != "cuda" {
			t.Errorf("%s: got state %q provider %q requested %q; want ready on cpu, cuda requested (%s)", name, m.State, m.Provider, m.RequestedProvider, m.Reason)
		}
	}
	// Batching: the demo model batches (its batch dimension is dynamic); the detector cannot.
	if m := byName["us-lesion-demo"]; m.MaxBatch != 8 || !strings.HasPrefix(m.Batching, "dynamic") {
		t.Errorf("us-lesion-demo: max_batch %d, batching %q; want 8, dynamic", m.MaxBatch, m.Batching)
	}
	if m := byName["fastestdet"]; m.MaxBatch != 1 || !strings.Contains(m.Batching, "fixed") {
		t.Errorf("fastestdet: max_batch %d, batching %q; want 1, the batch dimension fixed", m.MaxBatch, m.Batching)
	}
	if m := byName["fastestdet-wrong-sha"]; m.State != "invalid" || !strings.Contains(m.Reason, "sha256") || !strings.Contains(m.Reason, "FastestDet.onnx") {
		t.Errorf("wrong sha256: got state %q, reason %q; want invalid naming the file and its sha256", m.State, m.Reason)
	}
	if m := byName["movenet-wrong-shape"]; m.State != "invalid" || !strings.Contains(m.Reason, "[1,256,256,3]") || !strings.Contains(m.Reason, "[1,192,192,3]") {
		t.Errorf("wrong shape: got state %q, reason %q; want invalid naming both shapes", m.State, m.Reason)
	}
	if list.RuntimeVersion != "1.30.0" {
		t.Errorf("runtime version %q, want 1.30.0", list.RuntimeVersion)
	}

	// CUDA: one line saying why it is unavailable.
	if n := strings.Count(d.logs(), "execution provider unavailable"); n != 1 {
		t.Errorf("got %d log lines about the unavailable provider, want 1", n)
	}

	// A token added while the server runs works at once; a forged one does not.
	reviewer := addToken(t, d.dataDir, "reviewer", "dr.grey")
	if _, errOut, code := cli(t, "models", "--server", d.grpc, "--token", reviewer); code != 0 {
		t.Errorf("new reviewer token: exit %d: %s", code, errOut)
	}
	_, errOut, code = cli(t, "models", "--server", d.grpc, "--token", "vgl_forged")
	if code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("forged token: exit %d, %q; want 1 and Unauthenticated", code, errOut)
	}

	// grpcurl lists the services through reflection with a token.
	grpcurl := filepath.Join(testenv.RepoRoot(), "bin", "grpcurl")
	if _, err := os.Stat(grpcurl); err != nil {
		t.Fatalf("grpcurl is not in ./bin: run `make deps`")
	}
	gout, err := exec.Command(grpcurl, "-H", "authorization: Bearer "+admin, "-plaintext", d.grpc, "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, gout)
	}
	for _, svc := range []string{"vigil.v1.Imaging", "vigil.v1.Ward", "vigil.v1.Review", "vigil.v1.Models", "grpc.health.v1.Health"} {
		if !strings.Contains(string(gout), svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, gout)
		}
	}

	// Metrics.
	resp, err := http.Get("http://" + d.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`vigil_model_ready{model="fastestdet",provider="cpu",state="ready",version="1.0"} 1`,
		`vigil_model_ready{model="movenet-wrong-shape",provider="",state="invalid",version="4"} 0`,
		`vigil_grpc_handled_total{code="Unauthenticated",method="/vigil.v1.Models/ListModels"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGTERM: a clean, ordered stop.
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Errorf("vigild exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("vigild did not stop within 30s of SIGTERM")
	}
	logs := d.logs()
	if i, j := strings.Index(logs, "shutting down"), strings.Index(logs, "msg=stopped"); i < 0 || j < i {
		t.Errorf("want 'shutting down' then 'stopped' in the log")
	}
}

func TestHealthFailsWhenNoServer(t *testing.T) {
	_, errOut, code := cli(t, "--server", "127.0.0.1:1", "--timeout", "2s", "health")
	if code != 1 || !strings.Contains(errOut, "Unavailable") {
		t.Errorf("got exit %d, %q; want 1 and Unavailable", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"token"}, {"token", "add", "--role", "admin"}, {"token", "add", "--role", "root", "--principal", "x"}} {
		if _, _, code := cli(t, args...); code != 2 {
			t.Errorf("vigil %v: exit %d, want 2", args, code)
		}
	}
}

// TestWithoutCGO runs a vigild built with CGO_ENABLED=0: it serves, and every model is invalid
// with the named reason.
func TestWithoutCGO(t *testing.T) {
	binaries(t)
	d := startDaemon(t, filepath.Join(binDir, "vigild-nocgo"))
	admin := addToken(t, d.dataDir, "admin", "ops")
	out, errOut, code := cli(t, "models", "--json", "--server", d.grpc, "--token", admin)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var list modelsJSON
	json.Unmarshal([]byte(out), &list)
	if len(list.Models) < 2 {
		t.Fatalf("got %d models, want the builtin ones", len(list.Models))
	}
	for _, m := range list.Models {
		if m.State != "invalid" || !strings.Contains(m.Reason, "CGO_ENABLED=0") {
			t.Errorf("%s: got %q, %q; want invalid because of CGO_ENABLED=0", m.Name, m.State, m.Reason)
		}
	}
}
