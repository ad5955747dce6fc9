package bench

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
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/server"
	"github.com/vigil-health/vigil/vision"
)

// unbatched is the triage model loaded a second time with batching off, so that one run can
// say what batching itself adds.
const (
	triageModel = "us-lesion-demo"
	unbatched   = "us-lesion-demo-unbatched"
)

// rig is a real Vigil server on a loopback port, with its own SQLite store and tokens in a
// temporary folder, over the engine the in-process paths use: both sides of a comparison share
// the same sessions and workers.
type rig struct {
	dir      string
	registry *inference.Registry
	store    *review.SQLite
	srv      *server.Server
	conn     *grpc.ClientConn
	tokens   map[auth.Role]string
}

func newRig(ctx context.Context, engine *inference.Engine, o Options) (*rig, error) {
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return nil, err
	}
	r := &rig{dir: dir, tokens: map[auth.Role]string{}}
	fail := func(err error) (*rig, error) {
		r.close()
		return nil, err
	}
	tokensPath := filepath.Join(dir, "tokens.json")
	for _, role := range []auth.Role{auth.RolePACSWorker, auth.RoleWardBridge} {
		tok, err := auth.AddToken(tokensPath, role, "bench-"+string(role))
		if err != nil {
			return fail(err)
		}
		r.tokens[role] = tok
	}
	tokens, err := auth.OpenTokenFile(tokensPath)
	if err != nil {
		return fail(err)
	}
	entries := append([]models.Entry(nil), o.Entries...)
	for _, e := range o.Entries {
		if e.Name == triageModel && e.Manifest != nil {
			m := *e.Manifest
			m.Name, m.Batching = unbatched, models.Batching{}
			entries = append(entries, models.Entry{Name: unbatched, Manifest: &m})
		}
	}
	r.registry = inference.LoadRegistry(ctx, engine, nil, entries, o.Resolver)
	for _, name := range []string{triageModel, unbatched, "fastestdet", "movenet-lightning"} {
		if _, err := r.registry.Session(name); err != nil {
			return fail(err)
		}
	}
	if r.store, err = review.OpenSQLite(filepath.Join(dir, "vigil.db")); err != nil {
		return fail(err)
	}
	r.srv = server.New(server.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tokens: tokens, Registry: r.registry, Review: r.store,
		Imaging:        server.ImagingOptions{Model: triageModel, Decoders: dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000}},
		RuntimeVersion: engine.Version(),
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	go r.srv.Serve(lis)
	r.srv.SetServing()
	if r.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxMessageBytes))); err != nil {
		return fail(err)
	}
	return r, nil
}

// as is a context carrying the role's token.
func (r *rig) as(ctx context.Context, role auth.Role) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.tokens[role])
}

func (r *rig) session(name string) *inference.Session {
	s, err := r.registry.Session(name)
	if err != nil {
		panic(fmt.Sprintf("bench: %s was checked at start: %v", name, err))
	}
	return s
}

// close stops the server and frees everything; a second call does nothing.
func (r *rig) close() {
	if r.conn != nil {
		r.conn.Close()
	}
	if r.srv != nil {
		r.srv.Shutdown(context.Background())
	}
	if r.store != nil {
		r.store.Close()
	}
	if r.registry != nil {
		r.registry.Close()
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
	*r = rig{}
}
