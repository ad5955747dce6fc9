package server

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
)

// StreamLimits bound what streaming clients may hold open. A client over a limit gets
// ResourceExhausted with a message naming the vigild flag that sets it.
type StreamLimits struct {
	// MaxStreams bounds the streams open on the server; MaxStreamsPerPrincipal those of one
	// principal (a runaway bridge or worker cannot take every slot).
	MaxStreams, MaxStreamsPerPrincipal int
	// IdleTimeout ends a client stream that sends nothing for this long.
	IdleTimeout time.Duration
}

// DefaultStreamLimits suit one site: a few dozen cameras and workers, and reviewers' pages.
var DefaultStreamLimits = StreamLimits{MaxStreams: 256, MaxStreamsPerPrincipal: 32, IdleTimeout: time.Minute}

func (l StreamLimits) withDefaults() StreamLimits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultStreamLimits.MaxStreams
	}
	if l.MaxStreamsPerPrincipal <= 0 {
		l.MaxStreamsPerPrincipal = DefaultStreamLimits.MaxStreamsPerPrincipal
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultStreamLimits.IdleTimeout
	}
	return l
}

// openStreams counts the streams open, on the server and per principal.
type openStreams struct {
	limits StreamLimits
	mu     sync.Mutex
	total  int
	by     map[string]int
}

// acquire takes a slot for a stream of principal (nil for the open methods, such as health),
// or says which limit is reached.
func (o *openStreams) acquire(p *auth.Principal) (release func(), err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.total >= o.limits.MaxStreams {
		return nil, status.Errorf(codes.ResourceExhausted, "the server has %d streams open, its limit (vigild --max-streams): try again later", o.total)
	}
	key := ""
	if p != nil {
		key = string(p.Role) + "/" + p.Name
		if o.by[key] >= o.limits.MaxStreamsPerPrincipal {
			return nil, status.Errorf(codes.ResourceExhausted, "principal %q has %d streams open, its limit (vigild --max-streams-per-principal): close one first", p.Name, o.by[key])
		}
		o.by[key]++
	}
	o.total++
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.total--
		if key != "" {
			if o.by[key]--; o.by[key] == 0 {
				delete(o.by, key)
			}
		}
	}, nil
}

// streamLimit runs after auth: it counts the stream against its principal and the server, and
// ends a client stream that goes idle.
func streamLimit(limits StreamLimits) grpc.StreamServerInterceptor {
	open := &openStreams{limits: limits, by: map[string]int{}}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		var p *auth.Principal
		if pr, ok := auth.PrincipalFrom(ss.Context()); ok {
			p = &pr
		}
		release, err := open.acquire(p)
		if err != nil {
			return err
		}
		defer release()
		if !info.IsClientStream {
			return handler(srv, ss)
		}
		is := &idleStream{ServerStream: ss, idle: limits.IdleTimeout, reqs: make(chan any), replies: make(chan error), done: make(chan struct{})}
		defer close(is.done)
		return handler(srv, is)
	}
}

// idleStream ends a client stream that sends nothing for idle. A receive blocked in gRPC
// cannot be interrupted, so one goroutine per stream receives, and RecvMsg waits for it or
// for the timer; once the handler returns, gRPC ends the stream and that receive returns.
type idleStream struct {
	grpc.ServerStream
	idle    time.Duration
	once    sync.Once
	reqs    chan any
	replies chan error
	done    chan struct{}
	timer   *time.Timer
	failed  error
}

func (s *idleStream) RecvMsg(m any) error {
	if s.failed != nil {
		return s.failed
	}
	s.once.Do(func() {
		s.timer = time.NewTimer(s.idle)
		go s.receive()
	})
	s.timer.Reset(s.idle)
	s.reqs <- m
	select {
	case err := <-s.replies:
		return err
	case <-s.timer.C:
		s.failed = status.Errorf(codes.ResourceExhausted, "no message for %s, the idle limit (vigild --stream-idle-timeout): the stream is closed", s.idle)
		return s.failed
	case <-s.ServerStream.Context().Done():
		s.failed = status.FromContextError(s.ServerStream.Context().Err()).Err()
		return s.failed
	}
}

func (s *idleStream) receive() {
	for {
		select {
		case m := <-s.reqs:
			err := s.ServerStream.RecvMsg(m)
			select {
			case s.replies <- err:
			case <-s.done:
				return
			}
		case <-s.done:
			return
		}
	}
}

// String names the limits for the start-up log.
func (l StreamLimits) String() string {
	return fmt.Sprintf("%d streams, %d per principal, idle %s", l.MaxStreams, l.MaxStreamsPerPrincipal, l.IdleTimeout)
}
