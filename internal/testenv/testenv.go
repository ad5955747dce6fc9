// Package testenv finds the real files tests run on: the shared DICOM, video and model
// mirror (../shared/data beside the repository, or $VIGIL_SHARED_DATA), and the outside
// model weights through the same resolver the server uses. A missing file fails the test with
// what to do; it never skips.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vigil-health/vigil/models"
)

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedDir is $VIGIL_SHARED_DATA or ../shared/data beside the repository.
func SharedDir() string {
	if dir := os.Getenv("VIGIL_SHARED_DATA"); dir != "" {
		return dir
	}
	return filepath.Join(RepoRoot(), "..", "shared", "data")
}

// Shared returns the path of a file under the shared data folder, failing the test when it
// is not there.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(SharedDir(), rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data %s is missing (%v): tests read ../shared/data beside the repository, or set VIGIL_SHARED_DATA", rel, err)
	}
	return p
}

// Resolver is the resolver make deps fills: the default cache, then $VIGIL_MODEL_MIRROR, then
// the shared mirror, then a build from the registry. A test that gives it a cache of its own
// still finds the default cache's weights: it is a mirror too (held as <sha256>/<file>).
func Resolver() *models.Resolver {
	mirrors := models.MirrorsFromEnv()
	mirrors = append(mirrors, filepath.Join(SharedDir(), "models"), models.DefaultCacheDir())
	return &models.Resolver{CacheDir: models.DefaultCacheDir(), Mirrors: mirrors, Builder: models.DefaultBuilder(RepoRoot())}
}

// Entries are the builtin manifests and the candidates under models/candidates.
func Entries(t testing.TB) []models.Entry {
	t.Helper()
	more, err := models.LoadDir(filepath.Join(RepoRoot(), "models", "candidates"))
	if err != nil {
		t.Fatalf("models/candidates: %v", err)
	}
	return models.Merge(models.Builtin(), more)
}

// Model returns a builtin or candidate manifest and the path of its verified weights.
func Model(t testing.TB, name string) (*models.Manifest, string) {
	t.Helper()
	for _, e := range Entries(t) {
		if e.Name != name {
			continue
		}
		if e.Err != nil {
			t.Fatalf("builtin manifest %s: %v", name, e.Err)
		}
		path, err := Resolver().Resolve(context.Background(), e.Manifest)
		if err != nil {
			t.Fatalf("model %s is not available: %v\nrun `make deps`, or set VIGIL_MODEL_MIRROR to a folder that holds it", name, err)
		}
		return e.Manifest, path
	}
	t.Fatalf("no builtin or candidate manifest named %s", name)
	return nil, ""
}
