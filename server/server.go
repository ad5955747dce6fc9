// Package server is Vigil's gRPC transport: it validates requests, calls the domain packages
// and maps their errors to status codes (status.go holds the one table). It owns the
// interceptors (recovery, metrics and logging, auth), health and reflection.
package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/vigil-health/vigil/inference"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

// MaxMessageBytes bounds one gRPC message; DICOM arrives in chunks well below it.
const MaxMessageBytes = 16 << 20

// Options are what the server is built from.
type Options struct {
	Logger   *slog.Logger
	Tokens   Authenticator
	Registry *inference.Registry
	Review   review.Store
	Imaging  ImagingOptions
	Ward     WardOptions
	Metrics  *Metrics
	// RuntimeVersion is ONNX Runtime's version, reported by ListModels.
	RuntimeVersion string
	// TLS, when set, serves TLS only.
	TLS *tls.Config
	// Streams bounds the streams clients may hold (DefaultStreamLimits where zero).
	Streams StreamLimits
}

// Server is the gRPC server with its health service.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
}

// serviceNames are the names health reports on, beside the overall "".
var serviceNames = []string{
	vigilv1.Imaging_ServiceDesc.ServiceName,
	vigilv1.Ward_ServiceDesc.ServiceName,
	vigilv1.Review_ServiceDesc.ServiceName,
	vigilv1.Models_ServiceDesc.ServiceName,
}

// New builds the server. Health starts NOT_SERVING; call SetServing once everything is ready.
func New(o Options) *Server {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	m := o.Metrics
	if m == nil {
		m = NewMetrics()
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unaryRecover(log, m), unaryObserve(log, m), unaryAuth(o.Tokens)),
		grpc.ChainStreamInterceptor(streamRecover(log, m), streamObserve(log, m), streamAuth(o.Tokens), streamLimit(o.Streams.withDefaults())),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	g := grpc.NewServer(opts...)

	vigilv1.RegisterImagingServer(g, &imagingService{log: log, store: o.Review, registry: o.Registry, opts: o.Imaging})
	vigilv1.RegisterWardServer(g, &wardService{log: log, registry: o.Registry, store: o.Review, opts: o.Ward.withDefaults(), metrics: m})
	vigilv1.RegisterReviewServer(g, &reviewService{log: log, store: o.Review, metrics: m})
	vigilv1.RegisterModelsServer(g, &modelsService{log: log, registry: o.Registry, runtime: o.RuntimeVersion})

	h := health.NewServer()
	healthpb.RegisterHealthServer(g, h)
	for _, name := range append([]string{""}, serviceNames...) {
		h.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	reflection.Register(g)
	return &Server{grpc: g, health: h, log: log}
}

// SetServing marks every service SERVING.
func (s *Server) SetServing() {
	for _, name := range append([]string{""}, serviceNames...) {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// Shutdown stops in order: health says NOT_SERVING (so balancers stop sending), running calls
// drain until ctx ends, and then whatever is left is cut off.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("drain deadline passed, closing remaining calls")
		s.grpc.Stop()
		<-done
	}
}
