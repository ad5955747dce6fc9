package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/models"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

// builtinRegistry loads the builtin models on real ONNX Runtime; the named ones must be ready.
func builtinRegistry(t testing.TB, names ...string) *inference.Registry {
	t.Helper()
	engine, err := inference.Open(inference.Config{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v (run `make deps`)", err)
	}
	t.Cleanup(func() { engine.Close() })
	resolver := testenv.Resolver()
	resolver.CacheDir = t.TempDir()
	registry := inference.LoadRegistry(context.Background(), engine, nil, models.Builtin(), resolver)
	for _, name := range names {
		if _, err := registry.Session(name); err != nil {
			t.Fatal(err)
		}
	}
	return registry
}

// withTriage gives the server real ONNX Runtime with the builtin models, and the demo lesion
// model for every request that names none.
func withTriage(t testing.TB) func(*Options) {
	t.Helper()
	registry := builtinRegistry(t, "us-lesion-demo")
	return func(o *Options) {
		o.Registry = registry
		o.Imaging = ImagingOptions{Model: "us-lesion-demo", Limits: dicomio.DefaultLimits,
			Decoders: dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000}}
	}
}

// send streams data in chunks of the given size and returns the response.
func send(ctx context.Context, c vigilv1.ImagingClient, data []byte, chunk int) (*vigilv1.AnalyzeInstanceResponse, error) {
	stream, err := c.AnalyzeInstance(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(data) || i == 0; i += chunk {
		end := min(i+chunk, len(data))
		if err := stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: data[i:end]}); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

func phantomFile(t *testing.T, seed uint64, lesions int) ([]byte, dicomio.PhantomTruth) {
	t.Helper()
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: seed, Rows: 480, Cols: 640, Frames: 6, Lesions: lesions})
	data, err := dicomio.PhantomDICOM(&p)
	if err != nil {
		t.Fatal(err)
	}
	return data, p.Truth
}

func TestAnalyzeCommitsAndIsIdempotent(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	data, truth := phantomFile(t, 900001, 2)

	first, err := send(ctx, c, data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if first.AlreadyAnalyzed || first.FramesAnalyzed != 6 || first.Source.SopInstanceUid != truth.SOPInstance {
		t.Fatalf("first answer: %+v", first)
	}
	if len(first.Findings) == 0 {
		t.Fatal("no findings on a phantom with two lesions")
	}
	// Already stored when the answer came.
	list, _, _ := ts.store.List(context.Background(), reviewQuery(truth.Study))
	if len(list) != len(first.Findings) {
		t.Fatalf("the store has %d findings of the study, the answer %d", len(list), len(first.Findings))
	}
	for _, f := range list {
		if f.Source.SOPInstanceUID != truth.SOPInstance || f.Model.Name != "us-lesion-demo" || f.Model.SHA256 == "" {
			t.Errorf("stored finding %+v lacks its source or model", f)
		}
		if stored, _ := ts.store.Get(context.Background(), f.ID); stored.Overlay == nil || !bytes.HasPrefix(stored.Overlay.Data, []byte("\x89PNG")) {
			t.Errorf("finding %s has no PNG overlay", f.ID)
		}
	}
	// Again, in other chunks: the stored result, no duplicates.
	again, err := send(ctx, c, data, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !again.AlreadyAnalyzed || len(again.Findings) != len(first.Findings) || again.Findings[0].Id != first.Findings[0].Id {
		t.Errorf("resubmission: already %v, %d findings; want the stored %d", again.AlreadyAnalyzed, len(again.Findings), len(first.Findings))
	}
	if list2, _, _ := ts.store.List(context.Background(), reviewQuery(truth.Study)); len(list2) != len(list) {
		t.Errorf("resubmission changed the store: %d findings, was %d", len(list2), len(list))
	}
}

// TestBadInputGetsSpecificCodes sends broken instances: each gets its code, the server keeps
// serving, and the store is not touched.
func TestBadInputGetsSpecificCodes(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	good, _ := phantomFile(t, 900002, 1)
	if _, err := send(ctx, c, good, 1<<20); err != nil {
		t.Fatal(err)
	}
	before, _ := ts.store.LastSequence(context.Background())

	mr, _ := os.ReadFile(testenv.Shared(t, "dicom/other/mr-1024-native16.dcm"))
	random := make([]byte, 200000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	// Files never analysed before: a stored result would answer a resubmission early.
	fresh, _ := phantomFile(t, 900006, 1)
	fresh2, _ := phantomFile(t, 900007, 1)
	absurd, _ := phantomFile(t, 900003, 1)
	absurd = setUS(t, absurd, dicomio.Tag{Group: 0x0028, Element: 0x0010}, 65535)
	absurd = setUS(t, absurd, dicomio.Tag{Group: 0x0028, Element: 0x0011}, 65535)
	// The RLE file's offset table is empty: give it two entries, the second far past the end.
	rle, _ := os.ReadFile(testenv.Shared(t, "dicom/ultrasound/ob-2frame-palette-rle.dcm"))
	bot := []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0}
	i := bytes.Index(rle, bot)
	if i < 0 {
		t.Fatal("the RLE file has no empty offset table")
	}
	table := make([]byte, 8)
	binary.LittleEndian.PutUint32(table[4:], 0x7FFFFFF0)
	pastEnd := append(append(append([]byte(nil), rle[:i+len(bot)]...), table...), rle[i+len(bot):]...)
	binary.LittleEndian.PutUint32(pastEnd[i+16:], 8)

	tests := []struct {
		name string
		data []byte
		want codes.Code
		says string
	}{
		{"truncated", fresh[:len(fresh)/2], codes.InvalidArgument, "truncated"},
		{"random bytes", random, codes.InvalidArgument, "not a DICOM"},
		{"absurd dimensions", absurd, codes.InvalidArgument, "65535 x 65535"},
		{"offset table past the end", pastEnd, codes.InvalidArgument, "offset table"},
		{"wrong modality", mr, codes.FailedPrecondition, "MR"},
		{"empty", nil, codes.InvalidArgument, "not a DICOM"},
	}
	for _, tt := range tests {
		_, err := send(ctx, c, tt.data, 32<<10)
		st := status.Convert(err)
		if st.Code() != tt.want || !strings.Contains(st.Message(), tt.says) {
			t.Errorf("%s: got %v %q, want %v saying %q", tt.name, st.Code(), st.Message(), tt.want, tt.says)
		}
	}

	// A stream that stops midway: the client half-closes after part of the file.
	stream, _ := c.AnalyzeInstance(ctx)
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: fresh2[:len(fresh2)/3]})
	_, err := stream.CloseAndRecv()
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("a stream stopped midway: got %v, want InvalidArgument", err)
	}
	// A chunk over the bound.
	stream, _ = c.AnalyzeInstance(ctx)
	err = stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: make([]byte, MaxChunkBytes+1)})
	if err == nil {
		_, err = stream.CloseAndRecv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("an oversized chunk: got %v, want InvalidArgument", err)
	}

	if after, _ := ts.store.LastSequence(context.Background()); after != before {
		t.Errorf("bad input changed the store: sequence %d, was %d", after, before)
	}
	// Still serving.
	if _, err := send(ctx, c, good, 1<<20); err != nil {
		t.Errorf("after bad input: %v", err)
	}
}

// setUS rewrites the first element with that tag (US, explicit VR) to a new value.
func setUS(t *testing.T, data []byte, tag dicomio.Tag, v uint16) []byte {
	t.Helper()
	out := append([]byte(nil), data...)
	key := []byte{byte(tag.Group), byte(tag.Group >> 8), byte(tag.Element), byte(tag.Element >> 8), 'U', 'S', 2, 0}
	i := bytes.Index(out, key)
	if i < 0 {
		t.Fatalf("no %v in the file", tag)
	}
	binary.LittleEndian.PutUint16(out[i+8:], v)
	return out
}

func reviewQuery(study string) review.Query {
	return review.Query{Filter: review.Filter{StudyUID: study}, PageSize: 100}
}

func TestReviewerCannotSubmitImages(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	data, _ := phantomFile(t, 900004, 1)
	_, err := send(ts.as(auth.RoleReviewer), vigilv1.NewImagingClient(ts.conn), data, 1<<20)
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("got %v, want PermissionDenied", err)
	}
}

func TestAnalyzeProgressReportsEveryFrame(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	data, _ := phantomFile(t, 900005, 1)
	stream, err := vigilv1.NewImagingClient(ts.conn).AnalyzeInstanceProgress(ts.as(auth.RolePACSWorker), grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: data})
	stream.CloseSend()
	var frames []int32
	var result *vigilv1.AnalyzeInstanceResponse
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p := ev.GetProgress(); p != nil {
			frames = append(frames, p.FramesDone)
		}
		if r := ev.GetResult(); r != nil {
			result = r
		}
	}
	if len(frames) != 6 || frames[5] != 6 || result == nil || result.FramesAnalyzed != 6 {
		t.Errorf("progress %v and result %v; want frames 1..6, then the result", frames, result)
	}
}

// withPatient puts a patient's name, ID and birth date into a phantom (whose patient module is
// empty), as a real scanner's file has them.
func withPatient(t *testing.T, data []byte) []byte {
	t.Helper()
	out := data
	for _, e := range []struct {
		tag   []byte
		value string
	}{
		{[]byte{0x10, 0x00, 0x10, 0x00, 'P', 'N', 0, 0}, "DOE^JANE"},
		{[]byte{0x10, 0x00, 0x20, 0x00, 'L', 'O', 0, 0}, "MRN-55501"},
		{[]byte{0x10, 0x00, 0x30, 0x00, 'D', 'A', 0, 0}, "19471103"},
	} {
		i := bytes.Index(out, e.tag)
		if i < 0 {
			t.Fatalf("no empty %x in the phantom", e.tag[:4])
		}
		elem := append(append([]byte(nil), e.tag[:6]...), byte(len(e.value)), 0)
		elem = append(elem, e.value...)
		out = append(append(append([]byte(nil), out[:i]...), elem...), out[i+len(e.tag):]...)
	}
	return out
}

// TestNoPatientDataInLogsOrErrors analyses a file with a patient's identity, and broken copies
// of it: the name, ID and birth date appear in no log line and no error.
func TestNoPatientDataInLogsOrErrors(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	data, _ := phantomFile(t, 900010, 1)
	data = withPatient(t, data)
	broken, _ := phantomFile(t, 900011, 1)
	broken = withPatient(t, broken)
	var answers []string
	for _, in := range [][]byte{data, broken[:len(broken)/2], broken[:1000]} {
		resp, err := send(ctx, c, in, 1<<20)
		answers = append(answers, fmt.Sprint(resp, err))
	}
	for _, secret := range []string{"DOE^JANE", "DOE", "MRN-55501", "19471103"} {
		if strings.Contains(ts.logs.String(), secret) {
			t.Errorf("the log carries %q", secret)
		}
		for _, a := range answers {
			if strings.Contains(a, secret) {
				t.Errorf("an answer carries %q: %s", secret, a)
			}
		}
	}
	if !strings.Contains(ts.logs.String(), "AnalyzeInstance") {
		t.Fatal("no log lines to check")
	}
}

// brokenAnalyses is a store that cannot say whether an instance was analysed.
type brokenAnalyses struct{ review.Store }

func (brokenAnalyses) GetAnalysis(context.Context, string) (review.Analysis, error) {
	return review.Analysis{}, errors.New("review store: disk I/O error")
}

// TestStoreErrorIsNotAFirstAnalysis: when the store fails to say whether an instance was
// analysed, the call fails; it does not analyse the instance again as if it were new.
func TestStoreErrorIsNotAFirstAnalysis(t *testing.T) {
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Review = brokenAnalyses{o.Review} })
	data, _ := phantomFile(t, 100007, 1)
	_, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 1<<20)
	if code := status.Code(err); code == codes.OK || code == codes.InvalidArgument {
		t.Fatalf("AnalyzeInstance with a failing store: %v", err)
	}
	page, _, err := ts.store.List(context.Background(), review.Query{})
	if err != nil || len(page) != 0 {
		t.Errorf("findings stored anyway: %d (%v)", len(page), err)
	}
}

// TestWeightPathsOnlyForAdmins: ListModels tells where the weights sit on disk to an admin only.
func TestWeightPathsOnlyForAdmins(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewModelsClient(ts.conn)
	for _, role := range auth.Roles {
		resp, err := c.ListModels(ts.as(role), &vigilv1.ListModelsRequest{})
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		for _, m := range resp.Models {
			if m.Name != "us-lesion-demo" {
				continue
			}
			if (m.WeightsPath != "") != (role == auth.RoleAdmin) {
				t.Errorf("%s sees weights path %q", role, m.WeightsPath)
			}
		}
	}
}

// TestOverlayBudgetPerInstance: findings past the instance's overlay budget are stored
// without one, and the analysis says so.
func TestOverlayBudgetPerInstance(t *testing.T) {
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Imaging.MaxOverlayBytes = 1 })
	data, truth := phantomFile(t, 900077, 2)
	resp, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Findings) == 0 {
		t.Fatal("no findings on a phantom with two lesions")
	}
	list, _, _ := ts.store.List(context.Background(), reviewQuery(truth.Study))
	for _, f := range list {
		if stored, _ := ts.store.Get(context.Background(), f.ID); stored.Overlay != nil {
			t.Errorf("finding %s stored a %d-byte overlay past a 1-byte budget", f.ID, len(stored.Overlay.Data))
		}
	}
	want := fmt.Sprintf("%d of %d findings are stored without an overlay", len(resp.Findings), len(resp.Findings))
	if len(resp.Notes) != 1 || !strings.Contains(resp.Notes[0], want) || !strings.Contains(resp.Notes[0], "--max-overlay-bytes") {
		t.Errorf("notes %q, want one saying %q and naming the limit", resp.Notes, want)
	}
}

// TestPatientContextForReviewersOnly: the patient and study an instance is of are stored with
// its findings and shown to a reviewer; the PACS worker's answer and watch leave them out, and
// no log line or metric carries them.
func TestPatientContextForReviewersOnly(t *testing.T) {
	metrics := NewMetrics()
	ts := startServer(t, nil, withTriage(t), func(o *Options) { o.Metrics = metrics })
	seed(t, ts.store, 1) // so that a watch from sequence 1 replays all that follows
	ctx, cancel := context.WithCancel(ts.as(auth.RolePACSWorker))
	defer cancel()
	watch, err := vigilv1.NewReviewClient(ts.conn).Watch(ctx, &vigilv1.WatchRequest{AfterSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := phantomFile(t, 900501, 1)
	resp, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), withPatient(t, data), 64<<10)
	if err != nil || len(resp.Findings) == 0 {
		t.Fatalf("analyse: %v", err)
	}
	if resp.Findings[0].Context != nil {
		t.Errorf("the PACS worker's answer carries the patient: %v", resp.Findings[0].Context)
	}
	got, err := vigilv1.NewReviewClient(ts.conn).Get(ts.as(auth.RoleReviewer), &vigilv1.GetRequest{Id: resp.Findings[0].Id})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Finding.Context; c == nil || c.PatientName != "DOE^JANE" || c.PatientId != "MRN-55501" || c.PatientBirthDate != "19471103" ||
		c.SeriesDescription != dicomio.PhantomSeriesDescription {
		t.Errorf("the reviewer sees context %v, want the patient and the series", c)
	}
	ev, err := watch.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Finding.Context != nil {
		t.Errorf("the PACS worker's watch carries the patient: %v", ev.Finding.Context)
	}
	var scrape strings.Builder
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	scrape.WriteString(rec.Body.String())
	for _, secret := range []string{"DOE", "JANE", "MRN-55501", "19471103"} {
		if strings.Contains(ts.logs.String(), secret) || strings.Contains(scrape.String(), secret) {
			t.Errorf("%q is in the log or /metrics", secret)
		}
	}
}

// TestHeaderUIDsAreUIDs: a Study, Series or SOP Class UID that is not a UID (a path that
// would climb out of a worker's folder, bytes that are not UTF-8) is refused with
// InvalidArgument naming the tag, before anything is stored; the same image with proper UIDs
// is then analysed.
func TestHeaderUIDsAreUIDs(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 900777, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
	image := func(study, series string) []byte {
		u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames,
			StudyDescription: "Vigil synthetic phantom", StudyInstanceUID: study, SeriesInstanceUID: series}
		data, err := dicomio.UltrasoundDICOM(&u)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, tt := range []struct {
		name, study, series, tag string
	}{
		{"a path as the study", "/../../victim/secret", "", "(0020,000D)"},
		{"bytes that are not UTF-8", "1.2.\xff\xfe.3", "", "(0020,000D)"},
		{"a series UID of 65 characters", "", "1." + strings.Repeat("9", 63), "(0020,000E)"},
		{"letters in the series", "", "1.2.abc", "(0020,000E)"},
	} {
		_, err := send(ctx, c, image(tt.study, tt.series), 64<<10)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.tag) {
			t.Errorf("%s: got %v, want InvalidArgument naming %s", tt.name, err, tt.tag)
		}
		if strings.Contains(fmt.Sprint(err), "victim") {
			t.Errorf("%s: the refusal repeats the sender's value: %v", tt.name, err)
		}
	}
	if list, _, err := ts.store.List(context.Background(), review.Query{}); err != nil || len(list) != 0 {
		t.Fatalf("after the refusals the store holds %d findings (%v), want none", len(list), err)
	}
	if _, err := send(ctx, c, image("", ""), 64<<10); err != nil {
		t.Fatalf("the same image with made UIDs: %v", err)
	}
}

// TestTinyCalibrationIsNoCalibration: an ultrasound region of 1e-250 cm a pixel (vigild once
// answered Internal, "json: unsupported value: NaN", and the worker retried it for ever) is
// analysed as an uncalibrated image: findings, and no size in mm.
func TestTinyCalibrationIsNoCalibration(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 900778, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
	u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames, MMPerPixel: 1e-249,
		StudyDescription: "Vigil synthetic phantom"}
	data, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10)
	if err != nil {
		t.Fatalf("an image calibrated at 1e-250 cm a pixel: %v, want it analysed as uncalibrated", err)
	}
	if len(resp.Findings) == 0 {
		t.Fatal("no findings on a phantom with a lesion")
	}
	for _, f := range resp.Findings {
		for _, m := range f.Measurements {
			if m.Unit == "mm" || m.Unit == "mm2" {
				t.Errorf("a size in mm from an impossible calibration: %v", m)
			}
		}
	}
}

// TestHugeHeaderFieldsAreCut: an instance whose eleven identifying fields each hold 60,000
// bytes (two such instances once broke `vigil review list`, the page's list and the study's
// export) is analysed, and what is stored of each field fits its VR: 64 bytes for LO, 16 for
// SH, 8 for DA, three groups of 64 for PN (bytes, as dciodvfy counts them), cut at a character
// boundary (the two-byte characters here fill each exactly).
func TestHugeHeaderFieldsAreCut(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 900779, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
	huge := strings.Repeat("ä", 30000) // 60,000 bytes of two-byte characters
	u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames,
		StudyDescription: huge, SeriesDescription: huge,
		Patient: dicomio.Patient{Name: huge, ID: huge, BirthDate: huge, Sex: huge},
		Study:   dicomio.Study{AccessionNumber: huge, Date: huge, Time: huge, ReferringPhysician: huge, ID: huge}}
	data, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := send(ts.as(auth.RolePACSWorker), vigilv1.NewImagingClient(ts.conn), data, 64<<10); err != nil {
		t.Fatalf("an instance with huge header fields: %v", err)
	}
	list, _, err := ts.store.List(context.Background(), review.Query{})
	if err != nil || len(list) == 0 || list[0].Context == nil {
		t.Fatalf("stored %d findings (%v), want them with their context", len(list), err)
	}
	c := list[0].Context
	for _, f := range []struct {
		name, value string
		bytes       int
	}{
		{"patient name (PN)", c.PatientName, 194}, {"patient ID (LO)", c.PatientID, 64}, {"birth date (DA)", c.PatientBirthDate, 8},
		{"sex (CS)", c.PatientSex, 16}, {"accession (SH)", c.AccessionNumber, 16}, {"study date (DA)", c.StudyDate, 8},
		{"study time (TM)", c.StudyTime, 16}, {"study description (LO)", c.StudyDescription, 64},
		{"referring physician (PN)", c.ReferringPhysician, 194}, {"study ID (SH)", c.StudyID, 16},
		{"series description (LO)", c.SeriesDescription, 64},
	} {
		if n := len(f.value); n != f.bytes || !utf8.ValidString(f.value) {
			t.Errorf("%s: %d bytes stored (valid UTF-8: %v), want %d", f.name, n, utf8.ValidString(f.value), f.bytes)
		}
	}
	resp, err := vigilv1.NewReviewClient(ts.conn).List(ts.as(auth.RoleReviewer), &vigilv1.ListRequest{})
	if err != nil || len(resp.Findings) == 0 {
		t.Fatalf("List: %v", err)
	}
	if size := proto.Size(resp); size > 64<<10 {
		t.Errorf("the list reply is %d bytes for %d findings, want it small", size, len(resp.Findings))
	}
}

// TestAStudyIsOnePatient: an instance sent under a study whose findings name another patient
// is refused with FailedPrecondition, before anything is stored, and without naming either
// patient; and a study whose stored findings name two patients (stored before this check)
// is not exported: a report is one patient's.
func TestAStudyIsOnePatient(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	c := vigilv1.NewImagingClient(ts.conn)
	ctx := ts.as(auth.RolePACSWorker)
	study := dicomio.NewUID()
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 900780, Rows: 240, Cols: 320, Frames: 1, Lesions: 1})
	image := func(patientID string) []byte {
		u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames, StudyInstanceUID: study,
			Patient: dicomio.Patient{Name: "DOE^JANE", ID: patientID}}
		data, err := dicomio.UltrasoundDICOM(&u)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	if _, err := send(ctx, c, image("PID-FIRST"), 64<<10); err != nil {
		t.Fatal(err)
	}
	before, _, _ := ts.store.List(context.Background(), review.Query{})
	_, err := send(ctx, c, image("PID-SECOND"), 64<<10)
	if status.Code(err) != codes.FailedPrecondition || strings.Contains(err.Error(), "PID-") {
		t.Errorf("another patient's instance under the study: got %v, want FailedPrecondition naming no patient", err)
	}
	after, _, _ := ts.store.List(context.Background(), review.Query{})
	if len(after) != len(before) {
		t.Errorf("the refused instance stored findings: %d before, %d after", len(before), len(after))
	}
	if _, err := send(ctx, c, image("PID-FIRST"), 64<<10); err != nil {
		t.Errorf("the same patient's next instance under the study: %v", err)
	}

	// Two patients' findings under one study, put straight into the store, both accepted.
	mixed := dicomio.NewUID()
	var fs []review.Finding
	for _, id := range []string{"PID-A", "PID-B"} {
		fs = append(fs, review.Finding{Pipeline: review.PipelineTriage, Label: "hypoechoic lesion", Score: 0.9, Priority: 1,
			Model:   review.ModelRef{Name: "us-lesion-demo", Version: "1"},
			Source:  review.Source{StudyInstanceUID: mixed, SOPInstanceUID: dicomio.NewUID(), Modality: "US"},
			Context: &review.Context{PatientName: "X^" + id, PatientID: id}})
	}
	stored, err := ts.store.Add(context.Background(), "test", fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range stored {
		if _, err := ts.store.Decide(context.Background(), "dr.test", f.ID, f.Version, review.Decision{Outcome: review.OutcomeAccept, ReasonCode: "confirmed"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = vigilv1.NewReviewClient(ts.conn).ExportReport(ts.as(auth.RoleAdmin), &vigilv1.ExportReportRequest{StudyInstanceUid: mixed})
	if status.Code(err) != codes.FailedPrecondition || strings.Contains(err.Error(), "PID-") {
		t.Errorf("exporting a study with two patients' findings: got %v, want FailedPrecondition naming no patient", err)
	}
}
