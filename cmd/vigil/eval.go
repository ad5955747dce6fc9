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
	"github.com/vigil-health/vigil/internal/hc18"
	"github.com/vigil-health/vigil/models"
)

// runEval measures Vigil against labelled material, in process: `vigil eval falls` streams
// every labelled clip through the Ward service on a loopback server and matches its alerts to
// the labels.
func runEval(_ *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "biometry" {
		return runEvalBiometry(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "falls" {
		return usageError{"usage: vigil eval falls --labels FILE [--clips DIR] [--transform NAME] [--json]\n       vigil eval biometry [--data DIR] [--split test|tune|train|all] [--limit N] [--json]"}
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
	return printReport(stdout, *asJSON, report)
}

// runEvalBiometry measures the fetal head model through the Imaging service: every image of a
// split of the shared HC18 folder, wrapped as calibrated ultrasound DICOM, against the
// sonographer's HC.
func runEvalBiometry(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval biometry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ip := registerInProcess(fs)
	data := fs.String("data", "", "the HC18 folder (default: ultrasound-hc18 in the shared data folder)")
	split := fs.String("split", hc18.HeldApart, "which subjects: test (held apart), tune, train (models/fetal-head/MODEL_CARD.md), or all (a folder of other subjects)")
	limit := fs.Int("limit", 0, "only the first N images of the split")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if *data == "" {
		*data = filepath.Join(ip.data, "ultrasound-hc18")
	}
	images, err := hc18Split(*data, *split)
	if err != nil {
		return err
	}
	o := eval.BiometryOptions{Engine: ip.engine(), Entries: models.Builtin(), Resolver: ip.resolver(), Images: images, Limit: *limit}
	if !*quiet {
		o.Progress = func(s string) { fmt.Fprintln(stderr, "vigil eval:", s) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report, err := eval.Biometry(ctx, o)
	if err != nil {
		return err
	}
	return printReport(stdout, *asJSON, report)
}

// printReport prints an evaluation's report as indented JSON, or as its table.
func printReport(w io.Writer, asJSON bool, report interface{ WriteTable(io.Writer) }) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	report.WriteTable(w)
	return nil
}
