package server

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/internal/testcerts"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

// refusals reads what the store kept of refused calls.
func refusals(t *testing.T, ts *testServer) []review.Refusal {
	t.Helper()
	rs, err := ts.store.Refusals(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func refused(rs []review.Refusal, principal, method, code string) bool {
	for _, r := range rs {
		if r.Principal == principal && r.Method == method && r.Code == code {
			return true
		}
	}
	return false
}

// waitForEnd waits for a stream's end and returns its error (nil if it did not end).
func waitForEnd(recv func() error) error {
	errc := make(chan error, 1)
	go func() {
		for {
			if err := recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(20 * time.Second):
		return nil
	}
}

// TestRevokedTokenEndsItsStreams: revoking a principal ends the Watch and camera streams it
// holds open, with Unauthenticated, audits the ends, and refuses its next call.
func TestRevokedTokenEndsItsStreams(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := vigilv1.NewReviewClient(ts.conn).Watch(metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+ts.tokens[auth.RoleReviewer])), &vigilv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	camera, err := vigilv1.NewWardClient(ts.conn).StreamCamera(metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+ts.tokens[auth.RoleWardBridge])))
	if err != nil {
		t.Fatal(err)
	}
	camera.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "ward-5-bed-1", FrameRate: 10}}})
	frame := walkersJPEGs(t, 1)[0]
	camera.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: 1, Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: frame}}})
	if ev, err := camera.Recv(); err != nil || ev.GetFrameResult() == nil {
		t.Fatalf("the camera stream before the revocation: %v %v", ev, err)
	}
	for _, who := range []string{"test-reviewer", "test-ward-bridge"} {
		if _, err := auth.Revoke(ts.tokensPath, who); err != nil {
			t.Fatal(err)
		}
	}
	for name, recv := range map[string]func() error{
		"watch":  func() error { _, err := watch.Recv(); return err },
		"camera": func() error { _, err := camera.Recv(); return err },
	} {
		err := waitForEnd(recv)
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked or has expired") {
			t.Errorf("the %s stream after its token was revoked: got %v, want Unauthenticated saying why", name, err)
		}
	}
	if _, err := vigilv1.NewReviewClient(ts.conn).Counts(ts.as(auth.RoleReviewer), &vigilv1.CountsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a call with the revoked token: got %v, want Unauthenticated", err)
	}
	rs := refusals(t, ts)
	if !refused(rs, "test-reviewer", vigilv1.Review_Watch_FullMethodName, "Unauthenticated") ||
		!refused(rs, "test-ward-bridge", vigilv1.Ward_StreamCamera_FullMethodName, "Unauthenticated") {
		t.Errorf("the ended streams are not in the refusals: %+v", rs)
	}
}

// TestExpiredTokenIsRefusedAndAudited: a token past its expiry is refused with a message
// saying so, and the refusal names its principal; an open stream ends when its token expires.
func TestExpiredTokenIsRefusedAndAudited(t *testing.T) {
	ts := startServer(t, nil)
	old, err := auth.AddTokenUntil(ts.tokensPath, auth.RoleReviewer, "dr.expired", time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	soon, err := auth.AddTokenUntil(ts.tokensPath, auth.RoleReviewer, "dr.soon", time.Now().Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	_, err = vigilv1.NewReviewClient(ts.conn).Counts(bearer(old), &vigilv1.CountsRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token: got %v, want Unauthenticated saying it expired", err)
	}
	watch, err := vigilv1.NewReviewClient(ts.conn).Watch(bearer(soon), &vigilv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitForEnd(func() error { _, err := watch.Recv(); return err }); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a watch whose token expired while open: got %v, want Unauthenticated", err)
	}
	if !refused(refusals(t, ts), "dr.expired", vigilv1.Review_Counts_FullMethodName, "Unauthenticated") {
		t.Errorf("the expired token's refusal is not kept: %+v", refusals(t, ts))
	}
}

// TestRefusalsAreAudited: a call outside a principal's role is kept with the principal and
// the method; a call with no valid token is not (anyone could fill the store so).
func TestRefusalsAreAudited(t *testing.T) {
	ts := startServer(t, nil)
	if _, err := vigilv1.NewReviewClient(ts.conn).Counts(ts.as(auth.RolePACSWorker), &vigilv1.CountsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a PACS worker counting the worklist: got %v, want PermissionDenied", err)
	}
	forged := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer vgl_forged")
	if _, err := vigilv1.NewReviewClient(ts.conn).Counts(forged, &vigilv1.CountsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a forged token: got %v, want Unauthenticated", err)
	}
	rs := refusals(t, ts)
	if len(rs) != 1 || !refused(rs, "test-pacs-worker", vigilv1.Review_Counts_FullMethodName, "PermissionDenied") || rs[0].Role != "pacs-worker" {
		t.Errorf("refusals %+v, want the PACS worker's one alone", rs)
	}
}

// TestMutualTLS: with --client-ca, a client certificate's CN is the principal and its OU the
// role; a client with neither certificate nor token is refused; a revoked principal's
// certificate is refused; with certificates required, the handshake itself refuses.
func TestMutualTLS(t *testing.T) {
	ca := testcerts.NewCA(t, "Vigil test CA")
	serverPair := ca.Server()
	for _, required := range []bool{false, true} {
		clientAuth := tls.VerifyClientCertIfGiven
		if required {
			clientAuth = tls.RequireAndVerifyClientCert
		}
		ts := startServer(t, nil, func(o *Options) {
			o.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair.TLS}, ClientCAs: ca.Pool(), ClientAuth: clientAuth, MinVersion: tls.VersionTLS12}
		})
		dial := func(certs ...tls.Certificate) *grpc.ClientConn {
			conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs, ServerName: "localhost"})))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			return conn
		}
		counts := func(conn *grpc.ClientConn) error {
			_, err := vigilv1.NewReviewClient(conn).Counts(context.Background(), &vigilv1.CountsRequest{})
			return err
		}
		if err := counts(dial(ca.Client("dr.cert", "reviewer").TLS)); err != nil {
			t.Errorf("required=%v: a reviewer's certificate: %v", required, err)
		}
		if err := counts(dial(ca.Client("pacs-cert", "pacs-worker").TLS)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("required=%v: a PACS worker's certificate on a reviewer's method: got %v, want PermissionDenied", required, err)
		}
		if err := counts(dial(ca.Client("nobody", "visitor").TLS)); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "OU") {
			t.Errorf("required=%v: a certificate with no role: got %v, want PermissionDenied naming the OU", required, err)
		}
		// A client sends only a certificate the server's CA list accepts: one from another CA
		// stays at home, and the client comes with no certificate at all.
		want := codes.Unauthenticated
		if required {
			want = codes.Unavailable // the handshake itself refuses
		}
		other := testcerts.NewCA(t, "another CA")
		if err := counts(dial(other.Client("dr.forged", "reviewer").TLS)); status.Code(err) != want {
			t.Errorf("required=%v: a certificate from another CA: got %v, want %v", required, err, want)
		}
		if err := counts(dial()); status.Code(err) != want {
			t.Errorf("required=%v: no certificate and no token: got %v, want %v", required, err, want)
		}
		if _, err := auth.Revoke(ts.tokensPath, "dr.cert"); err != nil {
			t.Fatal(err)
		}
		if err := counts(dial(ca.Client("dr.cert", "reviewer").TLS)); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("required=%v: a revoked principal's certificate: got %v, want Unauthenticated", required, err)
		}
		if !refused(refusals(t, ts), "pacs-cert", vigilv1.Review_Counts_FullMethodName, "PermissionDenied") {
			t.Errorf("required=%v: the certificate's refusal is not kept in its principal's name", required)
		}
	}
}

// TestPACSWorkerSeesOnlyWhatItSent: a PACS worker's Watch carries the findings it sent, their
// state without who decided or why, and it exports only its own studies.
func TestPACSWorkerSeesOnlyWhatItSent(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	other, err := auth.AddToken(ts.tokensPath, auth.RolePACSWorker, "pacs-2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ts.as(auth.RolePACSWorker))
	defer cancel()
	// One record before everything, so that the watch replays all that follows it.
	seed(t, ts.store, 1)
	watch, err := vigilv1.NewReviewClient(ts.conn).Watch(ctx, &vigilv1.WatchRequest{AfterSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	imaging := vigilv1.NewImagingClient(ts.conn)
	mine, truth := phantomFile(t, 900301, 1)
	theirs, theirTruth := phantomFile(t, 900302, 1)
	sent, err := send(ts.as(auth.RolePACSWorker), imaging, mine, 64<<10)
	if err != nil || len(sent.Findings) == 0 {
		t.Fatalf("my instance: %v", err)
	}
	theirsSent, err := send(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+other), imaging, theirs, 64<<10)
	if err != nil || len(theirsSent.Findings) == 0 {
		t.Fatalf("their instance: %v", err)
	}
	rc := vigilv1.NewReviewClient(ts.conn)
	for _, f := range []*vigilv1.Finding{sent.Findings[0], theirsSent.Findings[0]} {
		if _, err := rc.Decide(ts.as(auth.RoleAdmin), &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT,
			ReasonCode: "confirmed", Comment: "a reviewer's private remark"}); err != nil {
			t.Fatal(err)
		}
	}
	decided := false
	for !decided {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		f := ev.Finding
		if f.GetDicom().GetStudyInstanceUid() != truth.Study {
			t.Fatalf("the watch carried a finding of study %s, sent by another worker", f.GetDicom().GetStudyInstanceUid())
		}
		if f.Decision != nil || f.ClaimedBy != "" || f.Overlay != nil {
			t.Fatalf("the watch shows a PACS worker who decided or the overlay: %v", f)
		}
		decided = f.State == vigilv1.FindingState_FINDING_STATE_ACCEPTED
	}
	if _, err := rc.ExportReport(ts.as(auth.RolePACSWorker), &vigilv1.ExportReportRequest{StudyInstanceUid: truth.Study}); err != nil {
		t.Errorf("exporting my own study: %v", err)
	}
	_, err = rc.ExportReport(ts.as(auth.RolePACSWorker), &vigilv1.ExportReportRequest{StudyInstanceUid: theirTruth.Study})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("exporting another worker's study: got %v, want PermissionDenied", err)
	}
	if !refused(refusals(t, ts), "test-pacs-worker", vigilv1.Review_ExportReport_FullMethodName, "PermissionDenied") {
		t.Errorf("the refused export is not kept: %+v", refusals(t, ts))
	}
}

// TestAnotherWorkerCannotReplayMyInstance: a second PACS worker that sends the first bytes of
// a file carrying my instance's SOP Instance UID gets PermissionDenied, not my finding, its
// outline, study, decision or overlay; I still get my own answer back.
func TestAnotherWorkerCannotReplayMyInstance(t *testing.T) {
	ts := startServer(t, nil, withTriage(t))
	other, err := auth.AddToken(ts.tokensPath, auth.RolePACSWorker, "pacs-2")
	if err != nil {
		t.Fatal(err)
	}
	imaging := vigilv1.NewImagingClient(ts.conn)
	mine, _ := phantomFile(t, 900303, 1)
	sent, err := send(ts.as(auth.RolePACSWorker), imaging, mine, 64<<10)
	if err != nil || len(sent.Findings) == 0 {
		t.Fatalf("my instance: %v", err)
	}
	theirs := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+other)
	stream, err := imaging.AnalyzeInstance(theirs)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: mine[:3000], Options: &vigilv1.AnalyzeOptions{IncludeOverlays: true}})
	stolen, err := stream.CloseAndRecv()
	if status.Code(err) != codes.PermissionDenied || stolen != nil {
		t.Fatalf("another worker replaying my SOP Instance UID: got %d findings (%v), want PermissionDenied and nothing", len(stolen.GetFindings()), err)
	}
	again, err := send(ts.as(auth.RolePACSWorker), imaging, mine, 64<<10)
	if err != nil || !again.AlreadyAnalyzed || len(again.Findings) != len(sent.Findings) {
		t.Errorf("my own resend: %v, %v; want my analysis back", again, err)
	}
}

// TestRefusalsInALoopAreSummarised: a client refused 300 times in a row (a wrong-role token in
// a loop; 29.4: each wrote a row, 706 a second) writes one row per window and kind; the next
// row written counts those between, so none goes unaccounted.
func TestRefusalsInALoopAreSummarised(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.RefusalEvery = time.Hour })
	ctx := ts.as(auth.RoleWardBridge) // may not list the worklist
	list := func() {
		t.Helper()
		if _, err := vigilv1.NewReviewClient(ts.conn).List(ctx, &vigilv1.ListRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("a ward bridge listing the worklist: %v, want PermissionDenied", err)
		}
	}
	for range 300 {
		list()
	}
	if rs := refusals(t, ts); len(rs) != 1 {
		t.Fatalf("300 calls refused in one window wrote %d rows, want 1", len(rs))
	}
	// The window ends (shortened here rather than waited out).
	ts.srv.gate.runsMu.Lock()
	ts.srv.gate.refusalEvery = time.Nanosecond
	ts.srv.gate.runsMu.Unlock()
	list()
	rs := refusals(t, ts)
	if len(rs) != 2 || !strings.Contains(rs[1].Reason, "and 299 more refusals of this kind") {
		t.Fatalf("after the window: %d rows, the last %q; want 2, the last counting the 299 between", len(rs), rs[len(rs)-1].Reason)
	}
}
