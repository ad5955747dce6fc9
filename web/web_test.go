package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

// noCalls is a connection that must not be used: the requests below are refused before any call.
type noCalls struct{ t *testing.T }

func (c noCalls) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	c.t.Error("a gRPC call was made")
	return nil
}

func (c noCalls) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	c.t.Error("a gRPC stream was opened")
	return nil, io.EOF
}

// TestNonASCIIAuthorizationIs401: a header gRPC metadata cannot carry gets 401, not 500.
func TestNonASCIIAuthorizationIs401(t *testing.T) {
	h := Handler(noCalls{t}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, req := range []*http.Request{
		httptest.NewRequest("POST", "/api/v1/review/List", strings.NewReader("{}")),
		httptest.NewRequest("GET", "/api/v1/review/watch", nil),
	} {
		req.Header.Set("Authorization", "Bearer t\xc3\xb6ken")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "printable ASCII") {
			t.Errorf("%s %s: %d %s", req.Method, req.URL.Path, rec.Code, rec.Body)
		}
	}
}
