// Command vigil is Vigil's command-line client: analyze, bridge, review, health, models and
// tokens talk to a server; bench measures the whole service in process.
//
// Every subcommand that talks to a server takes --server and --token (or VIGIL_SERVER and
// VIGIL_TOKEN), before or after the subcommand's name. Output is a table for people, or with
// --json a stable document for scripts (docs/cli.md).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/internal/fileperm"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the call failed, or the answer is "no" (health not SERVING)
	exitUsage = 2
)

type command struct {
	name, summary string
	run           func(g *globals, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"analyze", "send DICOM files to Imaging and print their findings", runAnalyze},
	{"audit", "`audit verify`: check the audit's hash chain in a data folder or a PostgreSQL store (exit 1 names the first bad record)", runAudit},
	{"backup", "copy the store consistently while the server runs (its chain checked), with its tokens", runBackup},
	{"restore", "put a backup (the store and its tokens) into an empty data folder", runRestore},
	{"migrate", "bring a PostgreSQL store's schema to this build's version (vigild does it at start too)", runMigrate},
	{"bench", "measure Vigil beside the bare runtime, onnxruntime-node and dcmtk, in one run (in process)", runBench},
	{"bridge", "stream a video file, RTSP feed or camera to Ward and print the events", runBridge},
	{"eval", "`eval falls`: measure fall alerts against labelled clips, through the Ward service (in process)", runEval},
	{"health", "check that the server is SERVING (exit 0) or not (exit 1)", runHealth},
	{"pacs", "connect a PACS (Orthanc or DICOMweb) to Vigil until stopped; `pacs status` shows what it has done", runPACS},
	{"models", "list the models, their state and provider; `models resolve` fetches weights", runModels},
	{"phantoms", "write synthetic ultrasound loops (DICOM and truth), or the demo model's training arrays", runPhantoms},
	{"fetal-heads", "write shared fetal head images (HC18) as calibrated obstetric ultrasound DICOM", runFetalHeads},
	{"review", "the worklist: list, show, claim, accept, reject, amend, release, counts, export", runReview},
	{"token", "`token add`, `token list`, `token revoke`: manage bearer tokens in a data folder", runToken},
}

func main() {
	fileperm.Private() // backups, SR exports and overlays hold patient data
	os.Exit(vigil(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake in the command line; it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func vigil(args []string, stdout, stderr io.Writer) int {
	g := defaultGlobals()
	fs := flag.NewFlagSet("vigil", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vigil [--server ADDR] [--token TOKEN] COMMAND [ARGS]\n\ncommands:\n")
		for _, c := range commands {
			fmt.Fprintf(stderr, "  %-8s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(&g, rest, stdout, stderr)
		var ue usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "vigil %s: %v\n", name, err)
			return exitUsage
		case errors.Is(err, errNotServing):
			return exitFail
		case errors.As(err, new(errAnalyzeFailed)):
			fmt.Fprintf(stderr, "vigil %s: %v\n", name, err)
			return exitFail
		}
		if st, ok := status.FromError(err); ok && st.Code() != 0 {
			fmt.Fprintf(stderr, "vigil %s: %s: %s\n", name, st.Code(), st.Message())
		} else {
			fmt.Fprintf(stderr, "vigil %s: %v\n", name, err)
		}
		return exitFail
	}
	fmt.Fprintf(stderr, "vigil: unknown command %q\n", name)
	fs.Usage()
	return exitUsage
}
