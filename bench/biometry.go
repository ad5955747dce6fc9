package bench

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/hc18"
	"github.com/vigil-health/vigil/pipelines/biometry"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

const biometryModel = "fetal-head"

// measureBiometry times the fetal head measurement on a held-apart HC18 image wrapped as
// calibrated DICOM: in process (with the model's calls timed inside it, so that the
// pipeline's own work can be set against them) and through gRPC AnalyzeInstance, in
// interleaved rounds at concurrency 1.
func measureBiometry(ctx context.Context, rg *rig, o Options, r *Report) error {
	o.Progress("biometry: in-process measurement and gRPC at concurrency 1")
	folder, err := hc18.Read(o.HC18Dir)
	if err != nil {
		return err
	}
	images := folder.Of(hc18.HeldApart)
	if len(images) == 0 {
		return fmt.Errorf("no held-apart images in %s", o.HC18Dir)
	}
	file, err := images[0].FetalHeadDICOM(false)
	if err != nil {
		return err
	}
	timed := &timedModel{Model: rg.Session(biometryModel)}
	inProcess := func() error {
		rd, err := dicomio.Open(bytes.NewReader(file), dicomio.Options{})
		if err != nil {
			return err
		}
		res, err := biometry.Analyze(ctx, timed, rd)
		if err == nil && res.Head == nil {
			err = fmt.Errorf("no head measured: %s", res.NoHead)
		}
		return err
	}
	client := vigilv1.NewImagingClient(rg.Conn)
	callCtx := rg.As(ctx, auth.RolePACSWorker)
	overGRPC := func() error {
		data, err := images[0].FetalHeadDICOM(false) // a new SOP Instance UID: never answered from the store
		if err != nil {
			return err
		}
		stream, err := client.AnalyzeInstance(callCtx)
		if err != nil {
			return err
		}
		if err := stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: data, Options: &vigilv1.AnalyzeOptions{Model: biometryModel}}); err != nil {
			return err
		}
		resp, err := stream.CloseAndRecv()
		if err == nil && (resp.AlreadyAnalyzed || len(resp.Findings) != 1) {
			err = fmt.Errorf("gRPC biometry: already analyzed %v, %d findings", resp.AlreadyAnalyzed, len(resp.Findings))
		}
		return err
	}
	var procT, grpcT []time.Duration
	var procAll, grpcAll time.Duration
	for range o.Rounds {
		before := timed.total
		if err := inProcess(); err != nil { // untimed: each path starts warm
			return err
		}
		timed.warm += timed.total - before
		d, all, err := timeEach(o.Instances, inProcess)
		if err != nil {
			return err
		}
		procT, procAll = append(procT, d...), procAll+all
		if err := overGRPC(); err != nil {
			return err
		}
		if d, all, err = timeEach(o.Instances, overGRPC); err != nil {
			return err
		}
		grpcT, grpcAll = append(grpcT, d...), grpcAll+all
	}
	procRow := row("biometry", "fetal head in process: DICOM decode, model, ellipse fit, overlay", 1, "instance", procT, procAll)
	grpcRow := row("biometry", "gRPC AnalyzeInstance on loopback, committed to SQLite", 1, "instance", grpcT, grpcAll)
	r.Rows = append(r.Rows, procRow, grpcRow)
	inModel := (timed.total - timed.warm).Seconds() / procAll.Seconds()
	r.ratio("biometry: the pipeline's own work / its model calls, in the same in-process runs", (1-inModel)/inModel, 0.20, true)
	r.info("biometry: gRPC path / in-process, p50 at concurrency 1", grpcRow.P50/procRow.P50)
	return nil
}
