package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

// anyRole lets every authenticated principal call a method.
var anyRole = []auth.Role{auth.RolePACSWorker, auth.RoleWardBridge, auth.RoleReviewer, auth.RoleAdmin}

// methodRoles is the one table of who may call what. admin may call everything; a method not
// in the table is refused to everyone else, so a new RPC is closed until it is listed here.
var methodRoles = map[string][]auth.Role{
	vigilv1.Imaging_AnalyzeInstance_FullMethodName:         {auth.RolePACSWorker},
	vigilv1.Imaging_AnalyzeInstanceProgress_FullMethodName: {auth.RolePACSWorker},

	vigilv1.Ward_StreamCamera_FullMethodName: {auth.RoleWardBridge},

	vigilv1.Review_List_FullMethodName:      {auth.RoleReviewer},
	vigilv1.Review_Get_FullMethodName:       {auth.RoleReviewer},
	vigilv1.Review_ClaimNext_FullMethodName: {auth.RoleReviewer},
	vigilv1.Review_Decide_FullMethodName:    {auth.RoleReviewer},
	vigilv1.Review_Release_FullMethodName:   {auth.RoleReviewer},
	vigilv1.Review_Counts_FullMethodName:    {auth.RoleReviewer},
	// PACS workers follow the state of the findings they sent, without who decided or why,
	// and pull the report of a study they sent (server/review.go holds them to that).
	vigilv1.Review_Watch_FullMethodName:        {auth.RoleReviewer, auth.RolePACSWorker},
	vigilv1.Review_ExportReport_FullMethodName: {auth.RoleReviewer, auth.RolePACSWorker},

	vigilv1.Models_ListModels_FullMethodName: anyRole,

	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      anyRole,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: anyRole,
}

// openMethods need no token: load balancers and orchestrators probe health without one.
var openMethods = []string{
	healthpb.Health_Check_FullMethodName,
	healthpb.Health_Watch_FullMethodName,
	healthpb.Health_List_FullMethodName,
}

// allowed says whether role may call method.
func allowed(role auth.Role, method string) bool {
	if role == auth.RoleAdmin {
		return true
	}
	return slices.Contains(methodRoles[method], role)
}

// Authenticator looks bearer tokens up, and says whether a principal known another way (a
// client certificate) has been revoked.
type Authenticator interface {
	Lookup(token string) (auth.Principal, error)
	CheckPrincipal(name string) error
}

// RefusalRecorder keeps the calls refused to known principals (the review store's refusals).
type RefusalRecorder interface {
	RecordRefusal(ctx context.Context, r review.Refusal) error
}

// gate authenticates and authorizes every call, keeps the refusals, and holds the streams
// open, so that it can bound them and end those whose credentials are withdrawn.
type gate struct {
	tokens   Authenticator
	refusals RefusalRecorder
	log      *slog.Logger
	streams  *openStreams
	// refusalEvery is how often one principal's refusals of one kind (method and code) are
	// written; those between are counted, and the next one written says how many there were.
	refusalEvery time.Duration
	runsMu       sync.Mutex
	runs         map[refusalKind]*refusalRun
}

// DefaultRefusalEvery: a client refused in a loop writes a row a minute per kind of refusal,
// not hundreds a second (issue 29: 581 a second from an expired token slowed reviewers).
const DefaultRefusalEvery = time.Minute

type refusalKind struct{ principal, role, method, code string }

type refusalRun struct {
	written time.Time // when the last one of this kind was written
	since   int       // refused since, not written
}

// credential is a call's proof of identity: recheck says whether it still holds (a token
// revoked or expired since, a certificate's principal revoked).
type credential struct {
	principal auth.Principal
	recheck   func() error
}

// authenticate finds who is calling: a bearer token, or else a client certificate that the
// TLS handshake verified against --client-ca (subject CN the principal, OU the role). It
// returns the principal known so far beside an error, so that the refusal can name it.
func (g *gate) authenticate(ctx context.Context) (credential, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		if cert := verifiedCertificate(ctx); cert != nil {
			return g.certificate(cert)
		}
		return credential{}, status.Error(codes.Unauthenticated, "missing authorization metadata: send 'authorization: Bearer <token>'")
	}
	token, ok := strings.CutPrefix(values[0], "Bearer ")
	if !ok {
		token, ok = strings.CutPrefix(values[0], "bearer ")
	}
	if !ok || token == "" {
		return credential{}, status.Error(codes.Unauthenticated, "authorization metadata must be 'Bearer <token>'")
	}
	token = strings.TrimSpace(token)
	p, err := g.tokens.Lookup(token)
	cred := credential{principal: p, recheck: func() error { _, err := g.tokens.Lookup(token); return err }}
	switch {
	case err == nil:
		return cred, nil
	case errors.Is(err, auth.ErrUnknownToken):
		return credential{}, status.Error(codes.Unauthenticated, "unknown token")
	case errors.Is(err, auth.ErrExpired):
		return cred, status.Error(codes.Unauthenticated, "the token has expired: ask an admin for a new one")
	}
	g.log.Error("tokens file unreadable", slog.String("error", err.Error()))
	return credential{}, status.Error(codes.Unavailable, "tokens file cannot be read; the server log has the detail")
}

// verifiedCertificate is the client's certificate when the handshake verified it.
func verifiedCertificate(ctx context.Context) *x509.Certificate {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

func (g *gate) certificate(cert *x509.Certificate) (credential, error) {
	name := cert.Subject.CommonName
	if !auth.ValidPrincipal(name) {
		return credential{}, status.Error(codes.Unauthenticated, "the client certificate's subject CN is not a principal name (letters, digits, '.', '_', '@' or '-')")
	}
	cred := credential{principal: auth.Principal{Name: name}, recheck: func() error { return g.tokens.CheckPrincipal(name) }}
	for _, ou := range cert.Subject.OrganizationalUnit {
		if slices.Contains(auth.Roles, auth.Role(ou)) {
			cred.principal.Role = auth.Role(ou)
			break
		}
	}
	if cred.principal.Role == "" {
		return cred, status.Errorf(codes.PermissionDenied, "the client certificate's subject OU names no role: want one of %v", auth.Roles)
	}
	switch err := cred.recheck(); {
	case errors.Is(err, auth.ErrRevoked):
		return cred, status.Errorf(codes.Unauthenticated, "principal %q was revoked", name)
	case err != nil:
		g.log.Error("tokens file unreadable", slog.String("error", err.Error()))
		return credential{}, status.Error(codes.Unavailable, "tokens file cannot be read; the server log has the detail")
	}
	return cred, nil
}

// authorize authenticates the call and checks the role table. It returns the context
// carrying the principal.
func (g *gate) authorize(ctx context.Context, method string) (context.Context, credential, error) {
	if slices.Contains(openMethods, method) {
		return ctx, credential{}, nil
	}
	cred, err := g.authenticate(ctx)
	if err == nil && !allowed(cred.principal.Role, method) {
		err = status.Errorf(codes.PermissionDenied, "role %s may not call %s", cred.principal.Role, method)
	}
	if err != nil {
		g.refuse(ctx, cred.principal, method, err)
		return nil, cred, err
	}
	p := cred.principal
	if call, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		call.principal = &p
	}
	return auth.WithPrincipal(ctx, p), cred, nil
}

// refuse keeps a refusal of a known principal: the first of a kind (principal, method, code)
// in each refusalEvery, the next one written counting those between. Every refusal is also
// logged and counted (vigil_grpc_handled_total). Calls with no principal (no token, an
// unknown one) are only logged and counted: anyone could write those without end.
func (g *gate) refuse(ctx context.Context, p auth.Principal, method string, err error) {
	if p.Name == "" || g.refusals == nil {
		return
	}
	st := status.Convert(err)
	now, kind := time.Now(), refusalKind{p.Name, string(p.Role), method, st.Code().String()}
	g.runsMu.Lock()
	if g.runs == nil {
		g.runs = map[refusalKind]*refusalRun{}
	}
	run := g.runs[kind]
	if run != nil && now.Sub(run.written) < g.refusalEvery {
		run.since++
		g.runsMu.Unlock()
		return
	}
	reason := st.Message()
	if run != nil && run.since > 0 {
		reason += fmt.Sprintf(" (and %d more refusals of this kind since %s, not written one by one)", run.since, run.written.UTC().Format(time.RFC3339))
	}
	g.runs[kind] = &refusalRun{written: now}
	g.runsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := g.refusals.RecordRefusal(ctx, review.Refusal{Time: now, Principal: p.Name, Role: string(p.Role),
		Method: method, Code: kind.code, Reason: reason}); err != nil {
		g.log.Error("refusal not recorded", slog.String("principal", p.Name), slog.String("method", method), slog.String("error", err.Error()))
	}
}

func (g *gate) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, cred, err := g.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		if status.Code(err) == codes.PermissionDenied {
			// A handler's own refusal (a PACS worker asking for a study it did not send).
			g.refuse(ctx, cred.principal, info.FullMethod, err)
		}
		return resp, err
	}
}

// stream authorizes a stream, counts it against the limits, ends it when its credential is
// withdrawn, and closes a client stream that goes idle.
func (g *gate) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cred, err := g.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		var p *auth.Principal
		if cred.recheck != nil {
			p = &cred.principal
		}
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		release, err := g.streams.acquire(p, cred.recheck, cancel)
		if err != nil {
			if p != nil {
				g.refuse(ctx, *p, info.FullMethod, err)
			}
			return err
		}
		defer release()
		var s grpc.ServerStream = &contextStream{ServerStream: ss, ctx: ctx}
		if info.IsClientStream {
			is := newIdleStream(s, g.streams.limits.IdleTimeout)
			defer is.stop()
			s = is
		}
		err = handler(srv, s)
		if cause := context.Cause(ctx); errors.Is(cause, errWithdrawn) {
			g.refuse(ctx, *p, info.FullMethod, cause)
			return cause
		}
		return err
	}
}

// contextStream is a ServerStream with a different context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
