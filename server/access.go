package server

import (
	"context"
	"errors"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
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
	// PACS workers follow decisions and pull the report of a study they sent.
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

// Authenticator looks a bearer token up.
type Authenticator interface {
	Lookup(token string) (auth.Principal, error)
}

// authorize authenticates the request's bearer token and checks the role table. It returns
// the context carrying the principal.
func authorize(ctx context.Context, tokens Authenticator, method string) (context.Context, error) {
	if slices.Contains(openMethods, method) {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return nil, status.Error(codes.Unauthenticated, "missing authorization metadata: send 'authorization: Bearer <token>'")
	}
	token, ok := strings.CutPrefix(values[0], "Bearer ")
	if !ok {
		token, ok = strings.CutPrefix(values[0], "bearer ")
	}
	if !ok || token == "" {
		return nil, status.Error(codes.Unauthenticated, "authorization metadata must be 'Bearer <token>'")
	}
	p, err := tokens.Lookup(strings.TrimSpace(token))
	if err != nil {
		if errors.Is(err, auth.ErrUnknownToken) {
			return nil, status.Error(codes.Unauthenticated, "unknown token")
		}
		return nil, status.Error(codes.Unavailable, "tokens file cannot be read; the server log has the detail")
	}
	if !allowed(p.Role, method) {
		return nil, status.Errorf(codes.PermissionDenied, "role %s may not call %s", p.Role, method)
	}
	if call, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		call.principal = &p
	}
	return auth.WithPrincipal(ctx, p), nil
}

func unaryAuth(tokens Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authorize(ctx, tokens, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func streamAuth(tokens Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authorize(ss.Context(), tokens, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

// contextStream is a ServerStream with a different context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
