package server

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/vision"
)

// wardMessages turns fuzz bytes into up to 16 Ward requests: each is a 2-byte length and that
// many bytes, read as a WardRequest, or, when they are not one, sent as a frame's bytes.
func wardMessages(data []byte) []*vigilv1.WardRequest {
	var out []*vigilv1.WardRequest
	for len(data) >= 2 && len(out) < 16 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		chunk := data[:n]
		data = data[n:]
		msg := new(vigilv1.WardRequest)
		if err := proto.Unmarshal(chunk, msg); err != nil {
			enc := vigilv1.FrameEncoding(0)
			if len(chunk) > 0 {
				enc = vigilv1.FrameEncoding(chunk[0] % 4)
			}
			msg = &vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: int64(len(out)), Encoding: enc, Data: chunk, Width: 8, Height: 8}}}
		}
		out = append(out, msg)
	}
	return out
}

func encodeWard(msgs ...*vigilv1.WardRequest) []byte {
	var out []byte
	for _, m := range msgs {
		b, _ := proto.Marshal(m)
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzWardStream feeds the Ward handler random messages through bufconn, with the real
// models: every stream ends with a status that is the client's fault or the server's limits,
// never Internal, Unknown or a panic, and the server serves the next stream.
//
//	go test ./server -run '^$' -fuzz FuzzWardStream -fuzztime 10m
func FuzzWardStream(f *testing.F) {
	frames := walkersJPEGs(f, 2)
	small := make([][]byte, len(frames))
	for i, jpg := range frames {
		var fr vision.Frame
		if err := vision.DecodeInto(&fr, jpg); err != nil {
			f.Fatal(err)
		}
		r, err := vision.Resize(fr, 192, 144)
		if err != nil {
			f.Fatal(err)
		}
		if small[i], err = vision.EncodeJPEG(r, 80); err != nil {
			f.Fatal(err)
		}
	}
	config := &vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{CameraId: "fuzz-cam", FrameRate: 10,
		Policy: vigilv1.FramePolicy_FRAME_POLICY_EVERY_FRAME}}}
	frame := func(seq int64, data []byte, enc vigilv1.FrameEncoding) *vigilv1.WardRequest {
		return &vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: seq, Encoding: enc, Data: data}}}
	}
	f.Add(encodeWard(config, frame(1, small[0], vigilv1.FrameEncoding_FRAME_ENCODING_JPEG), frame(2, small[1], vigilv1.FrameEncoding_FRAME_ENCODING_JPEG)))
	f.Add(encodeWard(config, frame(1, make([]byte, 8*8*3), vigilv1.FrameEncoding_FRAME_ENCODING_BGR)))
	f.Add(encodeWard(frame(1, small[0], vigilv1.FrameEncoding_FRAME_ENCODING_JPEG)))
	f.Add(encodeWard(config, config))

	// One server for the whole run, on an in-memory listener.
	tokensPath := filepath.Join(f.TempDir(), "tokens.json")
	token, err := auth.AddToken(tokensPath, auth.RoleWardBridge, "fuzz-bridge")
	if err != nil {
		f.Fatal(err)
	}
	tokens, err := auth.OpenTokenFile(tokensPath)
	if err != nil {
		f.Fatal(err)
	}
	store, err := review.OpenSQLite(filepath.Join(f.TempDir(), "vigil.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tokens: tokens, Review: store}
	withTriage(f)(&opts)
	srv := New(opts)
	lis := bufconn.Listen(1 << 20)
	go srv.ServeInProcess(lis)
	srv.SetServing()
	f.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn, err := grpc.NewClient("passthrough:///fuzz", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	ward, health := vigilv1.NewWardClient(conn), healthpb.NewHealthClient(conn)

	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), 30*time.Second)
		defer cancel()
		stream, err := ward.StreamCamera(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range wardMessages(data) {
			if stream.Send(m) != nil {
				break // the server ended the stream: its status comes from Recv
			}
		}
		stream.CloseSend()
		for {
			_, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				switch status.Code(err) {
				case codes.Internal, codes.Unknown, codes.DeadlineExceeded:
					t.Fatalf("the stream ended with %v", err)
				}
				break
			}
		}
		if resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("after the stream, health says %v, %v", resp, err)
		}
	})
}
