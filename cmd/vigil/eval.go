package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/vigil-health/vigil/eval"
	"github.com/vigil-health/vigil/models"
)

// runEval measures Vigil against labelled material, in process: `vigil eval falls` streams
// every labelled clip through the Ward service on a loopback server and matches its alerts to
// the labels.
func runEval(_ *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "falls" {
		return usageError{"usage: vigil eval falls --labels FILE [--clips DIR] [--transform NAME] [--json]"}
	}
	fs := flag.NewFlagSet("eval falls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ip := registerInProcess(fs)
	labelsPath := fs.String("labels", "", "the labels file (testdata/falls.yaml for the shared UP-Fall clips)")
	clips := fs.String("clips", "", "the clips' folder (default: the labels file's root, under the shared data folder)")
	transform := fs.String("transform", "", "change every frame before it is sent, to see how the rules hold on other cameras: "+eval.TransformNames())
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if *labelsPath == "" {
		return usageError{"--labels is required"}
	}
	labels, err := eval.ReadLabels(*labelsPath)
	if err != nil {
		return err
	}
	dir := *clips
	if dir == "" {
		dir = labels.Root
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(ip.data, dir)
		}
	}
	change, err := eval.NewTransform(*transform)
	if err != nil {
		return usageError{err.Error()}
	}
	o := eval.Options{Engine: ip.engine(), Entries: models.Builtin(), Resolver: ip.resolver(), Labels: labels, Dir: dir, Transform: change}
	if !*quiet {
		o.Progress = func(s string) { fmt.Fprintln(stderr, "vigil eval:", s) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report, err := eval.Falls(ctx, o)
	if err != nil {
		return err
	}
	report.Transform = *transform
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	report.WriteTable(stdout)
	return nil
}
