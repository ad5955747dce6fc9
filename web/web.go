// Package web serves the reviewer's page and the small JSON API it calls. The API is a thin
// translation to the Review gRPC service on an in-process connection: every call goes through
// the same interceptors (auth and the role table, logging, metrics) and the same handlers as a
// gRPC client's, so there is one implementation of the review rules.
package web

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-health/vigil/internal/panics"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

//go:embed static
var static embed.FS

// maxBody bounds a JSON request.
const maxBody = 1 << 20

// unary are the Review methods the page may call, with their request and response types.
var unary = map[string]func() (req, resp proto.Message){
	"List": func() (proto.Message, proto.Message) { return &vigilv1.ListRequest{}, &vigilv1.ListResponse{} },
	"Get":  func() (proto.Message, proto.Message) { return &vigilv1.GetRequest{}, &vigilv1.GetResponse{} },
	"ClaimNext": func() (proto.Message, proto.Message) {
		return &vigilv1.ClaimNextRequest{}, &vigilv1.ClaimNextResponse{}
	},
	"Decide":  func() (proto.Message, proto.Message) { return &vigilv1.DecideRequest{}, &vigilv1.DecideResponse{} },
	"Release": func() (proto.Message, proto.Message) { return &vigilv1.ReleaseRequest{}, &vigilv1.ReleaseResponse{} },
	"Counts":  func() (proto.Message, proto.Message) { return &vigilv1.CountsRequest{}, &vigilv1.CountsResponse{} },
	"ExportReport": func() (proto.Message, proto.Message) {
		return &vigilv1.ExportReportRequest{}, &vigilv1.ExportReportResponse{}
	},
}

var (
	marshal   = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}
	unmarshal = protojson.UnmarshalOptions{DiscardUnknown: false}
)

// DefaultBodyIdle is how long a request body may send nothing before its request fails, and
// DefaultBodyTimeout how long the whole body may take (a client trickling a byte now and then
// is never idle for long).
const (
	DefaultBodyIdle    = 10 * time.Second
	DefaultBodyTimeout = 30 * time.Second
)

// Options shape the page and its API.
type Options struct {
	// BodyIdle fails a request body that sends nothing this long, BodyTimeout one not whole
	// this long after it starts (the defaults when zero).
	BodyIdle, BodyTimeout time.Duration
	// ViewerURL, when set, is a DICOMweb viewer's URL template (such as OHIF's) with {study}
	// for the Study Instance UID: the page links each study to it.
	ViewerURL string
}

// Handler serves the page at / and the API at /api/v1/review/.
func Handler(conn grpc.ClientConnInterface, log *slog.Logger, o Options) http.Handler {
	bodyIdle, bodyTimeout := cmp.Or(o.BodyIdle, DefaultBodyIdle), cmp.Or(o.BodyTimeout, DefaultBodyTimeout)
	mux := http.NewServeMux()
	files, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(files))
	mux.HandleFunc("POST /api/v1/review/{method}", func(w http.ResponseWriter, r *http.Request) {
		serveUnary(w, r, conn)
	})
	// The page's settings: nothing secret, so no token.
	mux.HandleFunc("GET /api/v1/config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"viewer_url": o.ViewerURL})
	})
	mux.HandleFunc("GET /api/v1/review/watch", func(w http.ResponseWriter, r *http.Request) {
		serveWatch(w, r, conn, log)
	})
	return secure(slowBodies(mux, bodyIdle, bodyTimeout))
}

// errBodySlow is a request body that stopped sending, or takes too long.
var errBodySlow = errors.New("web: request body too slow")

// slowBodies gives each read of a request body a deadline: idle after the read before, and
// never past timeout after the first, so that a client sending a byte now and then cannot hold
// a connection and a handler for as long as it likes. (The server's ReadTimeout would bound the
// whole request, and with it the long-lived watch.)
func slowBodies(h http.Handler, idle, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &slowBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: idle, timeout: timeout}
		}
		h.ServeHTTP(w, r)
	})
}

type slowBody struct {
	io.ReadCloser
	rc            *http.ResponseController
	idle, timeout time.Duration
	end           time.Time // the whole body's deadline, set at the first read
}

func (b *slowBody) Read(p []byte) (int, error) {
	now := time.Now()
	if b.end.IsZero() {
		b.end = now.Add(b.timeout)
	}
	deadline := now.Add(b.idle)
	if b.end.Before(deadline) {
		deadline = b.end
	}
	b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, fmt.Errorf("%w: nothing for %s, or not whole after %s (vigild --http-body-idle-timeout, --http-body-timeout)", errBodySlow, b.idle, b.timeout)
	case err != nil:
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// secure adds headers that keep the page from being framed, sniffed or fed scripts from
// elsewhere.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// errBadAuthorization answers an Authorization header that cannot be a bearer token: gRPC
// metadata takes printable ASCII only, and the call would otherwise fail as Internal.
var errBadAuthorization = status.Error(codes.Unauthenticated, "the Authorization header must be 'Bearer <token>' in printable ASCII")

// outgoing carries the page's bearer token to the gRPC call.
func outgoing(r *http.Request) (context.Context, error) {
	ctx := r.Context()
	a := r.Header.Get("Authorization")
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] > 0x7e {
			return nil, errBadAuthorization
		}
	}
	if a != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
	}
	return ctx, nil
}

func serveUnary(w http.ResponseWriter, r *http.Request, conn grpc.ClientConnInterface) {
	newMsgs, ok := unary[r.PathValue("method")]
	if !ok {
		writeError(w, status.Error(codes.NotFound, "no such review method"))
		return
	}
	req, resp := newMsgs()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if errors.Is(err, errBodySlow) {
		writeError(w, status.Error(codes.ResourceExhausted, err.Error()))
		return
	}
	if err != nil {
		writeError(w, status.Errorf(codes.InvalidArgument, "request body over %d bytes or unreadable", maxBody))
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := unmarshal.Unmarshal(body, req); err != nil {
			writeError(w, status.Error(codes.InvalidArgument, "request body is not the method's JSON request"))
			return
		}
	}
	ctx, err := outgoing(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := conn.Invoke(ctx, "/"+vigilv1.Review_ServiceDesc.ServiceName+"/"+r.PathValue("method"), req, resp); err != nil {
		writeError(w, err)
		return
	}
	data, err := marshal.Marshal(resp)
	if err != nil {
		writeError(w, status.Error(codes.Internal, "encoding the response"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// serveWatch streams Watch events as newline-delimited JSON. A keep-alive line every 15 s
// lets the page notice a dead connection.
func serveWatch(w http.ResponseWriter, r *http.Request, conn grpc.ClientConnInterface, log *slog.Logger) {
	after, err := strconv.ParseInt(r.URL.Query().Get("after_sequence"), 10, 64)
	if err != nil && r.URL.Query().Get("after_sequence") != "" {
		writeError(w, status.Error(codes.InvalidArgument, "after_sequence is not a number"))
		return
	}
	out, err := outgoing(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(out)
	defer cancel()
	stream, err := vigilv1.NewReviewClient(conn).Watch(ctx, &vigilv1.WatchRequest{AfterSequence: after})
	if err != nil {
		writeError(w, err)
		return
	}
	// The first receive tells whether the call was allowed before any byte is written.
	events := make(chan *vigilv1.WatchEvent)
	errc := make(chan error, 1)
	go func() {
		errc <- panics.Catch("web watch", func() error {
			for {
				ev, err := stream.Recv()
				if err != nil {
					return err
				}
				select {
				case events <- ev:
				case <-ctx.Done():
					return nil
				}
			}
		})
	}()
	flusher, _ := w.(http.Flusher)
	started := false
	start := func() {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
	}
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	// A short grace period lets an auth error come back as a proper HTTP status.
	grace := time.After(200 * time.Millisecond)
	for {
		select {
		case ev := <-events:
			start()
			data, _ := marshal.Marshal(ev)
			w.Write(append(data, '\n'))
		case err := <-errc:
			if pe := (*panics.Error)(nil); errors.As(err, &pe) {
				log.Error("watch relay panicked", slog.Any("panic", pe.Value), slog.String("stack", string(pe.Stack)))
				err = status.Error(codes.Internal, "internal error; the server log has the detail")
			}
			if !started {
				writeError(w, err)
				return
			}
			if status.Code(err) != codes.Canceled {
				log.Debug("watch stream ended", slog.String("code", status.Code(err).String()))
			}
			return
		case <-grace:
			start()
		case <-keepAlive.C:
			start()
			w.Write([]byte("{}\n"))
		case <-r.Context().Done():
			return
		}
		if flusher != nil && started {
			flusher.Flush()
		}
	}
}

// httpStatus maps gRPC codes to HTTP ones for the page.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.NotFound:           http.StatusNotFound,
	codes.Aborted:            http.StatusConflict,
	codes.FailedPrecondition: http.StatusPreconditionFailed,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.Canceled:           499,
}

func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code, ok := httpStatus[st.Code()]
	if !ok {
		code = http.StatusInternalServerError
	}
	body := map[string]any{"code": st.Code().String(), "message": st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetMetadata() map[string]string }); ok {
			body["metadata"] = info.GetMetadata()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}
