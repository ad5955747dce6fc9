package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var errNotServing = errors.New("not serving")

func runHealth(g *globals, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	service := fs.String("service", "", "service to check, such as vigil.v1.Imaging; empty checks the server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, ctx, done, err := g.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Status)
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return errNotServing
	}
	return nil
}
