package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltinManifests(t *testing.T) {
	entries := Builtin()
	want := map[string]Task{"fastestdet": TaskDetection, "movenet-lightning": TaskPose}
	for _, e := range entries {
		if e.Err != nil {
			t.Errorf("builtin %s: %v", e.Name, e.Err)
			continue
		}
		if task, ok := want[e.Name]; ok && e.Manifest.Task != task {
			t.Errorf("%s: got task %q, want %q", e.Name, e.Manifest.Task, task)
		}
		delete(want, e.Name)
	}
	for name := range want {
		t.Errorf("builtin manifest %s is missing", name)
	}
	for _, e := range entries {
		if e.Name == "fastestdet" && (len(e.Manifest.Labels) != 80 || e.Manifest.Labels[0] != "person") {
			t.Errorf("fastestdet labels: got %d, first %q; want 80 COCO labels, first person", len(e.Manifest.Labels), e.Manifest.Labels[0])
		}
		if e.Name == "movenet-lightning" {
			h, w := e.Manifest.Inputs[0].Size()
			if h != 192 || w != 192 || len(e.Manifest.Labels) != 17 {
				t.Errorf("movenet input %dx%d with %d labels, want 192x192 and 17", h, w, len(e.Manifest.Labels))
			}
		}
	}
}

func validManifest() *Manifest {
	return &Manifest{
		Name: "m", Version: "1", Task: TaskTriage,
		Weights: Weights{File: "m.onnx", SHA256: strings.Repeat("ab", 32)},
		Inputs: []InputSpec{{TensorSpec: TensorSpec{Name: "x", DType: Float32, Shape: []int64{-1, 3, 64, 64}},
			Layout: "NCHW", Color: "RGB", Scale: 1}},
		Outputs: []TensorSpec{{Name: "y", DType: Float32, Shape: []int64{-1, 2}}},
		Decoder: DecoderConfig{Kind: DecoderClassification},
	}
}

func TestManifestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Manifest)
		want   string // a part of the error; empty for valid
	}{
		{"valid", func(*Manifest) {}, ""},
		{"upper-case name", func(m *Manifest) { m.Name = "Bad Name" }, "name"},
		{"no version", func(m *Manifest) { m.Version = "" }, "version"},
		{"path in weights file", func(m *Manifest) { m.Weights.File = "../x.onnx" }, "weights.file"},
		{"short sha256", func(m *Manifest) { m.Weights.SHA256 = "abc" }, "weights.sha256"},
		{"unknown decoder", func(m *Manifest) { m.Decoder.Kind = "magic" }, "decoder.kind"},
		{"unknown dtype", func(m *Manifest) { m.Inputs[0].DType = "complex64" }, "dtype"},
		{"zero dimension", func(m *Manifest) { m.Inputs[0].Shape[2] = 0 }, "dimension"},
		{"bad layout", func(m *Manifest) { m.Inputs[0].Layout = "CHW" }, "layout"},
		{"bad color", func(m *Manifest) { m.Inputs[0].Color = "YUV" }, "color"},
		{"zero scale", func(m *Manifest) { m.Inputs[0].Scale = 0 }, "scale"},
		{"no outputs", func(m *Manifest) { m.Outputs = nil }, "outputs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.change(m)
			err := m.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidManifest naming %q", err, tt.want)
			}
		})
	}
}

func TestParseManifestRejectsUnknownFields(t *testing.T) {
	data, err := validManifest().Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseManifest(data); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	_, err = ParseManifest(append(data, []byte("thresholdz: {score: 1}\n")...))
	if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), "thresholdz") {
		t.Fatalf("got %v, want an error naming the unknown field", err)
	}
}

func TestCheckSignature(t *testing.T) {
	m := validManifest()
	in := func(shape ...int64) []TensorSpec { return []TensorSpec{{Name: "x", DType: Float32, Shape: shape}} }
	out := []TensorSpec{{Name: "y", DType: Float32, Shape: []int64{-1, 2}}}
	tests := []struct {
		name    string
		inputs  []TensorSpec
		outputs []TensorSpec
		want    string
	}{
		{"same", in(-1, 3, 64, 64), out, ""},
		{"file dynamic where manifest fixes", in(-1, 3, -1, -1), out, ""},
		{"different size", in(-1, 3, 32, 32), out, `manifest input "x" float32 [?,3,64,64], ONNX file "x" float32 [?,3,32,32]`},
		{"manifest dynamic, file fixed", in(1, 3, 64, 64), out, "ONNX file \"x\" float32 [1,3,64,64]"},
		{"different rank", in(3, 64, 64), out, "[3,64,64]"},
		{"different name", []TensorSpec{{Name: "images", DType: Float32, Shape: []int64{-1, 3, 64, 64}}}, out, `"images"`},
		{"different dtype", []TensorSpec{{Name: "x", DType: Uint8, Shape: []int64{-1, 3, 64, 64}}}, out, "uint8"},
		{"extra output", in(-1, 3, 64, 64), append(out, TensorSpec{Name: "z", DType: Float32, Shape: []int64{1}}), "the ONNX file has 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.CheckSignature(tt.inputs, tt.outputs)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a match", err)
				}
				return
			}
			if !errors.Is(err, ErrSignatureMismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrSignatureMismatch containing %q", err, tt.want)
			}
		})
	}
}

// weightsFixture writes content as <dir>/<sub>/<file> and returns a manifest naming it by sha256.
func weightsFixture(t *testing.T, dir, sub string, content []byte) *Manifest {
	t.Helper()
	m := validManifest()
	sum := sha256.Sum256(content)
	m.Weights.SHA256 = hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sub, m.Weights.File), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestResolverCopiesFromFolderMirrorIntoCache(t *testing.T) {
	mirror, cache := t.TempDir(), t.TempDir()
	m := weightsFixture(t, mirror, "some-folder", []byte("weights v1"))
	r := &Resolver{CacheDir: cache, Mirrors: []string{filepath.Join(t.TempDir(), "empty"), mirror}}
	path, err := r.Resolve(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(cache, m.Weights.SHA256, m.Weights.File)
	if path != want {
		t.Fatalf("got %s, want the cached copy %s", path, want)
	}
	// The mirror can go away: the cache answers.
	os.RemoveAll(mirror)
	if again, err := (&Resolver{CacheDir: cache}).Resolve(context.Background(), m); err != nil || again != want {
		t.Fatalf("from cache: got %q, %v; want %s", again, err, want)
	}
}

func TestResolverWrongChecksum(t *testing.T) {
	mirror := t.TempDir()
	m := weightsFixture(t, mirror, "", []byte("the real weights"))
	os.WriteFile(filepath.Join(mirror, m.Weights.File), []byte("something else"), 0o644)
	_, err := (&Resolver{CacheDir: t.TempDir(), Mirrors: []string{mirror}}).Resolve(context.Background(), m)
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("got %v, want ErrChecksumMismatch", err)
	}
	for _, part := range []string{m.Weights.SHA256, filepath.Join(mirror, m.Weights.File)} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not name %s", err, part)
		}
	}
}

func TestResolverDamagedCacheEntryIsReplaced(t *testing.T) {
	mirror, cache := t.TempDir(), t.TempDir()
	m := weightsFixture(t, mirror, "", []byte("good"))
	damaged := filepath.Join(cache, m.Weights.SHA256, m.Weights.File)
	os.MkdirAll(filepath.Dir(damaged), 0o755)
	os.WriteFile(damaged, []byte("goo"), 0o644)
	path, err := (&Resolver{CacheDir: cache, Mirrors: []string{mirror}}).Resolve(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "good" {
		t.Fatalf("cache holds %q, want the mirror's %q", got, "good")
	}
}

func TestResolverMissingSaysWhereItLooked(t *testing.T) {
	cache, mirror := t.TempDir(), t.TempDir()
	_, err := (&Resolver{CacheDir: cache, Mirrors: []string{mirror}}).Resolve(context.Background(), validManifest())
	if !errors.Is(err, ErrWeightsMissing) {
		t.Fatalf("got %v, want ErrWeightsMissing", err)
	}
	for _, part := range []string{cache, mirror, "m.onnx"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not name %s", err, part)
		}
	}
}

func TestResolverHTTPMirror(t *testing.T) {
	content := []byte("weights over http")
	m := weightsFixture(t, t.TempDir(), "", content)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/"+m.Name+"/"+m.Weights.File {
			w.Write(content)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	cache := t.TempDir()
	path, err := (&Resolver{CacheDir: cache, Mirrors: []string{srv.URL}}).Resolve(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(content) || !strings.HasPrefix(path, cache) {
		t.Fatalf("got %q at %s, want %q in the cache", got, path, content)
	}
}

func TestLoadDirKeepsBrokenManifestsAsEntries(t *testing.T) {
	dir := t.TempDir()
	good, _ := validManifest().Encode()
	os.MkdirAll(filepath.Join(dir, "m"), 0o755)
	os.WriteFile(filepath.Join(dir, "m", ManifestFile), good, 0o644)
	os.MkdirAll(filepath.Join(dir, "broken"), 0o755)
	os.WriteFile(filepath.Join(dir, "broken", ManifestFile), []byte("name: [\n"), 0o644)
	entries, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "broken" || entries[0].Err == nil || entries[1].Manifest == nil {
		t.Fatalf("got %+v, want a broken entry and a good one", entries)
	}
	if entries[1].Manifest.Dir != filepath.Join(dir, "m") {
		t.Errorf("got Dir %q, want %q", entries[1].Manifest.Dir, filepath.Join(dir, "m"))
	}
}

func TestSplitMirrors(t *testing.T) {
	tests := map[string][]string{
		"":                            nil,
		"/a":                          {"/a"},
		"/a:/b":                       {"/a", "/b"},
		"/a,https://m.example:8443/w": {"/a", "https://m.example:8443/w"},
		" http://h/x , /b ":           {"http://h/x", "/b"},
	}
	for in, want := range tests {
		got := SplitMirrors(in)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("SplitMirrors(%q): got %q, want %q", in, got, want)
		}
	}
}
