// Command reviewer claims the most urgent finding waiting in Vigil's review queue, shows it,
// and records the decision given on the command line. Run it with a reviewer token:
//
//	VIGIL_TOKEN=vgl_… go run ./samples/reviewer --server 127.0.0.1:7443 --decide accept
package main

import (
	"context"
	"flag"
	"fmt"
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
	decide := flag.String("decide", "", "accept or reject the claimed finding (empty: claim and release)")
	reason := flag.String("reason", "", "why: a rejection needs one, such as false-positive or artefact")
	flag.Parse()
	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+os.Getenv("VIGIL_TOKEN")), 30*time.Second)
	defer cancel()
	review := vigilv1.NewReviewClient(conn)

	// A claim is a lease: nobody else gets the finding until it is decided, released or the
	// lease runs out.
	claimed, err := review.ClaimNext(ctx, &vigilv1.ClaimNextRequest{LeaseSeconds: 300})
	if err != nil {
		log.Fatal(err)
	}
	f := claimed.Finding
	if f == nil {
		fmt.Println("nothing is waiting")
		return
	}
	fmt.Printf("claimed %s: %s, score %.2f, priority %d, version %d\n", f.Id, f.Label, f.Score, f.Priority, f.Version)
	for _, m := range f.Measurements {
		fmt.Printf("  %s %.1f %s\n", m.Name, m.Value, m.Unit)
	}
	for _, e := range f.Evidence {
		fmt.Printf("  evidence: %s\n", e)
	}
	var outcome vigilv1.Outcome
	switch *decide {
	case "accept":
		outcome = vigilv1.Outcome_OUTCOME_ACCEPT
	case "reject":
		outcome = vigilv1.Outcome_OUTCOME_REJECT
	default:
		if _, err := review.Release(ctx, &vigilv1.ReleaseRequest{Id: f.Id, Version: f.Version}); err != nil {
			log.Fatal(err)
		}
		fmt.Println("released")
		return
	}
	// The decision names the version it was made on: if the finding changed meanwhile, the
	// server answers Aborted with the current version, and nothing is recorded.
	decided, err := review.Decide(ctx, &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: outcome, ReasonCode: *reason})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s is now %s (version %d)\n", decided.Finding.Id, decided.Finding.State, decided.Finding.Version)
}
