package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
)

// inProcess are the flags of the commands that run Vigil in process (bench, eval): the
// engine and where the model weights are found.
type inProcess struct {
	data             string
	workers, threads *int
	provider, lib    *string
	cache, mirrors   *string
}

// sharedData is $VIGIL_SHARED_DATA, or ../shared/data beside the repository.
func sharedData() string {
	if data := os.Getenv("VIGIL_SHARED_DATA"); data != "" {
		return data
	}
	return filepath.Join(repoRoot(), "..", "shared", "data")
}

func registerInProcess(fs *flag.FlagSet) *inProcess {
	p := &inProcess{data: sharedData()}
	p.workers = fs.Int("workers", 0, "runs of one model at once (0: the engine's default, 2)")
	p.threads = fs.Int("threads", 0, "ONNX Runtime intra-op threads per run (0: cores / workers)")
	p.provider = fs.String("provider", "cpu", "execution provider: cpu, cuda or tensorrt")
	p.lib = fs.String("ort-lib", "", "libonnxruntime.so.1 (default: $VIGIL_ORT_LIB, then .deps/onnxruntime)")
	p.cache = fs.String("model-cache", models.DefaultCacheDir(), "model cache folder (also VIGIL_MODEL_CACHE)")
	p.mirrors = fs.String("model-mirror", strings.Join(append(models.MirrorsFromEnv(), filepath.Join(p.data, "models")), ","), "folders or URLs, ',' separated (also VIGIL_MODEL_MIRROR)")
	return p
}

func (p *inProcess) engine() inference.Config {
	return inference.Config{LibraryPath: *p.lib, Provider: *p.provider, Workers: *p.workers, IntraOpThreads: *p.threads}
}

func (p *inProcess) resolver() *models.Resolver {
	return &models.Resolver{CacheDir: *p.cache, Mirrors: models.SplitMirrors(*p.mirrors), Builder: models.DefaultBuilder(".")}
}
