package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
)

// TestQuickRunMeasuresEveryPath runs the whole benchmark briefly, as `vigil bench --quick`
// does, and checks that every path was measured and every comparison made. It asserts no
// timing: only that each figure exists and is a time.
func TestQuickRunMeasuresEveryPath(t *testing.T) {
	o := Options{
		Entries: models.Builtin(), Resolver: testenv.Resolver(),
		Video:    testenv.Shared(t, "video/walkers-vtest.avi"),
		DICOMDir: testenv.Shared(t, "dicom/ultrasound"),
		HC18Dir:  testenv.Shared(t, "ultrasound-hc18"),
		PeerDir:  filepath.Join(testenv.RepoRoot(), "scripts", "peer-node"),
	}.Quick()
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Machine.Runtime != "1.30.0" || r.Machine.Provider != "cpu" || r.Machine.Cores < 1 || r.Machine.CPU == "" {
		t.Errorf("machine %+v: want ONNX Runtime 1.30.0 on cpu and a CPU named", r.Machine)
	}
	sections := map[string]int{}
	for _, rw := range r.Rows {
		sections[rw.Section]++
		if rw.Samples == 0 || !(rw.P50 > 0) || rw.P25 > rw.P50 || rw.P50 > rw.P75 || rw.P75 > rw.P99 || !(rw.Throughput > 0) {
			t.Errorf("row %q: %d samples, p25 %v p50 %v p75 %v p99 %v, %v/s: want ordered positive figures", rw.Path, rw.Samples, rw.P25, rw.P50, rw.P75, rw.P99, rw.Throughput)
		}
	}
	// imaging: bare, session, in process, gRPC at 1, 4, 16, 16 unbatched, and the 1-worker pair;
	// ward: three paths; peer: 2 models x 2 thread counts x (Vigil, bare, node); dicom: six
	// files through dicomio, and dcmtk's dcmj2pnm on the five it decodes (not JPEG 2000).
	for section, want := range map[string]int{"imaging": 9, "ward": 4, "peer": 12, "dicom": 11} {
		if sections[section] != want {
			t.Errorf("%s: %d rows, want %d", section, sections[section], want)
		}
	}
	names := map[string]bool{}
	for _, ra := range r.Ratios {
		names[ra.Name] = true
		// Every ratio is a number; all but one are quotients of times or rates, and the one
		// that is a difference over a time may fall below zero on a quick run.
		if math.IsNaN(ra.Value) || math.IsInf(ra.Value, 0) || ra.Value <= 0 && !strings.Contains(ra.Name, " - ") {
			t.Errorf("ratio %q is %v", ra.Name, ra.Value)
		}
	}
	for _, want := range []string{
		"imaging: gRPC path / in-process triage, p50 at concurrency 1",
		"imaging: triage's own work / its model calls, in the same in-process runs",
		"imaging: throughput at concurrency 16 / concurrency 1 (gRPC)",
		"ward: Ward stream / models alone, frames/s",
		"peer: Vigil / onnxruntime-node p50, fastestdet, 2 intra-op thread(s)",
		"peer: Vigil / onnxruntime-node p50, movenet-lightning, 1 intra-op thread(s)",
	} {
		if !names[want] {
			t.Errorf("no ratio %q", want)
		}
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ONNX Runtime 1.30.0, provider cpu", "IMAGING", "WARD", "PEER", "DICOM", "RATIOS", "onnxruntime-node 1.30.0"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, table.String())
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || len(back.Rows) != len(r.Rows) {
		t.Errorf("the JSON report does not read back: %v", err)
	}
}
