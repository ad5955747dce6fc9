package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	h := Handler(noCalls{t}, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
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

// TestSlowBodyIsCut: a client that sends its body a byte now and then loses its request once
// a read waits past the idle limit, with the limit named; the server serves the next request.
func TestSlowBodyIsCut(t *testing.T) {
	srv := httptest.NewServer(Handler(noCalls{t}, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{BodyIdle: 300 * time.Millisecond}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/review/List HTTP/1.1\r\nHost: vigil\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "--http-body-idle-timeout") {
		t.Errorf("a stalled body: %d %s, want 429 naming --http-body-idle-timeout", resp.StatusCode, body)
	}
	page, err := http.Get(srv.URL + "/")
	if err != nil || page.StatusCode != http.StatusOK {
		t.Fatalf("the page after a stalled body: %v %v", page, err)
	}
	page.Body.Close()
}

// TestTricklingBodyIsCut: a client that sends a byte every 100 ms is never idle for the
// 300 ms idle limit, and is cut when the whole body is not there after a second.
func TestTricklingBodyIsCut(t *testing.T) {
	srv := httptest.NewServer(Handler(noCalls{t}, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{BodyIdle: 300 * time.Millisecond, BodyTimeout: time.Second}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/review/List HTTP/1.1\r\nHost: vigil\r\nContent-Length: 1000\r\n\r\n{")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "--http-body-timeout") {
		t.Errorf("a trickling body: %d %s, want 429 naming --http-body-timeout", resp.StatusCode, body)
	}
}
