package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestConnectionsAreCappedAndIdleOnesClosed: a flood of HTTP connections stops at the cap
// (one over it is closed at once) and leaves gRPC serving; a kept-alive HTTP connection and a
// gRPC connection with no call open are both closed after the idle limit.
func TestConnectionsAreCappedAndIdleOnesClosed(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild, "--max-connections", "8", "--conn-idle-timeout", "2s")

	// Eight keep-alive HTTP connections, each after one answered request.
	var kept []net.Conn
	for i := range 8 {
		c, err := net.Dial("tcp", d.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code := get(t, c, d.http); code != http.StatusOK {
			t.Fatalf("connection %d: GET / answered %d", i+1, code)
		}
		kept = append(kept, c)
	}
	// The ninth is closed as soon as it is accepted: no answer, the connection ends.
	c, err := net.Dial("tcp", d.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", d.http)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("a ninth HTTP connection over the cap of 8: read %d bytes, %v; want it closed", n, err)
	}
	// gRPC has a cap of its own: it serves.
	conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health while HTTP is at its cap: %v, %v", r, err)
	}

	// Idle: the server closes the kept-alive connections, and the gRPC one with no call open.
	for i, c := range kept {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
			t.Fatalf("kept-alive HTTP connection %d after the 2 s idle limit: read %d bytes, %v; want it closed", i+1, n, err)
		}
	}
	for state := conn.GetState(); state != connectivity.Idle; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			t.Fatalf("the gRPC connection with no call open is still %v after 10 s (idle limit 2 s)", state)
		}
	}
	// With the idle ones gone, a new HTTP connection is served.
	c2, err := net.Dial("tcp", d.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if code := get(t, c2, d.http); code != http.StatusOK {
		t.Fatalf("a new HTTP connection after the idle ones closed: %d", code)
	}
}

// get sends GET / on c, keeping it alive, and returns the status code.
func get(t *testing.T, c net.Conn, host string) int {
	t.Helper()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	resp.Body.Close()
	c.SetReadDeadline(time.Time{})
	return resp.StatusCode
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
