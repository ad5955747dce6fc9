package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc/status"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// analyzeChunk is the size of each chunk sent; the server takes up to 4 MiB.
const analyzeChunk = 1 << 20

// analyzedJSON is one file in `vigil analyze --json` (docs/cli.md): either findings or an error.
type analyzedJSON struct {
	File            string                `json:"file"`
	SOPInstanceUID  string                `json:"sop_instance_uid,omitempty"`
	AlreadyAnalyzed bool                  `json:"already_analyzed,omitempty"`
	FramesAnalyzed  int32                 `json:"frames_analyzed,omitempty"`
	Model           string                `json:"model,omitempty"`
	Routing         string                `json:"routing,omitempty"`
	Notes           []string              `json:"notes,omitempty"`
	Findings        []analyzedFindingJSON `json:"findings,omitempty"`
	Error           *errorJSON            `json:"error,omitempty"`
}

type analyzedFindingJSON struct {
	ID       string     `json:"id"`
	Label    string     `json:"label"`
	Score    float32    `json:"score"`
	Priority int32      `json:"priority"`
	Frames   framesJSON `json:"frames"`
	Box      *boxJSON   `json:"box"`
	SizeMM   float64    `json:"size_mm"`
	// Measurements are every measurement with its unit and quality.
	Measurements []measurementJSON `json:"measurements"`
	Evidence     []string          `json:"evidence,omitempty"`
}

type errorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func runAnalyze(g *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	asJSON := fs.Bool("json", false, "print JSON, one object per file (docs/cli.md)")
	model := fs.String("model", "", "model to run (default: the one whose routes match each file; vigil models lists them)")
	overlays := fs.String("overlays", "", "write each finding's annotated image to this folder as ID.png")
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) == 0 {
		return usageError{"usage: vigil analyze FILE... [--json] [--overlays DIR]"}
	}
	if *overlays != "" {
		if err := os.MkdirAll(*overlays, 0o755); err != nil {
			return err
		}
	}
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := vigilv1.NewImagingClient(conn)

	var results []analyzedJSON
	failed := 0
	for _, file := range files {
		res := analyzedJSON{File: file}
		resp, err := analyzeFile(g, client, file, *model, *overlays != "")
		if err != nil {
			st := status.Convert(err)
			res.Error = &errorJSON{Code: st.Code().String(), Message: st.Message()}
			failed++
		} else {
			res.SOPInstanceUID = resp.Source.GetSopInstanceUid()
			res.AlreadyAnalyzed, res.FramesAnalyzed = resp.AlreadyAnalyzed, resp.FramesAnalyzed
			res.Model, res.Routing, res.Notes = resp.GetModel().GetName(), resp.Routing, resp.Notes
			res.Findings = []analyzedFindingJSON{}
			for _, f := range resp.Findings {
				af := analyzedFindingJSON{ID: f.Id, Label: f.Label, Score: f.Score, Priority: f.Priority,
					Frames: framesJSON{f.FirstFrame, f.LastFrame, f.BestFrame}, Box: boxOf(f.Box),
					Measurements: measurementsOf(f.Measurements), Evidence: f.Evidence}
				for _, m := range f.Measurements {
					if m.Name == "long axis" && m.Unit == "mm" {
						af.SizeMM = m.Value
					}
				}
				res.Findings = append(res.Findings, af)
				if *overlays != "" && f.Overlay != nil {
					if err := os.WriteFile(filepath.Join(*overlays, f.Id+".png"), f.Overlay.Data, 0o600); err != nil {
						return err
					}
				}
			}
		}
		results = append(results, res)
	}
	if *asJSON {
		if err := printJSON(stdout, results); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tFINDING\tLABEL\tSCORE\tPRI\tFRAMES\tBOX (x,y,w,h)\tSIZE")
		for _, r := range results {
			name := filepath.Base(r.File)
			switch {
			case r.Error != nil:
				fmt.Fprintf(tw, "%s\t%s: %s\n", name, r.Error.Code, r.Error.Message)
			case r.Model == "":
				fmt.Fprintf(tw, "%s\tnot analysed: %s\n", name, r.Routing)
			case len(r.Findings) == 0:
				fmt.Fprintf(tw, "%s\tno findings (%d frames, %s)%s\n", name, r.FramesAnalyzed, r.Model, notesText(r.Notes))
			}
			for _, f := range r.Findings {
				size := "-"
				if f.SizeMM > 0 {
					size = fmt.Sprintf("%.1f mm", f.SizeMM)
				}
				for _, m := range f.Measurements {
					if m.Name == "HC" && m.Unit == "mm" {
						size = fmt.Sprintf("HC %.1f mm", m.Value)
						if m.LowQuality {
							size += " (LOW QUALITY)"
						}
					}
				}
				if len(f.Measurements) == 0 && len(r.Notes) > 0 {
					size = r.Notes[0]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%d\t%d-%d (best %d)\t%.0f,%.0f,%.0f,%.0f\t%s\n", name, f.ID, f.Label, f.Score, f.Priority,
					f.Frames.First, f.Frames.Last, f.Frames.Best, f.Box.X, f.Box.Y, f.Box.Width, f.Box.Height, size)
			}
		}
		tw.Flush()
	}
	if failed > 0 {
		return errAnalyzeFailed{failed, len(files)}
	}
	return nil
}

type errAnalyzeFailed struct{ failed, total int }

func (e errAnalyzeFailed) Error() string {
	return fmt.Sprintf("%d of %d files could not be analysed", e.failed, e.total)
}

// analyzeFile streams one file in chunks and returns the server's answer.
func analyzeFile(g *globals, client vigilv1.ImagingClient, file, model string, overlays bool) (*vigilv1.AnalyzeInstanceResponse, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ctx, cancel := g.context()
	defer cancel()
	stream, err := client.AnalyzeInstance(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, analyzeChunk)
	first := true
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 || first {
			req := &vigilv1.AnalyzeInstanceRequest{Chunk: buf[:n]}
			if first {
				req.Options = &vigilv1.AnalyzeOptions{Model: model, IncludeOverlays: overlays}
				first = false
			}
			if err := stream.Send(req); err != nil {
				if errors.Is(err, io.EOF) {
					break // the server answered early (a stored result, or an error): read it
				}
				return nil, err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	return stream.CloseAndRecv()
}

func notesText(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return ": " + strings.Join(notes, "; ")
}
