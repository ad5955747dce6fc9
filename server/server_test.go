package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/biometry"
	"github.com/vigil-health/vigil/pipelines/detect"
	"github.com/vigil-health/vigil/pipelines/pose"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	conn *grpc.ClientConn
	addr string
	// tokensPath is the tokens file the server reads.
	tokensPath string
	tokens     map[auth.Role]string
	logs       *syncBuffer
	srv        *Server
	store      *review.SQLite
	// review is the store the server uses: store, unless an option gave another.
	review review.Store
}

// startServer runs a real server on a loopback port with one token per role. extra registers
// more services before serving. The registry has no models: these tests are about transport.
func startServer(t testing.TB, extra func(*grpc.Server), options ...func(*Options)) *testServer {
	t.Helper()
	tokensPath := filepath.Join(t.TempDir(), "tokens.json")
	ts := &testServer{tokens: map[auth.Role]string{}, logs: &syncBuffer{}, tokensPath: tokensPath}
	for _, role := range auth.Roles {
		tok, err := auth.AddToken(tokensPath, role, "test-"+string(role))
		if err != nil {
			t.Fatal(err)
		}
		ts.tokens[role] = tok
	}
	tokens, err := auth.OpenTokenFile(tokensPath)
	if err != nil {
		t.Fatal(err)
	}
	registry := inference.LoadRegistry(context.Background(), nil, errors.New("not needed"), nil, &models.Resolver{})
	store, err := review.OpenSQLite(filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ts.store = store
	opts := Options{Logger: slog.New(slog.NewTextHandler(ts.logs, nil)), Tokens: tokens, Registry: registry, Review: store}
	for _, o := range options {
		o(&opts)
	}
	ts.review = opts.Review
	ts.srv = New(opts)
	if extra != nil {
		extra(ts.srv.grpc)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = lis.Addr().String()
	go ts.srv.Serve(lis)
	ts.srv.SetServing()
	ts.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.conn.Close()
		ts.srv.Shutdown(context.Background())
	})
	return ts
}

func (ts *testServer) as(role auth.Role) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+ts.tokens[role])
}

func TestAuthentication(t *testing.T) {
	ts := startServer(t, nil)
	models := vigilv1.NewModelsClient(ts.conn)
	tests := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no token", context.Background(), codes.Unauthenticated},
		{"unknown token", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer vgl_forged"), codes.Unauthenticated},
		{"not bearer", metadata.AppendToOutgoingContext(context.Background(), "authorization", "Basic dXNlcjpwdw=="), codes.Unauthenticated},
		{"valid token", ts.as(auth.RoleReviewer), codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := models.ListModels(tt.ctx, &vigilv1.ListModelsRequest{})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
		})
	}
	// Health needs no token, so that probes work.
	resp, err := healthpb.NewHealthClient(ts.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: got %v, %v; want SERVING", resp, err)
	}
}

// TestRoleTable calls every listed method with every role: a role the table allows reaches the
// handler (Unimplemented for services still to come, or OK), any other gets PermissionDenied.
func TestRoleTable(t *testing.T) {
	ts := startServer(t, nil)
	call := func(ctx context.Context, method string) error {
		desc := methodDesc(method)
		if desc.stream {
			s, err := ts.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
			if err != nil {
				return err
			}
			s.CloseSend()
			return s.RecvMsg(new(emptypb.Empty))
		}
		return ts.conn.Invoke(ctx, method, &emptypb.Empty{}, new(emptypb.Empty))
	}
	for method, roles := range methodRoles {
		if strings.Contains(method, "Reflection") {
			continue
		}
		for _, role := range auth.Roles {
			err := call(ts.as(role), method)
			got := status.Code(err)
			mayCall := role == auth.RoleAdmin
			for _, r := range roles {
				mayCall = mayCall || r == role
			}
			if mayCall && got == codes.PermissionDenied || !mayCall && got != codes.PermissionDenied {
				t.Errorf("%s as %s: got %v (%v); allowed=%v", method, role, got, err, mayCall)
			}
		}
	}
}

func methodDesc(method string) struct{ stream bool } {
	for _, sd := range []grpc.ServiceDesc{vigilv1.Imaging_ServiceDesc, vigilv1.Ward_ServiceDesc, vigilv1.Review_ServiceDesc, vigilv1.Models_ServiceDesc} {
		for _, s := range sd.Streams {
			if "/"+sd.ServiceName+"/"+s.StreamName == method {
				return struct{ stream bool }{true}
			}
		}
	}
	return struct{ stream bool }{false}
}

// TestEveryMethodIsInTheRoleTable keeps the table whole: a new RPC must say who may call it.
func TestEveryMethodIsInTheRoleTable(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{vigilv1.Imaging_ServiceDesc, vigilv1.Ward_ServiceDesc, vigilv1.Review_ServiceDesc, vigilv1.Models_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if _, ok := methodRoles[full]; !ok {
				t.Errorf("%s is not in methodRoles", full)
			}
		}
	}
}

func TestSpecificPermissions(t *testing.T) {
	ts := startServer(t, nil)
	review := vigilv1.NewReviewClient(ts.conn)
	_, err := review.Decide(ts.as(auth.RolePACSWorker), &vigilv1.DecideRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "pacs-worker") {
		t.Errorf("pacs-worker deciding: got %v, want PermissionDenied naming the role", err)
	}
	stream, err := vigilv1.NewImagingClient(ts.conn).AnalyzeInstance(ts.as(auth.RoleReviewer))
	if err == nil {
		_, err = stream.CloseAndRecv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("reviewer submitting an image: got %v, want PermissionDenied", err)
	}
}

// panicService is a test service whose handler panics.
var panicService = grpc.ServiceDesc{
	ServiceName: "vigil.test.Panic",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Boom",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(context.Context, any) (any, error) { panic("boom: index out of range") }
			return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/vigil.test.Panic/Boom"}, handler)
		},
	}},
}

func TestPanicBecomesInternalAndServerKeepsServing(t *testing.T) {
	ts := startServer(t, func(g *grpc.Server) { g.RegisterService(&panicService, struct{}{}) })
	err := ts.conn.Invoke(ts.as(auth.RoleAdmin), "/vigil.test.Panic/Boom", &emptypb.Empty{}, new(emptypb.Empty))
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("got %v, want Internal without the panic's text", err)
	}
	if !strings.Contains(ts.logs.String(), "handler panicked") {
		t.Errorf("the panic was not logged: %s", ts.logs.String())
	}
	if _, err := vigilv1.NewModelsClient(ts.conn).ListModels(ts.as(auth.RoleAdmin), &vigilv1.ListModelsRequest{}); err != nil {
		t.Fatalf("after a panic: %v", err)
	}
}

func TestLogLinesCarryNoRequestContents(t *testing.T) {
	ts := startServer(t, nil)
	const marker = "PATIENT^NAME-1.2.840.99999"
	vigilv1.NewReviewClient(ts.conn).Get(ts.as(auth.RoleReviewer), &vigilv1.GetRequest{Id: marker})
	vigilv1.NewReviewClient(ts.conn).ExportReport(ts.as(auth.RoleReviewer), &vigilv1.ExportReportRequest{StudyInstanceUid: marker})
	logs := ts.logs.String()
	if !strings.Contains(logs, "/vigil.v1.Review/Get") {
		t.Fatalf("no log line for the call: %s", logs)
	}
	if strings.Contains(logs, marker) {
		t.Errorf("request contents reached the log: %s", logs)
	}
}

func TestShutdownSaysNotServingFirst(t *testing.T) {
	ts := startServer(t, nil)
	health := healthpb.NewHealthClient(ts.conn)
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	watch, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("got %v, %v; want SERVING", first, err)
	}
	done := make(chan struct{})
	go func() {
		// The open watch holds the drain until its deadline: Shutdown must not wait forever.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		close(done)
	}()
	next, err := watch.Recv()
	if err != nil || next.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("during shutdown: got %v, %v; want NOT_SERVING", next, err)
	}
	<-done
	if _, err := watch.Recv(); err == nil {
		t.Fatalf("the watch stream outlived the server")
	}
}

func TestToStatus(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("preprocess: %w: input wants [1 3 352 352]", inference.ErrBadInput), codes.InvalidArgument},
		{fmt.Errorf("%w: 64 waiting", inference.ErrOverloaded), codes.ResourceExhausted},
		{fmt.Errorf("%w: x", inference.ErrUnknownModel), codes.NotFound},
		{fmt.Errorf("%w: fastestdet is missing", inference.ErrModelNotReady), codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("%w: fastestdet has a keypoints decoder", detect.ErrUnsupportedModel), codes.FailedPrecondition},
		{fmt.Errorf("%w: movenet wants RGB", pose.ErrUnsupportedModel), codes.FailedPrecondition},
		{fmt.Errorf("%w: modality is MR", biometry.ErrNotUltrasound), codes.FailedPrecondition},
		{status.Error(codes.Aborted, "version 3 is stale"), codes.Aborted},
		{errors.New("disk on fire"), codes.Internal},
	}
	for _, tt := range tests {
		err := toStatus(context.Background(), log, tt.err)
		if got := status.Code(err); got != tt.want {
			t.Errorf("toStatus(%v): got %v, want %v", tt.err, got, tt.want)
		}
		if tt.want == codes.Internal && strings.Contains(err.Error(), "fire") {
			t.Errorf("an internal error's detail reached the client: %v", err)
		}
		if tt.want == codes.InvalidArgument && !strings.Contains(err.Error(), "[1 3 352 352]") {
			t.Errorf("a domain error lost its message: %v", err)
		}
	}
}
