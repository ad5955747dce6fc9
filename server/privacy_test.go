package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// TestRequestTextStaysOutOfErrorsAndLogs: a page token and a model name are the caller's text,
// and may hold anything (here a patient's name, record number and birth date): the refusals
// name what was wrong without repeating them, and nothing of them reaches the log.
func TestRequestTextStaysOutOfErrorsAndLogs(t *testing.T) {
	ts := startServer(t, nil)
	const secret = "DOE^JANE MRN-55501 born 19471103"
	_, err := vigilv1.NewReviewClient(ts.conn).List(ts.as(auth.RoleReviewer), &vigilv1.ListRequest{PageToken: secret})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page token") {
		t.Errorf("a page token this server never gave: %v, want InvalidArgument naming the page token", err)
	}
	// A 1 MB page token: refused, and the log does not grow by a megabyte.
	before := len(ts.logs.String())
	_, err = vigilv1.NewReviewClient(ts.conn).List(ts.as(auth.RoleReviewer), &vigilv1.ListRequest{PageToken: strings.Repeat("A", 1<<20)})
	if status.Code(err) != codes.InvalidArgument || len(err.Error()) > 1000 {
		t.Errorf("a 1 MB page token: %d bytes of error, code %v", len(err.Error()), status.Code(err))
	}
	if grown := len(ts.logs.String()) - before; grown > 2000 {
		t.Errorf("a 1 MB page token grew the log by %d bytes", grown)
	}

	stream, err := vigilv1.NewImagingClient(ts.conn).AnalyzeInstance(ts.as(auth.RolePACSWorker))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Options: &vigilv1.AnalyzeOptions{Model: secret}, Chunk: []byte("DICM")})
	_, err = stream.CloseAndRecv()
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "ListModels") {
		t.Errorf("a model no one loaded: %v, want NotFound pointing to ListModels", err)
	}
	for _, part := range []string{"DOE", "55501", "19471103"} {
		if strings.Contains(err.Error(), part) {
			t.Errorf("the model refusal repeats the request's %q: %v", part, err)
		}
		if strings.Contains(ts.logs.String(), part) {
			t.Errorf("the log holds the request's %q:\n%s", part, ts.logs.String())
		}
	}
}
