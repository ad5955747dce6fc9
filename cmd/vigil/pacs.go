package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-health/vigil/pacs"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

const pacsUsage = `usage:
  vigil --server ADDR --token TOKEN pacs --orthanc http://HOST:PORT [--state-dir DIR] [--poll 2s] [--metrics HOST:PORT]
        [--archive-user NAME] [--archive-password-file FILE]   (or the password in $VIGIL_ARCHIVE_PASSWORD)
  vigil --server ADDR --token TOKEN pacs --dicomweb URL [--state-dir DIR] ...
  vigil pacs status [--state-dir DIR] [--json]`

// runPACS connects a PACS to Vigil until stopped (SIGINT or SIGTERM): see package pacs.
func runPACS(g *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return pacsStatus(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("pacs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	orthanc := fs.String("orthanc", "", "an Orthanc server's REST API, http://host:port (its DICOMweb plugin at /dicom-web stores the reports)")
	dicomweb := fs.String("dicomweb", "", "any other archive's DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)")
	stateDir := fs.String("state-dir", "pacs-state", "where the worker keeps its cursor and what it sent")
	poll := fs.Duration("poll", 2*time.Second, "how often the archive is asked for new instances")
	metricsAddr := fs.String("metrics", "", "serve the worker's /metrics at this address (empty: off)")
	user := fs.String("archive-user", "", "the archive's user name for HTTP basic auth; the password comes from $VIGIL_ARCHIVE_PASSWORD or --archive-password-file")
	passwordFile := fs.String("archive-password-file", "", "a file holding the archive's password (one line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*orthanc == "") == (*dicomweb == "") {
		return usageError{"give one of --orthanc and --dicomweb\n" + pacsUsage}
	}
	for _, raw := range []string{*orthanc, *dicomweb} {
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			return usageError{"the archive's URL holds credentials, which every process list shows: give --archive-user, and the password in $VIGIL_ARCHIVE_PASSWORD or --archive-password-file"}
		}
	}
	password := os.Getenv("VIGIL_ARCHIVE_PASSWORD")
	if *passwordFile != "" {
		data, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("--archive-password-file: %w", err)
		}
		password = strings.TrimRight(string(data), "\r\n")
	}
	client := pacs.NewHTTPClient(5 * time.Minute)
	var source pacs.Source
	if *dicomweb != "" {
		a := pacs.NewDICOMweb(*dicomweb, client)
		a.SetCredentials(*user, password)
		source = a
	} else {
		a := pacs.NewOrthanc(*orthanc, client)
		a.SetCredentials(*user, password)
		source = a
	}
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	w := &pacs.Worker{Source: source, Imaging: vigilv1.NewImagingClient(conn), Review: vigilv1.NewReviewClient(conn),
		Models: vigilv1.NewModelsClient(conn), Dir: *stateDir, Log: log, Poll: *poll, Metrics: pacs.NewMetrics()}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *metricsAddr != "" {
		lis, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(w.Metrics.Registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(lis)
		defer srv.Close()
		log.Info("metrics", slog.String("address", lis.Addr().String()))
	}
	log.Info("pacs worker started", slog.String("state_dir", *stateDir))
	return w.Run(ctx)
}

// pacsStatus prints what a worker's state folder says it has done.
func pacsStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pacs status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", "pacs-state", "the worker's state folder")
	asJSON := fs.Bool("json", false, "print the state as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*stateDir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no worker state in %s", *stateDir)
	}
	st, err := pacs.LoadState(*stateDir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	stored, waiting, nothing := 0, 0, 0
	var studies []string
	for uid, s := range st.Studies {
		switch {
		case s.Stored:
			stored++
		case s.Nothing:
			nothing++
		default:
			waiting++
			studies = append(studies, uid)
		}
	}
	sort.Strings(studies)
	fmt.Fprintf(stdout, "cursor %q, review changes seen up to %d\n", st.Cursor, st.WatchAfter)
	fmt.Fprintf(stdout, "instances sent %d, skipped (no route) %d\n", len(st.Analysed), st.Skipped)
	fmt.Fprintf(stdout, "studies: %d reported, %d with nothing to report (all rejected), %d waiting for decisions\n", stored, nothing, waiting)
	for _, uid := range studies {
		s := st.Studies[uid]
		decided := 0
		for _, state := range s.Findings {
			if state != "pending" && state != "claimed" {
				decided++
			}
		}
		fmt.Fprintf(stdout, "  %s: %d of %d findings decided\n", tt(uid), decided, len(s.Findings))
	}
	if len(st.Failed) > 0 {
		fmt.Fprintf(stdout, "instances given up on: %d\n", len(st.Failed))
		failed := make([]string, 0, len(st.Failed))
		for uid := range st.Failed {
			failed = append(failed, uid)
		}
		sort.Strings(failed)
		for _, uid := range failed {
			fmt.Fprintf(stdout, "  %s: %s\n", tt(uid), tt(st.Failed[uid]))
		}
	}
	if st.Errors > 0 {
		fmt.Fprintf(stdout, "errors %d, the last at %s: %s\n", st.Errors, st.LastErrorAt.Format(time.RFC3339), tt(st.LastError))
	}
	return nil
}
