package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

// phantomUnder writes a phantom of the given seed under fixed UIDs.
func phantomUnder(t *testing.T, seed uint64, study, sop string) []byte {
	t.Helper()
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: seed, Rows: 240, Cols: 320, Frames: 3, Lesions: 1})
	u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames, MMPerPixel: p.Truth.MMPerPixel,
		Region: p.Truth.Region, SeriesDescription: dicomio.PhantomSeriesDescription,
		StudyInstanceUID: study, SeriesInstanceUID: study + ".1", SOPInstanceUID: sop}
	data, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestOneAnalysisPerInstance: 20 parallel uploads of one instance run the model once (29.5:
// all 20 ran it); the others wait and get the stored result.
func TestOneAnalysisPerInstance(t *testing.T) {
	registry := builtinRegistry(t, "us-lesion-demo")
	ts := startServer(t, nil, func(o *Options) {
		o.Registry = registry
		o.Imaging = ImagingOptions{Model: "us-lesion-demo", Limits: dicomio.DefaultLimits, Decoders: dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000}}
	})
	session, err := registry.Session("us-lesion-demo")
	if err != nil {
		t.Fatal(err)
	}
	client := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	// One instance alone: how many model items one analysis takes.
	_, before := session.Stats()
	if _, err := send(ctx, client, phantomUnder(t, 1, "2.25.901", "2.25.901.1"), 32<<10); err != nil {
		t.Fatal(err)
	}
	_, after := session.Stats()
	one := after - before

	data := phantomUnder(t, 2, "2.25.902", "2.25.902.1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh, errs := 0, []error{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := send(ctx, client, data, 32<<10)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if !resp.AlreadyAnalyzed {
				fresh++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 || fresh != 1 {
		t.Fatalf("20 parallel uploads: %d analysed afresh, errors %v; want 1 and none", fresh, errs)
	}
	if _, end := session.Stats(); end-after != one {
		t.Errorf("20 parallel uploads of one instance ran %d model items; one analysis runs %d", end-after, one)
	}
}

// TestOtherContentUnderAUsedUID: another instance (other pixels, another study) or another
// model asked for under a SOP Instance UID already analysed is refused with AlreadyExists,
// naming the conflict (29.6: it got the old result as already analysed); the same file
// again gets its stored result; nothing stored changes. The same instance in another
// lossless transfer syntax is the same content (cmd/vigil's TestAnalyzeRealFiles).
func TestOtherContentUnderAUsedUID(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	client := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	first := phantomUnder(t, 3, "2.25.903", "2.25.903.1")
	resp, err := send(ctx, client, first, 32<<10)
	if err != nil || resp.AlreadyAnalyzed {
		t.Fatalf("first upload: %v, %v", resp, err)
	}
	stored, _, err := ts.store.List(context.Background(), review.Query{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = send(ctx, client, phantomUnder(t, 4, "2.25.903", "2.25.903.1"), 32<<10)
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "other content") {
		t.Fatalf("other pixels under the same UID: %v, want AlreadyExists saying the content differs", err)
	}
	// The same pixels under the same UID in another study.
	_, err = send(ctx, client, phantomUnder(t, 3, "2.25.904", "2.25.903.1"), 32<<10)
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "other content") {
		t.Fatalf("another study under the same UID: %v, want AlreadyExists saying the content differs", err)
	}
	// The same file, with another model asked for.
	stream, err := client.AnalyzeInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: first, Options: &vigilv1.AnalyzeOptions{Model: "fetal-head"}})
	_, err = stream.CloseAndRecv()
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "us-lesion-demo") {
		t.Fatalf("another model asked for: %v, want AlreadyExists naming the model that analysed it", err)
	}
	again, err := send(ctx, client, first, 32<<10)
	if err != nil || !again.AlreadyAnalyzed || len(again.Findings) != len(resp.Findings) {
		t.Fatalf("the same file again: %v, %v; want its stored result", again, err)
	}
	after, _, err := ts.store.List(context.Background(), review.Query{})
	if err != nil || len(after) != len(stored) {
		t.Errorf("stored findings: %d before, %d after (%v)", len(stored), len(after), err)
	}
}
