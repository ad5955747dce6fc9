package inference

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
)

// Providers are the execution providers a config may ask for.
var Providers = []string{"cpu", "cuda", "tensorrt"}

// Config chooses the runtime library, the execution provider and the threading.
type Config struct {
	// LibraryPath is libonnxruntime.so; empty means FindLibrary's search.
	LibraryPath string
	// Provider is "cpu", "cuda" or "tensorrt". A GPU provider that cannot load falls back to
	// CPU, says why once in the log, and Session.Provider reports "cpu".
	Provider string
	// DeviceID is the GPU for cuda and tensorrt.
	DeviceID int
	// Workers is how many runs of one model may execute at once.
	Workers int
	// QueueDepth is how many runs may wait for a worker before Run returns ErrOverloaded.
	QueueDepth int
	// IntraOpThreads is ONNX Runtime's thread count inside one run; 0 shares the CPUs out
	// among the workers.
	IntraOpThreads int
	Logger         *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Provider == "" {
		c.Provider = "cpu"
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 64
	}
	if c.IntraOpThreads <= 0 {
		c.IntraOpThreads = max(1, runtime.NumCPU()/c.Workers)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	if c.Provider != "" && !slices.Contains(Providers, c.Provider) {
		return fmt.Errorf("provider %q is not one of %v", c.Provider, Providers)
	}
	if c.Workers < 0 || c.QueueDepth < 0 || c.IntraOpThreads < 0 || c.DeviceID < 0 {
		return fmt.Errorf("workers, queue depth, threads and device id must not be negative")
	}
	return nil
}

// LibraryName is the file make deps installs.
const LibraryName = "libonnxruntime.so.1"

// FindLibrary returns the first ONNX Runtime library found: the configured path, then
// $VIGIL_ORT_LIB, then .deps/onnxruntime/ beside the executable or in the working directory or
// any parent of it, then the system's library folders.
func FindLibrary(configured string) (string, error) {
	var candidates []string
	if configured != "" {
		candidates = append(candidates, configured)
	} else {
		if env := os.Getenv("VIGIL_ORT_LIB"); env != "" {
			candidates = append(candidates, env)
		}
		if exe, err := os.Executable(); err == nil {
			dir := filepath.Dir(exe)
			candidates = append(candidates, filepath.Join(dir, LibraryName), filepath.Join(dir, "..", ".deps", "onnxruntime", LibraryName))
		}
		if wd, err := os.Getwd(); err == nil {
			for dir := wd; ; dir = filepath.Dir(dir) {
				candidates = append(candidates, filepath.Join(dir, ".deps", "onnxruntime", LibraryName))
				if filepath.Dir(dir) == dir {
					break
				}
			}
		}
		candidates = append(candidates, "/usr/local/lib/"+LibraryName, "/usr/lib/"+LibraryName, "/usr/local/lib/libonnxruntime.so")
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: looked in %v; run `make deps`, or set VIGIL_ORT_LIB to libonnxruntime.so.1", ErrLibraryMissing, candidates)
}
