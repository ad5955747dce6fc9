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

	"github.com/vigil-health/vigil/bench"
	"github.com/vigil-health/vigil/models"
)

// runBench measures Vigil beside the bare runtime and the Node peer, in process: it needs the
// ONNX Runtime library and the models, not a server (it starts its own on loopback).
func runBench(_ *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := repoRoot()
	ip := registerInProcess(fs)
	data := ip.data
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quick := fs.Bool("quick", false, "one short round of each path: proves they run, measures little")
	rounds := fs.Int("rounds", 3, "interleaved rounds per comparison")
	instances := fs.Int("instances", 8, "DICOM instances per imaging path and round")
	frames := fs.Int("frames", 60, "walkers-clip frames per ward path and round")
	video := fs.String("video", filepath.Join(data, "video", "walkers-vtest.avi"), "the walkers clip")
	dicomDir := fs.String("dicom-dir", filepath.Join(data, "dicom", "ultrasound"), "real ultrasound DICOM files for the decode comparison")
	hc18Dir := fs.String("hc18", filepath.Join(data, "ultrasound-hc18"), "the shared fetal head folder, for the biometry section")
	only := fs.String("only", "", "measure only these sections, ',' separated: imaging, biometry, ward, peer, dicom")
	peerDir := fs.String("peer-dir", filepath.Join(root, "scripts", "peer-node"), "scripts/peer-node with onnxruntime-node installed (make deps)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	o := bench.Options{
		Engine:   ip.engine(),
		Entries:  models.Builtin(),
		Resolver: ip.resolver(),
		Rounds:   *rounds, Instances: *instances, WardFrames: *frames,
		Video: *video, DICOMDir: *dicomDir, PeerDir: *peerDir, HC18Dir: *hc18Dir,
		Progress: func(s string) { fmt.Fprintln(stderr, "vigil bench:", s) },
	}
	for _, section := range strings.Split(*only, ",") {
		switch section = strings.TrimSpace(section); section {
		case "":
		case "imaging", "biometry", "ward", "peer", "dicom":
			o.Only = append(o.Only, section)
		default:
			return usageError{fmt.Sprintf("--only: unknown section %q (imaging, biometry, ward, peer, dicom)", section)}
		}
	}
	if *quick {
		o = o.Quick()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return report.WriteTable(stdout)
}

// repoRoot is the folder holding scripts/peer-node: the working folder or a parent of it, or
// the parent of the executable's folder (bin/).
func repoRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "scripts", "peer-node", "bench.js")); err == nil {
				return dir
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "."
}
