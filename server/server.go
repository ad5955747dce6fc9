// Package server is Vigil's gRPC transport: it validates requests, calls the domain packages
// and maps their errors to status codes (status.go holds the one table). It owns the
// interceptors (recovery, metrics and logging, auth), health and reflection.
package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"slices"
	"sync"
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
	// Connections bounds the connections each listener holds and how long one may sit idle
	// (DefaultConnectionLimits where zero).
	Connections ConnectionLimits
	// RefusalEvery is how often one principal's refusals of one kind are written to the
	// refusals chain (DefaultRefusalEvery where zero).
	RefusalEvery time.Duration
}

// ConnectionLimits bound a listener's connections.
type ConnectionLimits struct {
	// Max is how many connections one listener holds at once (LimitConnections).
	Max int
	// Idle closes a connection with no call open for this long; a client reconnects when it
	// next calls.
	Idle time.Duration
	// Handshake is how long a new connection has to finish its TLS and HTTP/2 handshakes.
	Handshake time.Duration
}

// DefaultConnectionLimits: a site's clients keep a connection each and call often; one silent
// for five minutes is gone or broken.
var DefaultConnectionLimits = ConnectionLimits{Max: DefaultMaxConnections, Idle: 5 * time.Minute, Handshake: 10 * time.Second}

func (l ConnectionLimits) withDefaults() ConnectionLimits {
	if l.Max <= 0 {
		l.Max = DefaultConnectionLimits.Max
	}
	if l.Idle <= 0 {
		l.Idle = DefaultConnectionLimits.Idle
	}
	if l.Handshake <= 0 {
		l.Handshake = DefaultConnectionLimits.Handshake
	}
	return l
}

// Server is the gRPC server with its health service. It is two grpc.Servers with the same
// services and interceptors: one for the network, with TLS when configured, and one for
// in-process listeners (the web page's API), which never leave the process and need none; and
// a third with the health service alone, for probes.
type Server struct {
	grpc       *grpc.Server
	inproc     *grpc.Server
	healthOnly *grpc.Server
	health     *health.Server
	log        *slog.Logger
	gate       *gate
	maxConns   int
	ward       *wardService
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
	var refusals RefusalRecorder
	if o.Review != nil {
		refusals = o.Review
	}
	conns := o.Connections.withDefaults()
	every := o.RefusalEvery
	if every <= 0 {
		every = DefaultRefusalEvery
	}
	g := &gate{tokens: o.Tokens, refusals: refusals, log: log, streams: newOpenStreams(o.Streams.withDefaults()), refusalEvery: every}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unaryRecover(log, m), unaryObserve(log, m), g.unary()),
		grpc.ChainStreamInterceptor(streamRecover(log, m), streamObserve(log, m), g.stream()),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	// Network connections are bounded (LimitConnections in Serve) and timed; the in-process
	// one, the web page's, is the server's own.
	network := append(slices.Clip(opts), grpc.ConnectionTimeout(conns.Handshake),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, MaxConnectionIdle: conns.Idle}))
	if o.TLS != nil {
		network = append(network, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	imaging := &imagingService{log: log, store: o.Review, registry: o.Registry, opts: o.Imaging}
	wardOpts := o.Ward.withDefaults()
	ward := &wardService{log: log, registry: o.Registry, store: o.Review, opts: wardOpts, metrics: m,
		memory: &frameMemory{limit: wardOpts.MaxFrameMemory}}
	rev := &reviewService{log: log, store: o.Review, metrics: m}
	mod := &modelsService{log: log, registry: o.Registry, runtime: o.RuntimeVersion}
	h := health.NewServer()
	for _, name := range append([]string{""}, serviceNames...) {
		h.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	s := &Server{grpc: grpc.NewServer(network...), inproc: grpc.NewServer(opts...), health: h, log: log, gate: g, maxConns: conns.Max,
		ward:       ward,
		healthOnly: grpc.NewServer(grpc.ConnectionTimeout(conns.Handshake), grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: conns.Idle}))}
	healthpb.RegisterHealthServer(s.healthOnly, h)
	for _, gs := range []*grpc.Server{s.grpc, s.inproc} {
		vigilv1.RegisterImagingServer(gs, imaging)
		vigilv1.RegisterWardServer(gs, ward)
		vigilv1.RegisterReviewServer(gs, rev)
		vigilv1.RegisterModelsServer(gs, mod)
		healthpb.RegisterHealthServer(gs, h)
		reflection.Register(gs)
	}
	return s
}

// SetServing marks every service SERVING.
func (s *Server) SetServing() {
	for _, name := range append([]string{""}, serviceNames...) {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// Serve accepts connections on lis, at most Connections.Max at once, until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	return s.grpc.Serve(LimitConnections(lis, s.maxConns))
}

// ServeInProcess accepts connections on an in-memory listener (such as bufconn) until
// Shutdown: the same services, without TLS, for clients inside this process.
func (s *Server) ServeInProcess(lis net.Listener) error { return s.inproc.Serve(lis) }

// ServeHealth serves only the health service, without TLS or credentials, on lis until
// Shutdown: for probes that cannot speak TLS (Kubernetes' gRPC probes). It says nothing
// but SERVING or NOT_SERVING.
func (s *Server) ServeHealth(lis net.Listener) error {
	return s.healthOnly.Serve(LimitConnections(lis, s.maxConns))
}

// Shutdown stops in order: health says NOT_SERVING (so balancers stop sending), running calls
// drain until ctx ends, and then whatever is left is cut off.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, g := range []*grpc.Server{s.grpc, s.inproc, s.healthOnly} {
			wg.Add(1)
			go func() { defer wg.Done(); g.GracefulStop() }()
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("drain deadline passed, closing remaining calls")
		s.grpc.Stop()
		s.inproc.Stop()
		s.healthOnly.Stop()
		<-done
	}
	s.gate.streams.close()
}
