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
	"strings"

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
	if len(args) > 0 && args[0] == "perception" {
		return runEvalPerception(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "falls" {
		return usageError{"usage: vigil eval falls --labels FILE[,FILE] [--clips DIR] [--transform NAME] [--detector NAME] [--json]\n       vigil eval perception --labels FILE[,FILE] [--detector NAME] [--poses NAME,NAME] [--json]\n       vigil eval biometry [--data DIR[,DIR]] [--split test|tune|train|all] [--limit N] [--json]"}
	}
	fs := flag.NewFlagSet("eval falls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ip := registerInProcess(fs)
	labelsPaths := fs.String("labels", "", "labels files, comma-separated (testdata/falls.yaml for the shared UP-Fall clips, testdata/falls-more.yaml for the other sources)")
	clips := fs.String("clips", "", "the clips' folder, with one labels file (default: each labels file's root, under the shared data folder)")
	transform := fs.String("transform", "", "change every frame before it is sent, to see how the rules hold on other cameras: "+eval.TransformNames())
	detector := fs.String("detector", "", "the person detector the ward runs (default: the server's)")
	candidates := fs.String("candidates", "models/candidates", "a folder of candidate models' manifests, beside the built-in ones ('' for none)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if *labelsPaths == "" {
		return usageError{"--labels is required"}
	}
	paths := strings.Split(*labelsPaths, ",")
	if *clips != "" && len(paths) > 1 {
		return usageError{"--clips goes with one labels file"}
	}
	sets, err := readLabelSets(paths, *clips, ip.data)
	if err != nil {
		return err
	}
	change, err := eval.NewTransform(*transform)
	if err != nil {
		return usageError{err.Error()}
	}
	entries, err := withCandidates(*candidates)
	if err != nil {
		return err
	}
	o := eval.Options{Engine: ip.engine(), Entries: entries, Resolver: ip.resolver(), Labels: sets, Transform: change, Detector: *detector}
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

// withCandidates is the built-in models and, when dir is not empty, the candidates in it.
func withCandidates(dir string) ([]models.Entry, error) {
	entries := models.Builtin()
	if dir == "" {
		return entries, nil
	}
	more, err := models.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	return models.Merge(entries, more), nil
}

// readLabelSets reads labels files and says where each one's clips are: in clips when given,
// else at the file's root under the shared data folder.
func readLabelSets(paths []string, clips, data string) ([]*eval.Labels, error) {
	var sets []*eval.Labels
	for _, path := range paths {
		labels, err := eval.ReadLabels(path)
		if err != nil {
			return nil, err
		}
		labels.Dir = clips
		if labels.Dir == "" {
			labels.Dir = labels.Root
			if !filepath.IsAbs(labels.Dir) {
				labels.Dir = filepath.Join(data, labels.Dir)
			}
		}
		sets = append(sets, labels)
	}
	return sets, nil
}

// runEvalPerception measures how well the detector and each keypoint model see people lying
// after the labelled falls, and what they cost.
func runEvalPerception(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval perception", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ip := registerInProcess(fs)
	labelsPaths := fs.String("labels", "", "labels files, comma-separated")
	detector := fs.String("detector", "fastestdet", "the person detector")
	poses := fs.String("poses", "movenet-lightning,movenet-thunder", "the keypoint models, comma-separated")
	candidates := fs.String("candidates", "models/candidates", "a folder of candidate models' manifests, beside the built-in ones ('' for none)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	entries, err := withCandidates(*candidates)
	if err != nil {
		return err
	}
	if *labelsPaths == "" {
		return usageError{"--labels is required"}
	}
	sets, err := readLabelSets(strings.Split(*labelsPaths, ","), "", ip.data)
	if err != nil {
		return err
	}
	o := eval.PerceptionOptions{Engine: ip.engine(), Entries: entries, Resolver: ip.resolver(), Labels: sets,
		Detector: *detector, Poses: strings.Split(*poses, ",")}
	if !*quiet {
		o.Progress = func(s string) { fmt.Fprintln(stderr, "vigil eval:", s) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report, err := eval.Perception(ctx, o)
	if err != nil {
		return err
	}
	return printReport(stdout, *asJSON, report)
}

// runEvalBiometry measures the fetal head model through the Imaging service: every image of a
// split of the shared HC18 folder, wrapped as calibrated ultrasound DICOM, against the
// sonographer's HC.
func runEvalBiometry(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval biometry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ip := registerInProcess(fs)
	data := fs.String("data", "", "the HC18 folders, ',' separated, each reported apart (default: ultrasound-hc18 and ultrasound-hc18-late in the shared data folder)")
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
	var dirs []string
	for _, d := range strings.Split(*data, ",") {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		for _, f := range hc18.SharedFolders {
			dirs = append(dirs, filepath.Join(ip.data, f))
		}
	}
	var images []hc18.Image
	for _, d := range dirs {
		of, err := hc18Split(d, *split)
		if err != nil {
			return err
		}
		images = append(images, of...)
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
