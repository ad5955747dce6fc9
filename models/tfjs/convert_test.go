package tfjs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/vision"
)

// tolerance is the largest difference allowed between an ONNX Runtime output and TF.js's,
// relative for values above 1: |onnx - tfjs| <= tolerance * max(1, |tfjs|). MoveNet's outputs
// are coordinates normalised to 0..1 and scores in 0..1, where float32 kernels that sum in
// another order differ by about 1e-6 (measured: at most 1.2e-6); CenterNet's are box corners
// in pixels of a 512 input (measured: at most 1.2e-4 px, 2.4e-7 relative). An argmax over a
// heatmap that flipped between two cells would move a keypoint by 1/48 and fail this.
const tolerance = 1e-5

// vtest is the walkers clip Debian's opencv-doc ships (make deps installs it).
const vtest = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"

// buildable returns the manifests, builtin and candidates, that say how to build their
// weights from a registry package.
func buildable(t *testing.T) []*models.Manifest {
	t.Helper()
	entries := models.Builtin()
	extra, err := models.LoadDir(filepath.Join(testenv.RepoRoot(), "models", "candidates"))
	if err != nil {
		t.Fatal(err)
	}
	entries = models.Merge(entries, extra)
	var out []*models.Manifest
	for _, e := range entries {
		if e.Err != nil {
			t.Fatalf("manifest %s: %v", e.Name, e.Err)
		}
		if e.Manifest.Build != nil {
			out = append(out, e.Manifest)
		}
	}
	return out
}

// frames are real pictures of people: walkers in a mall (vtest.avi, frames 60 and 400) and a
// person lying prone after a fall (UP-Fall A1 Cam2 at 5 s).
func frames(t *testing.T) map[string]vision.Frame {
	t.Helper()
	out := map[string]vision.Frame{}
	v, err := vision.OpenVideo(vtest)
	if err != nil {
		t.Fatalf("%s (Debian's opencv-doc; make deps installs it): %v", vtest, err)
	}
	defer v.Close()
	for i := 0; i <= 400; i++ {
		f, err := v.Read()
		if err != nil {
			t.Fatalf("%s frame %d: %v", vtest, i, err)
		}
		if i == 60 || i == 400 {
			out[fmt.Sprintf("vtest-%d", i)] = f
		}
	}
	lying := testenv.Shared(t, "video/falls-upfall/A1_S1_T1_Cam2.mp4")
	v2, err := vision.OpenVideo(lying)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	for i := 0; i <= 90; i++ {
		f, err := v2.Read()
		if err != nil {
			t.Fatalf("%s frame %d: %v", lying, i, err)
		}
		if i == 90 {
			out["upfall-lying"] = f
		}
	}
	return out
}

// input turns a frame into the model's input as the manifest describes it (stretched to the
// input's size, channels in its order, times its scale), and also as raw little-endian bytes
// for TF.js.
func input(t *testing.T, m *models.Manifest, f vision.Frame) (inference.Tensor, []byte) {
	t.Helper()
	in := m.Inputs[0]
	if in.Layout != "NHWC" || len(in.Shape) != 4 {
		t.Fatalf("%s: the test feeds NHWC images; input is %s %v", m.Name, in.Layout, in.Shape)
	}
	h, w := int(in.Shape[1]), int(in.Shape[2])
	small, err := vision.Resize(f, w, h)
	if err != nil {
		t.Fatal(err)
	}
	n := w * h * 3
	raw := make([]byte, 4*n)
	ints := make([]int32, n)
	floats := make([]float32, n)
	for i := 0; i < w*h; i++ {
		b, g, r := small.BGR[3*i], small.BGR[3*i+1], small.BGR[3*i+2]
		px := [3]byte{r, g, b}
		if in.Color == "BGR" {
			px = [3]byte{b, g, r}
		}
		for c := 0; c < 3; c++ {
			ints[3*i+c] = int32(px[c])
			floats[3*i+c] = float32(float64(px[c]) * in.Scale)
		}
	}
	shape := append([]int64(nil), in.Shape...)
	switch in.DType {
	case models.Int32:
		for i, v := range ints {
			binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
		}
		tensor, err := inference.NewTensor(shape, ints)
		if err != nil {
			t.Fatal(err)
		}
		return tensor, raw
	case models.Float32:
		for i, v := range floats {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
		tensor, err := inference.NewTensor(shape, floats)
		if err != nil {
			t.Fatal(err)
		}
		return tensor, raw
	}
	t.Fatalf("%s: input dtype %s", m.Name, in.DType)
	return inference.Tensor{}, nil
}

type tfjsOutput struct {
	Name  string    `json:"name"`
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

// runTFJS runs the graph in TF.js on raw input bytes, computing the outputs the build keeps.
func runTFJS(t *testing.T, graph string, m *models.Manifest, raw []byte) []tfjsOutput {
	in := m.Inputs[0]
	t.Helper()
	dir := t.TempDir()
	inPath, outPath := filepath.Join(dir, "input.bin"), filepath.Join(dir, "out.json")
	if err := os.WriteFile(inPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	dims := make([]string, len(in.Shape))
	for i, d := range in.Shape {
		dims[i] = fmt.Sprint(d)
	}
	check := filepath.Join(testenv.RepoRoot(), "models", "tfjs", "check")
	if _, err := os.Stat(filepath.Join(check, "node_modules", "@tensorflow", "tfjs")); err != nil {
		t.Fatalf("TF.js is not installed in %s: run make deps", check)
	}
	args := []string{filepath.Join(check, "run_tfjs.mjs"), graph, inPath, string(in.DType), strings.Join(dims, ","), outPath}
	if len(m.Build.Outputs) > 0 {
		args = append(args, strings.Join(m.Build.Outputs, ","))
	}
	cmd := exec.Command("node", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("TF.js on %s: %v\n%s", graph, err, out)
	}
	data, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Outputs []tfjsOutput `json:"outputs"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	return res.Outputs
}

func TestConvertedModelsMatchTFJS(t *testing.T) {
	ms := buildable(t)
	if len(ms) == 0 {
		t.Fatal("no manifest has a build section")
	}
	builder := models.DefaultBuilder(testenv.RepoRoot())
	if builder == nil {
		t.Fatal("no converter under models/tfjs")
	}
	engine, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	pics := frames(t)
	ctx := context.Background()
	tarballs := filepath.Join(models.DefaultCacheDir(), "npm")
	for _, m := range ms {
		t.Run(m.Name, func(t *testing.T) {
			work := t.TempDir()
			graph, err := builder.Fetch(ctx, m.Build, work, tarballs)
			if err != nil {
				t.Fatal(err)
			}
			// Converting twice gives the same bytes, the ones the manifest pins.
			var sums []string
			for i := 0; i < 2; i++ {
				out := filepath.Join(work, fmt.Sprintf("run%d.onnx", i))
				if err := builder.Convert(ctx, graph, out, m.Build.Outputs...); err != nil {
					t.Fatal(err)
				}
				sum, err := models.FileSHA256(out)
				if err != nil {
					t.Fatal(err)
				}
				sums = append(sums, sum)
			}
			if sums[0] != sums[1] {
				t.Fatalf("two conversions differ: %s and %s", sums[0], sums[1])
			}
			if sums[0] != m.Weights.SHA256 {
				t.Fatalf("converted sha256 %s, manifest pins %s", sums[0], m.Weights.SHA256)
			}
			sess, err := engine.Load(m, filepath.Join(work, "run0.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			for name, f := range pics {
				tensor, raw := input(t, m, f)
				got, err := sess.Run(ctx, []inference.Tensor{tensor})
				if err != nil {
					t.Fatal(err)
				}
				want := runTFJS(t, graph, m, raw)
				if len(want) != len(got) {
					t.Fatalf("%s: TF.js gave %d outputs, ONNX Runtime %d", name, len(want), len(got))
				}
				for i := range want {
					vals, err := inference.Values[float32](got[i])
					if err != nil {
						t.Fatal(err)
					}
					if len(vals) != len(want[i].Data) {
						t.Fatalf("%s output %s: %d values from ONNX Runtime, %d from TF.js", name, want[i].Name, len(vals), len(want[i].Data))
					}
					worst, worstRel := 0.0, 0.0
					for j, v := range vals {
						d := math.Abs(float64(v) - want[i].Data[j])
						worst = max(worst, d)
						worstRel = max(worstRel, d/max(1, math.Abs(want[i].Data[j])))
					}
					t.Logf("%s %s: %d values, largest difference from TF.js %.2g (%.2g relative to max(1, |value|))", name, want[i].Name, len(vals), worst, worstRel)
					if worstRel > tolerance {
						t.Errorf("%s output %s: differs from TF.js by %.3g relative (tolerance %g)", name, want[i].Name, worstRel, tolerance)
					}
				}
			}
		})
	}
}
