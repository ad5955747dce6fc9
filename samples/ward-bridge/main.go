// Command ward-bridge reads a camera (or a video file) and streams its frames to Vigil's
// Ward.StreamCamera, printing the people tracked and any fall alert. Run it with a
// ward-bridge token:
//
//	VIGIL_TOKEN=vgl_… go run ./samples/ward-bridge --server 127.0.0.1:7443 --camera bed-4 --source /dev/video0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/vision"
)

func main() {
	server := flag.String("server", "127.0.0.1:7443", "vigild's gRPC address")
	camera := flag.String("camera", "camera-1", "the camera's ID, as the ward knows it")
	source := flag.String("source", "/dev/video0", "a camera device, an rtsp:// URL or a video file")
	maxFrames := flag.Int("max-frames", 0, "stop after this many frames (0: until the source ends)")
	flag.Parse()
	video, err := vision.OpenVideo(*source) // OpenCV reads cameras, RTSP and files alike
	if err != nil {
		log.Fatal(err)
	}
	defer video.Close()
	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+os.Getenv("VIGIL_TOKEN"))
	stream, err := vigilv1.NewWardClient(conn).StreamCamera(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// The first message configures the stream; in realtime the server drops frames it cannot
	// keep up with, and says so.
	fps := video.FPS()
	if fps <= 0 {
		fps = 10
	}
	if err := stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
		CameraId: *camera, FrameRate: fps, Policy: vigilv1.FramePolicy_FRAME_POLICY_REALTIME}}}); err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- printEvents(stream) }()
	for seq := int64(1); *maxFrames == 0 || seq <= int64(*maxFrames); seq++ {
		frame, err := video.Read()
		if err != nil {
			break // the source ended
		}
		jpg, err := vision.EncodeJPEG(frame, 85)
		if err != nil {
			log.Fatal(err)
		}
		if stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{
			Sequence: seq, CaptureTime: timestamppb.Now(), Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: jpg}}}) != nil {
			break // the server ended the stream: printEvents has its reason
		}
	}
	stream.CloseSend()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
}

// printEvents prints the server's answers until it closes the stream.
func printEvents(stream vigilv1.Ward_StreamCameraClient) error {
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case ev.GetFrameResult() != nil:
			fmt.Printf("frame %d: %d people\n", ev.GetFrameResult().Sequence, len(ev.GetFrameResult().Tracks))
		case ev.GetFall() != nil:
			fmt.Printf("FALL: track %d, finding %s for review\n", ev.GetFall().TrackId, ev.GetFall().FindingId)
		case ev.GetDropped() != nil:
			fmt.Printf("the server dropped %d stale frames\n", ev.GetDropped().Count)
		case ev.GetFrameError() != nil:
			fmt.Printf("frame %d: %s\n", ev.GetFrameError().Sequence, ev.GetFrameError().Message)
		}
	}
}
