package pacs

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// archive is a fake archive: every instance at once, then nothing new.
type archive struct {
	insts []Instance
	files map[string][]byte
}

func (a *archive) Changes(_ context.Context, cursor string) ([]Instance, string, bool, error) {
	if cursor == "" {
		return a.insts, "1", false, nil
	}
	return nil, cursor, false, nil
}

func (a *archive) Retrieve(_ context.Context, inst Instance) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(a.files[inst.Ref])), nil
}

func (a *archive) Store(context.Context, []byte) error { return nil }

// imaging answers by what the file holds: "internal" with Internal, "refused" with
// InvalidArgument, anything else with an analysis without findings. It counts the sends.
type imaging struct {
	vigilv1.UnimplementedImagingServer
	mu    sync.Mutex
	sends map[string]int
}

func (s *imaging) AnalyzeInstance(stream grpc.ClientStreamingServer[vigilv1.AnalyzeInstanceRequest, vigilv1.AnalyzeInstanceResponse]) error {
	var data []byte
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, req.Chunk...)
	}
	s.mu.Lock()
	s.sends[string(data)]++
	s.mu.Unlock()
	switch string(data) {
	case "internal":
		return status.Error(codes.Internal, "json: unsupported value: NaN")
	case "refused":
		return status.Error(codes.InvalidArgument, "dicomio: malformed DICOM: (0020,000D) Study Instance UID (20 bytes) is not a UID")
	}
	return stream.SendAndClose(&vigilv1.AnalyzeInstanceResponse{})
}

type catalogue struct {
	vigilv1.UnimplementedModelsServer
}

func (catalogue) ListModels(context.Context, *vigilv1.ListModelsRequest) (*vigilv1.ListModelsResponse, error) {
	return &vigilv1.ListModelsResponse{Models: []*vigilv1.ModelInfo{{Name: "m", State: vigilv1.ModelState_MODEL_STATE_READY,
		RouteRules: []*vigilv1.Route{{Modality: []string{"US"}}}}}}, nil
}

// grpcServer serves img and a catalogue whose one model takes every ultrasound instance, on a
// loopback port, and returns a client connection to it.
func grpcServer(t *testing.T, img *imaging) (*grpc.Server, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	vigilv1.RegisterImagingServer(srv, img)
	vigilv1.RegisterModelsServer(srv, catalogue{})
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return srv, conn
}

// newWorker is a worker on src and the server at conn, polling every 20 ms.
func newWorker(src Source, conn *grpc.ClientConn, dir string) *Worker {
	return &Worker{Source: src, Imaging: vigilv1.NewImagingClient(conn), Review: vigilv1.NewReviewClient(conn),
		Models: vigilv1.NewModelsClient(conn), Dir: dir, Poll: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestOneBadInstanceStopsNothing: an instance the archive lists with a path for its study
// UID is given up on unsent; one the server answers with Internal is sent MaxTries times and
// then given up on, one it refuses is given up on at once, each with its reason in the state;
// the good instance after them is analysed, and nothing is sent again after a restart.
func TestOneBadInstanceStopsNothing(t *testing.T) {
	img := &imaging{sends: map[string]int{}}
	srv, conn := grpcServer(t, img)
	defer srv.Stop()
	defer conn.Close()
	arch := &archive{
		insts: []Instance{{Ref: "x", SOPInstanceUID: "1.2.3.9", StudyInstanceUID: "/../../victim/secret", Modality: "US"},
			{Ref: "a", SOPInstanceUID: "1.2.3.1", StudyInstanceUID: "1.2.3", Modality: "US"},
			{Ref: "b", SOPInstanceUID: "1.2.3.2", StudyInstanceUID: "1.2.3", Modality: "US"},
			{Ref: "c", SOPInstanceUID: "1.2.3.3", StudyInstanceUID: "1.2.3", Modality: "US"}},
		files: map[string][]byte{"x": []byte("path"), "a": []byte("internal"), "b": []byte("refused"), "c": []byte("good")},
	}
	dir := t.TempDir()
	run := func() {
		w := newWorker(arch, conn, dir)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		done := make(chan struct{})
		go func() { w.Run(ctx); close(done) }()
		for ctx.Err() == nil {
			st, err := LoadState(dir)
			if err == nil && st.Cursor == "1" {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
	}
	run()
	st, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Failed["1.2.3.1"], "Internal 3 times") || !strings.Contains(st.Failed["1.2.3.1"], "NaN") {
		t.Errorf("the instance answered Internal: failed %q, want given up on after 3 tries with the reason", st.Failed["1.2.3.1"])
	}
	if !strings.HasPrefix(st.Failed["1.2.3.2"], "InvalidArgument: ") {
		t.Errorf("the refused instance: failed %q, want InvalidArgument with the reason", st.Failed["1.2.3.2"])
	}
	if !strings.Contains(st.Failed["1.2.3.9"], "not a UID") {
		t.Errorf("the instance the archive lists under a path for a study UID: failed %q, want given up on, unsent", st.Failed["1.2.3.9"])
	}
	if _, ok := st.Analysed["1.2.3.3"]; !ok || st.Failed["1.2.3.3"] != "" {
		t.Errorf("the good instance after them was not analysed: analysed %v, failed %v", st.Analysed, st.Failed)
	}
	img.mu.Lock()
	sends := map[string]int{"internal": img.sends["internal"], "refused": img.sends["refused"], "good": img.sends["good"], "path": img.sends["path"]}
	img.mu.Unlock()
	if sends["internal"] != MaxTries || sends["refused"] != 1 || sends["good"] != 1 || sends["path"] != 0 {
		t.Errorf("sends %v, want internal %d, refused 1, good 1, path 0", sends, MaxTries)
	}
	// A restart goes on from the state: the archive is read from the start again (a new
	// cursor), and no instance is sent again.
	st.Cursor = ""
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	run()
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.sends["internal"] != MaxTries || img.sends["refused"] != 1 || img.sends["good"] != 1 {
		t.Errorf("after a restart, sends %v: an instance was sent again", img.sends)
	}
}
