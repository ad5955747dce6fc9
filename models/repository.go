package models

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// builtin holds the manifests that ship inside the binary, one folder per model, and the
// weights of the models the project makes itself (never outside weights: those are resolved
// by sha256).
//
//go:embed */manifest.yaml us-lesion-demo/us-lesion-demo.onnx fetal-head/fetal-head.onnx
var builtin embed.FS

// Entry is one model of the repository: its manifest, or why the manifest could not be read.
type Entry struct {
	// Name is the manifest's name, or the folder's when the manifest is unreadable.
	Name     string
	Manifest *Manifest
	Err      error
}

// Builtin returns the manifests embedded in the binary, sorted by name.
func Builtin() []Entry {
	return readTree(builtin, "")
}

// LoadDir reads every <dir>/<model>/manifest.yaml. A folder whose manifest is broken becomes an
// Entry with Err set, so that one bad model does not stop the others.
func LoadDir(dir string) ([]Entry, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("models directory: %w", err)
	}
	return readTree(os.DirFS(dir), dir), nil
}

// Merge returns base with each entry of overlay replacing the base entry of the same name.
func Merge(base, overlay []Entry) []Entry {
	byName := map[string]Entry{}
	for _, e := range base {
		byName[e.Name] = e
	}
	for _, e := range overlay {
		byName[e.Name] = e
	}
	out := make([]Entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func readTree(fsys fs.FS, dir string) []Entry {
	folders, _ := fs.ReadDir(fsys, ".")
	var out []Entry
	for _, f := range folders {
		if !f.IsDir() {
			continue
		}
		data, err := fs.ReadFile(fsys, f.Name()+"/"+ManifestFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		e := Entry{Name: f.Name()}
		if err == nil {
			e.Manifest, err = ParseManifest(data)
		}
		if err != nil {
			e.Err = err
			out = append(out, e)
			continue
		}
		if dir != "" {
			e.Manifest.Dir = filepath.Join(dir, f.Name())
		} else if w, err := fs.ReadFile(fsys, f.Name()+"/"+e.Manifest.Weights.File); err == nil {
			e.Manifest.Embedded = w
		}
		e.Name = e.Manifest.Name
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
