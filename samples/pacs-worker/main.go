// Command pacs-worker is the smallest PACS worker: it streams DICOM files to Vigil's
// Imaging.AnalyzeInstance and prints each instance's findings. Run it with a pacs-worker token:
//
//	VIGIL_TOKEN=vgl_… go run ./samples/pacs-worker --server 127.0.0.1:7443 FILE.dcm…
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

func main() {
	server := flag.String("server", "127.0.0.1:7443", "vigild's gRPC address")
	flag.Parse()
	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	imaging := vigilv1.NewImagingClient(conn)
	for _, path := range flag.Args() {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+os.Getenv("VIGIL_TOKEN")), time.Minute)
		resp, err := analyze(ctx, imaging, path)
		cancel()
		if err != nil {
			log.Fatalf("%s: %v", path, err)
		}
		fmt.Printf("%s: instance %s, %d findings (already analysed: %v)\n", path, resp.Source.SopInstanceUid, len(resp.Findings), resp.AlreadyAnalyzed)
		for _, f := range resp.Findings {
			fmt.Printf("  %s %s, score %.2f, priority %d\n", f.Id, f.Label, f.Score, f.Priority)
		}
	}
}

// analyze sends one file in 64 KB chunks: the server reads it as it arrives, and the answer
// comes once the findings are stored.
func analyze(ctx context.Context, imaging vigilv1.ImagingClient, path string) (*vigilv1.AnalyzeInstanceResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	stream, err := imaging.AnalyzeInstance(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: buf[:n]}) != nil {
				break // the server answered early (a stored result or an error): read it below
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}
