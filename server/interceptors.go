package server

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/internal/panics"
)

// The interceptors run in this order: recovery (outermost, so nothing escapes it), metrics
// and logging (which see the final code), then auth, then the handler.

func unaryRecover(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, m, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

func streamRecover(log *slog.Logger, m *Metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, m, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

// recovered logs a handler's panic (the value and the stack: code, never request data) and
// turns it into Internal, so one bad request cannot take the server down.
func recovered(log *slog.Logger, m *Metrics, method string, r any) error {
	m.panics.Inc()
	log.Error("handler panicked", slog.String("method", method), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
	return status.Error(codes.Internal, "internal error; the server log has the detail")
}

// unaryObserve logs one line per call and records its metrics. The line holds the method,
// the code, the time taken, the principal and the peer, and never a request's contents: those
// may carry patient data.
func unaryObserve(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		call := &callInfo{}
		m.inflight.WithLabelValues(info.FullMethod).Inc()
		resp, err := handler(context.WithValue(ctx, callInfoKey{}, call), req)
		m.inflight.WithLabelValues(info.FullMethod).Dec()
		observe(ctx, log, m, info.FullMethod, call, start, err)
		return resp, err
	}
}

func streamObserve(log *slog.Logger, m *Metrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		call := &callInfo{}
		m.inflight.WithLabelValues(info.FullMethod).Inc()
		err := handler(srv, &contextStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callInfoKey{}, call)})
		m.inflight.WithLabelValues(info.FullMethod).Dec()
		observe(ss.Context(), log, m, info.FullMethod, call, start, err)
		return err
	}
}

// callInfo carries what inner interceptors learn about a call out to the logging one.
type callInfo struct {
	principal *auth.Principal
}

type callInfoKey struct{}

func observe(ctx context.Context, log *slog.Logger, m *Metrics, method string, call *callInfo, start time.Time, err error) {
	code := status.Code(err)
	if pe := (*panics.Error)(nil); errors.As(err, &pe) {
		m.panics.Inc() // on a goroutine the handler started; the handler's own are counted by recovered
	}
	elapsed := time.Since(start)
	m.handled.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(elapsed.Seconds())
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("elapsed", elapsed),
	}
	if p := call.principal; p != nil {
		attrs = append(attrs, slog.String("principal", p.Name), slog.String("role", string(p.Role)))
	}
	if pr, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, slog.String("peer", pr.Addr.String()))
	}
	level := slog.LevelInfo
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	case codes.Unauthenticated, codes.PermissionDenied:
		level = slog.LevelWarn
	}
	if err != nil {
		// Domain errors name what was wrong (a transfer syntax, a dimension), never patient data.
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, level, "rpc", attrs...)
}
