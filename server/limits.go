package server

import (
	"context"
	"errors"
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
	// MaxOpenStreams bounds the streams of callers without a credential (health's Watch, the
	// one open stream): a budget of their own, apart from MaxStreams, so that no one without
	// a token can take the slots of uploads, cameras and reviewers.
	MaxOpenStreams int
	// IdleTimeout ends a client stream that sends nothing for this long.
	IdleTimeout time.Duration
}

// DefaultStreamLimits suit one site: a few dozen cameras and workers, and reviewers' pages;
// a few load balancers or probes watching health.
var DefaultStreamLimits = StreamLimits{MaxStreams: 256, MaxStreamsPerPrincipal: 32, MaxOpenStreams: 16, IdleTimeout: time.Minute}

func (l StreamLimits) withDefaults() StreamLimits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultStreamLimits.MaxStreams
	}
	if l.MaxStreamsPerPrincipal <= 0 {
		l.MaxStreamsPerPrincipal = DefaultStreamLimits.MaxStreamsPerPrincipal
	}
	if l.MaxOpenStreams <= 0 {
		l.MaxOpenStreams = DefaultStreamLimits.MaxOpenStreams
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultStreamLimits.IdleTimeout
	}
	return l
}

// errWithdrawn ends a stream whose token was revoked or expired, or whose certificate's
// principal was revoked, while it was open.
var errWithdrawn = status.Error(codes.Unauthenticated, "the credential this stream was opened with was revoked or has expired: the stream is closed")

// openStreams counts the streams open, on the server and per principal, and ends those whose
// credential is withdrawn: a sweep rechecks every open stream's credential each second.
type openStreams struct {
	limits StreamLimits
	mu     sync.Mutex
	total  int // streams of principals
	anon   int // streams of callers without a credential
	by     map[string]int
	open   map[*openStream]bool
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
}

type openStream struct {
	recheck func() error
	cancel  context.CancelCauseFunc
}

// recheckEvery is how soon a revocation ends the streams of its principal.
const recheckEvery = time.Second

func newOpenStreams(limits StreamLimits) *openStreams {
	o := &openStreams{limits: limits, by: map[string]int{}, open: map[*openStream]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go o.sweep()
	return o
}

// close stops the sweep.
func (o *openStreams) close() {
	o.closed.Do(func() { close(o.stop) })
	<-o.done
}

func (o *openStreams) sweep() {
	defer close(o.done)
	tick := time.NewTicker(recheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-tick.C:
		}
		o.mu.Lock()
		streams := make([]*openStream, 0, len(o.open))
		for s := range o.open {
			streams = append(streams, s)
		}
		o.mu.Unlock()
		for _, s := range streams {
			if err := s.recheck(); errors.Is(err, auth.ErrUnknownToken) || errors.Is(err, auth.ErrExpired) || errors.Is(err, auth.ErrRevoked) {
				s.cancel(errWithdrawn)
			}
		}
	}
}

// acquire takes a slot for a stream of principal (nil for the open methods, such as health),
// or says which limit is reached. recheck and cancel, when set, let the sweep end the stream.
func (o *openStreams) acquire(p *auth.Principal, recheck func() error, cancel context.CancelCauseFunc) (release func(), err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p == nil {
		if o.anon >= o.limits.MaxOpenStreams {
			return nil, status.Errorf(codes.ResourceExhausted, "%d streams without a credential are open, their limit (vigild --max-open-streams): try again later", o.anon)
		}
		o.anon++
		return func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.anon--
		}, nil
	}
	if o.total >= o.limits.MaxStreams {
		return nil, status.Errorf(codes.ResourceExhausted, "the server has %d streams open, its limit (vigild --max-streams): try again later", o.total)
	}
	key := string(p.Role) + "/" + p.Name
	if o.by[key] >= o.limits.MaxStreamsPerPrincipal {
		return nil, status.Errorf(codes.ResourceExhausted, "principal %q has %d streams open, its limit (vigild --max-streams-per-principal): close one first", p.Name, o.by[key])
	}
	o.by[key]++
	o.total++
	var s *openStream
	if recheck != nil {
		s = &openStream{recheck: recheck, cancel: cancel}
		o.open[s] = true
	}
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.total--
		delete(o.open, s)
		if o.by[key]--; o.by[key] == 0 {
			delete(o.by, key)
		}
	}, nil
}

// idleStream ends a client stream that sends nothing for idle. A receive blocked in gRPC
// cannot be interrupted, so one goroutine per stream receives, and RecvMsg waits for it, for
// the timer or for the stream's context; once the handler returns, gRPC ends the stream and
// that receive returns.
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

func newIdleStream(s grpc.ServerStream, idle time.Duration) *idleStream {
	return &idleStream{ServerStream: s, idle: idle, reqs: make(chan any), replies: make(chan error), done: make(chan struct{})}
}

// stop ends the receiving goroutine once the handler has returned.
func (s *idleStream) stop() { close(s.done) }

func (s *idleStream) RecvMsg(m any) error {
	if s.failed != nil {
		return s.failed
	}
	s.once.Do(func() {
		s.timer = time.NewTimer(s.idle)
		go s.receive()
	})
	s.timer.Reset(s.idle)
	ctx := s.Context()
	select {
	case s.reqs <- m:
	case <-ctx.Done():
		s.failed = contextError(ctx)
		return s.failed
	}
	select {
	case err := <-s.replies:
		return err
	case <-s.timer.C:
		s.failed = status.Errorf(codes.ResourceExhausted, "no message for %s, the idle limit (vigild --stream-idle-timeout): the stream is closed", s.idle)
		return s.failed
	case <-ctx.Done():
		s.failed = contextError(ctx)
		return s.failed
	}
}

// contextError is the status a stream's ended context stands for: its cause when the gate
// withdrew it.
func contextError(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, errWithdrawn) {
		return cause
	}
	return status.FromContextError(ctx.Err()).Err()
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
