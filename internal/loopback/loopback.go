// Package loopback starts a real Vigil server on a loopback port, with its own SQLite store
// and tokens in a temporary folder, over an engine the caller owns: for the commands that
// measure Vigil in process (vigil bench, vigil eval) through the same gRPC path a client takes.
package loopback

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/server"
)

// Options say what the server loads and who may call it.
type Options struct {
	Entries  []models.Entry
	Resolver *models.Resolver
	// Load names the models that must load: Start fails, naming the first that does not.
	Load []string
	// Roles get a token each.
	Roles   []auth.Role
	Imaging server.ImagingOptions
	Ward    server.WardOptions
	// Logger takes the server's log; nil discards it.
	Logger *slog.Logger
}

// Server is a running server and a client connection to it.
type Server struct {
	Dir      string
	Registry *inference.Registry
	Store    *review.SQLite
	Conn     *grpc.ClientConn
	srv      *server.Server
	tokens   map[auth.Role]string
}

// Start starts a server on 127.0.0.1 with a free port.
func Start(ctx context.Context, engine *inference.Engine, o Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "vigil-loopback-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, tokens: map[auth.Role]string{}}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}
	tokensPath := filepath.Join(dir, "tokens.json")
	for _, role := range o.Roles {
		tok, err := auth.AddToken(tokensPath, role, "loopback-"+string(role))
		if err != nil {
			return fail(err)
		}
		s.tokens[role] = tok
	}
	tokens, err := auth.OpenTokenFile(tokensPath)
	if err != nil {
		return fail(err)
	}
	s.Registry = inference.LoadRegistry(ctx, engine, nil, o.Entries, o.Resolver)
	for _, name := range o.Load {
		if _, err := s.Registry.Session(name); err != nil {
			return fail(err)
		}
	}
	if s.Store, err = review.OpenSQLite(filepath.Join(dir, "vigil.db")); err != nil {
		return fail(err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.srv = server.New(server.Options{Logger: logger, Tokens: tokens, Registry: s.Registry, Review: s.Store,
		Imaging: o.Imaging, Ward: o.Ward, RuntimeVersion: engine.Version()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	go s.srv.Serve(lis)
	s.srv.SetServing()
	if s.Conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxMessageBytes))); err != nil {
		return fail(err)
	}
	return s, nil
}

// As is a context carrying the role's token.
func (s *Server) As(ctx context.Context, role auth.Role) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.tokens[role])
}

// Session is a model Start was asked to load.
func (s *Server) Session(name string) *inference.Session {
	sess, err := s.Registry.Session(name)
	if err != nil {
		panic(fmt.Sprintf("loopback: %s was checked at start: %v", name, err))
	}
	return sess
}

// Close stops the server and frees everything; a second call does nothing.
func (s *Server) Close() {
	if s.Conn != nil {
		s.Conn.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown(context.Background())
	}
	if s.Store != nil {
		s.Store.Close()
	}
	if s.Registry != nil {
		s.Registry.Close()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
	*s = Server{}
}
