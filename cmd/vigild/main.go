// Command vigild is the Vigil server: config, then stores, then the inference engine and
// models, then gRPC and HTTP. It stops in the reverse order on SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/fileperm"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/server"
	"github.com/vigil-health/vigil/vision"
	"github.com/vigil-health/vigil/web"
)

func main() {
	fileperm.Private()
	cfg, err := LoadConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vigild: config: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, newLogger(cfg, os.Stderr), nil); err != nil {
		fmt.Fprintf(os.Stderr, "vigild: %v\n", err)
		os.Exit(1)
	}
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Addresses are where a running vigild listens; run reports them once it serves.
type Addresses struct {
	GRPC string
	HTTP string
}

// run serves until ctx ends, then shuts down in order. When ready is not nil it receives the
// listening addresses once the server is SERVING.
func run(ctx context.Context, cfg Config, log *slog.Logger, ready chan<- Addresses) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// What an earlier version or an operator left readable by others is made private; what
	// this process creates is private from the start (main sets the umask).
	db := filepath.Join(cfg.DataDir, review.SQLiteFile)
	changed, err := fileperm.Tighten(cfg.DataDir, db, db+"-wal", db+"-shm", cfg.TokensFile)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for _, p := range changed {
		log.Warn("was readable by other users: made private to vigild's user", slog.String("path", p))
	}
	tokens, err := auth.OpenTokenFile(cfg.TokensFile)
	if err != nil {
		return err
	}
	if tokens.Len() == 0 {
		log.Warn("no tokens yet: every call but health will get Unauthenticated; add one with `vigil token add`",
			slog.String("tokens_file", cfg.TokensFile))
	}

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	entries := models.Builtin()
	if cfg.Models.Dir != "" {
		extra, err := models.LoadDir(cfg.Models.Dir)
		if err != nil {
			return err
		}
		entries = models.Merge(entries, extra)
	}
	resolver := &models.Resolver{CacheDir: cfg.Models.CacheDir, Mirrors: cfg.Models.Mirrors}

	engine, runtimeErr := inference.Open(inference.Config{
		LibraryPath:    cfg.Inference.Library,
		Provider:       cfg.Inference.Provider,
		DeviceID:       cfg.Inference.DeviceID,
		Workers:        cfg.Inference.Workers,
		QueueDepth:     cfg.Inference.QueueDepth,
		IntraOpThreads: cfg.Inference.IntraOpThreads,
		Logger:         log,
	})
	runtimeVersion := ""
	if runtimeErr != nil {
		// The server still starts: health, tokens and `vigil models` tell the operator why
		// nothing can run.
		log.Error("ONNX Runtime unavailable; every model is invalid", slog.String("reason", runtimeErr.Error()))
	} else {
		runtimeVersion = engine.Version()
		log.Info("ONNX Runtime loaded", slog.String("version", runtimeVersion), slog.String("library", engine.Library()))
		defer engine.Close()
	}
	registry := inference.LoadRegistry(ctx, engine, runtimeErr, entries, resolver)
	defer registry.Close()
	for _, st := range registry.Status() {
		attrs := []any{slog.String("model", st.Name), slog.String("version", st.Version), slog.String("state", string(st.State))}
		if st.State == inference.StateReady {
			log.Info("model", append(attrs, slog.String("provider", st.Provider))...)
		} else {
			log.Warn("model", append(attrs, slog.String("reason", st.Reason))...)
		}
	}

	tlsConfig, httpTLS, err := loadTLS(cfg)
	if err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); tlsConfig == nil && !isLoopback(host) {
		log.Warn("serving gRPC without TLS on a non-loopback address: tokens cross the network in clear",
			slog.String("listen", cfg.Listen))
	}
	if host, _, _ := net.SplitHostPort(cfg.HTTP); cfg.HTTP != "" && httpTLS == nil && !isLoopback(host) {
		log.Warn("serving HTTP (the review page, its API and /metrics) without TLS on a non-loopback address: tokens cross the network in clear; give --http-tls-cert/--http-tls-key or --tls-cert/--tls-key",
			slog.String("http", cfg.HTTP))
	}

	metrics := server.NewMetrics()
	metrics.MaxCameraLabels = cfg.Limits.MaxCameraLabels
	metrics.WatchModels(registry)
	metrics.WatchReview(store)
	srv := server.New(server.Options{
		Logger: log, Tokens: tokens, Registry: registry, Review: store, Metrics: metrics,
		Imaging: server.ImagingOptions{
			Model: cfg.Imaging.Model,
			Limits: dicomio.Limits{MaxFrames: cfg.Imaging.MaxFrames, MaxRows: cfg.Imaging.MaxRows,
				MaxCols: cfg.Imaging.MaxCols, MaxBytes: int64(cfg.Imaging.MaxBytes), MaxRegions: cfg.Limits.MaxRegions},
			Decoders:        dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000},
			MaxTracks:       cfg.Limits.MaxTracksPerLoop,
			MaxOverlayBytes: cfg.Limits.MaxOverlayBytes,
		},
		Ward: server.WardOptions{MaxSide: cfg.Limits.MaxFrameSide, MaxFrameBytes: cfg.Limits.MaxFrameBytes, MaxFrameMemory: int64(cfg.Limits.MaxFrameMemory),
			MaxTracks: cfg.Limits.MaxTracksPerStream, MaxHistory: cfg.Limits.MaxTrackHistory},
		Streams: server.StreamLimits{MaxStreams: cfg.Limits.MaxStreams, MaxStreamsPerPrincipal: cfg.Limits.MaxStreamsPerPrincipal,
			MaxOpenStreams: cfg.Limits.MaxOpenStreams, IdleTimeout: cfg.Limits.StreamIdleTimeout},
		Connections:    server.ConnectionLimits{Max: cfg.Limits.MaxConnections, Idle: cfg.Limits.ConnIdleTimeout},
		RuntimeVersion: runtimeVersion, TLS: tlsConfig,
	})

	grpcLis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	serveErr := make(chan error, 3)
	go func() { serveErr <- srv.Serve(grpcLis) }()
	if cfg.HealthListen != "" {
		healthLis, err := net.Listen("tcp", cfg.HealthListen)
		if err != nil {
			srv.Shutdown(ctx)
			return fmt.Errorf("--health-listen: %w", err)
		}
		go func() { serveErr <- srv.ServeHealth(healthLis) }()
		log.Info("health for probes", slog.String("health_listen", healthLis.Addr().String()))
	}

	// The web page's JSON API reaches the same gRPC server through an in-memory listener, so
	// every call passes the same interceptors and handlers as a remote client's.
	inproc := bufconn.Listen(1 << 20)
	go srv.ServeInProcess(inproc)
	inprocConn, err := grpc.NewClient("passthrough:///vigild",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Shutdown(ctx)
		return fmt.Errorf("in-process gRPC connection: %w", err)
	}
	defer inprocConn.Close()

	addrs := Addresses{GRPC: grpcLis.Addr().String()}
	var httpSrv *http.Server
	if cfg.HTTP != "" {
		httpLis, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			srv.Shutdown(ctx)
			return fmt.Errorf("--http: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		mux.Handle("/", web.Handler(inprocConn, log, web.Options{BodyIdle: cfg.Limits.HTTPBodyIdleTimeout,
			BodyTimeout: cfg.Limits.HTTPBodyTimeout, ViewerURL: cfg.ViewerURL}))
		// A new connection has ReadHeaderTimeout to send its first request; one kept alive
		// after a request is closed after IdleTimeout; at most MaxConnections are open.
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.Limits.ConnIdleTimeout, TLSConfig: httpTLS}
		httpLis = server.LimitConnections(httpLis, cfg.Limits.MaxConnections)
		if httpTLS != nil {
			httpLis = tls.NewListener(httpLis, httpTLS)
		}
		addrs.HTTP = httpLis.Addr().String()
		go func() {
			if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}

	sweepCtx, stopSweeping := context.WithCancel(context.Background())
	defer stopSweeping()
	go sweepLeases(sweepCtx, store, log)
	if cfg.RefusalRetention > 0 {
		go pruneRefusals(sweepCtx, store, cfg.RefusalRetention, log)
	}

	srv.SetServing()
	log.Info("vigild serving", slog.String("grpc", addrs.GRPC), slog.String("http", addrs.HTTP),
		slog.String("data_dir", cfg.DataDir), slog.String("tokens_file", cfg.TokensFile), slog.Bool("tls", tlsConfig != nil),
		slog.Bool("http_tls", httpTLS != nil), slog.Bool("client_certificates", cfg.ClientCA != ""))
	if ready != nil {
		ready <- addrs
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
		log.Error("listener failed, shutting down", slog.String("error", err.Error()))
	}
	drain, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	srv.Shutdown(drain)
	if httpSrv != nil {
		httpSrv.Shutdown(drain)
	}
	// The deferred closes run next: sessions, then the runtime.
	log.Info("stopped")
	return err
}

// sweepLeases returns lapsed claims to the queue, so the worklist and Watch show them pending
// without waiting for the next claim.
func sweepLeases(ctx context.Context, store review.Store, log *slog.Logger) {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n, err := store.ExpireLeases(ctx); err != nil && ctx.Err() == nil {
				log.Error("expiring leases", slog.String("error", err.Error()))
			} else if n > 0 {
				log.Info("leases expired", slog.Int("findings", n))
			}
		}
	}
}

// pruneRefusals deletes refused calls older than the retention, at start and hourly.
// Replicas sharing a store each prune; the chain's lock makes them take turns.
func pruneRefusals(ctx context.Context, store review.Store, retention time.Duration, log *slog.Logger) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		if n, err := store.PruneRefusals(ctx, time.Now().Add(-retention)); err != nil && ctx.Err() == nil {
			log.Error("pruning refusals", slog.String("error", err.Error()))
		} else if n > 0 {
			log.Info("refusals pruned", slog.Int64("records", n), slog.Duration("retention", retention))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadTLS builds the gRPC listener's TLS (with client certificates when --client-ca is given)
// and the HTTP listener's (its own pair, or else the gRPC pair). Either is nil without TLS.
func loadTLS(cfg Config) (grpcTLS, httpTLS *tls.Config, err error) {
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		grpcTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		httpTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.HTTPTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.HTTPTLSCert, cfg.HTTPTLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--http-tls-cert/--http-tls-key: %w", err)
		}
		httpTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.ClientCA != "" {
		pem, err := os.ReadFile(cfg.ClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("--client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--client-ca: %s holds no PEM certificate", cfg.ClientCA)
		}
		grpcTLS.ClientCAs, grpcTLS.ClientAuth = pool, tls.VerifyClientCertIfGiven
		if cfg.ClientAuth == "require" {
			grpcTLS.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return grpcTLS, httpTLS, nil
}
