package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

func seed(t *testing.T, s review.Store, n int) []review.Finding {
	t.Helper()
	batch := make([]review.Finding, n)
	for i := range batch {
		batch[i] = review.Finding{
			Pipeline: review.PipelineTriage, Label: "lesion", Score: 0.8, Priority: i % 3,
			Box:     &review.Box{X: 1, Y: 2, Width: 3, Height: 4},
			Model:   review.ModelRef{Name: "us-lesion-demo", Version: "1", SHA256: "ab"},
			Source:  review.Source{StudyInstanceUID: "1.2.3", SOPInstanceUID: fmt.Sprintf("1.2.3.%d", i), Modality: "US"},
			Overlay: &review.Image{MediaType: "image/png", Data: []byte{0x89, 'P', 'N', 'G'}, Width: 8, Height: 8},
		}
	}
	out, err := s.Add(context.Background(), "pacs", batch)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReviewWorkflowOverGRPC(t *testing.T) {
	forEachStore(t, func(t *testing.T, store func(*Options)) {
		ts := startServer(t, nil, store)
		seeded := seed(t, ts.review, 3)
		rc := vigilv1.NewReviewClient(ts.conn)
		ctx := ts.as(auth.RoleReviewer)

		list, err := rc.List(ctx, &vigilv1.ListRequest{})
		if err != nil || len(list.Findings) != 3 || list.Findings[0].Priority != 2 {
			t.Fatalf("list: %v, %v; want 3 findings, priority 2 first", list, err)
		}
		if list.Findings[0].Overlay != nil {
			t.Error("List carries overlays; only Get should")
		}
		claimed, err := rc.ClaimNext(ctx, &vigilv1.ClaimNextRequest{LeaseSeconds: 60})
		if err != nil || claimed.Finding.State != vigilv1.FindingState_FINDING_STATE_CLAIMED || claimed.Finding.ClaimedBy != "test-reviewer" {
			t.Fatalf("claim: %v, %v", claimed, err)
		}
		id := claimed.Finding.Id

		// A decision on the version before the claim is stale: Aborted with the current version.
		_, err = rc.Decide(ctx, &vigilv1.DecideRequest{Id: id, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
		st := status.Convert(err)
		if st.Code() != codes.Aborted {
			t.Fatalf("stale decision: got %v, want Aborted", err)
		}
		var current string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				current = info.Metadata["current_version"]
			}
		}
		if current != fmt.Sprint(claimed.Finding.Version) {
			t.Errorf("stale decision detail: current_version %q, want %d", current, claimed.Finding.Version)
		}

		decided, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: id, Version: claimed.Finding.Version,
			Outcome: vigilv1.Outcome_OUTCOME_AMEND, ReasonCode: "wrong-size",
			Amendment: &vigilv1.Amendment{Box: &vigilv1.Box{X: 2, Y: 2, Width: 5, Height: 5}}})
		if err != nil || decided.Finding.State != vigilv1.FindingState_FINDING_STATE_AMENDED || decided.Finding.Decision.Amendment.Box.Width != 5 {
			t.Fatalf("amend: %v, %v", decided, err)
		}

		got, err := rc.Get(ctx, &vigilv1.GetRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if got.Finding.Overlay == nil || string(got.Finding.Overlay.Data) != "\x89PNG" {
			t.Errorf("Get: overlay %v, want the stored image", got.Finding.Overlay)
		}
		var actions []string
		for _, a := range got.Audit {
			actions = append(actions, a.Actor+":"+a.Action)
		}
		if fmt.Sprint(actions) != "[pacs:create test-reviewer:claim test-reviewer:amend]" {
			t.Errorf("audit %v", actions)
		}

		// Release: claim another and give it back.
		c2, _ := rc.ClaimNext(ctx, &vigilv1.ClaimNextRequest{})
		rel, err := rc.Release(ctx, &vigilv1.ReleaseRequest{Id: c2.Finding.Id, Version: c2.Finding.Version})
		if err != nil || rel.Finding.State != vigilv1.FindingState_FINDING_STATE_PENDING {
			t.Fatalf("release: %v, %v", rel, err)
		}

		counts, err := rc.Counts(ctx, &vigilv1.CountsRequest{})
		if err != nil || len(counts.Models) != 1 || counts.Models[0].Amended != 1 || counts.Models[0].AcceptanceRate != 1 {
			t.Fatalf("counts: %v, %v", counts, err)
		}

		for _, tt := range []struct {
			name string
			call func() error
			want codes.Code
		}{
			{"decide twice", func() error {
				_, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: id, Version: decided.Finding.Version, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
				return err
			}, codes.FailedPrecondition},
			{"unknown id", func() error {
				_, err := rc.Get(ctx, &vigilv1.GetRequest{Id: "f-00000000000000000000"})
				return err
			}, codes.NotFound},
			{"malformed id", func() error { _, err := rc.Get(ctx, &vigilv1.GetRequest{Id: "DROP TABLE"}); return err }, codes.InvalidArgument},
			{"no outcome", func() error {
				_, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[0].ID, Version: 1})
				return err
			}, codes.InvalidArgument},
			{"reject without reason", func() error {
				_, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[0].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_REJECT})
				return err
			}, codes.InvalidArgument},
			{"lease too long", func() error {
				_, err := rc.ClaimNext(ctx, &vigilv1.ClaimNextRequest{LeaseSeconds: 1 << 30})
				return err
			}, codes.InvalidArgument},
			{"page too big", func() error { _, err := rc.List(ctx, &vigilv1.ListRequest{PageSize: 100000}); return err }, codes.InvalidArgument},
		} {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
			}
		}
	})
}

// TestWatchResumesAfterADroppedConnection drops the client's connection in the middle of a
// stream of changes; reconnecting with the last sequence seen yields every later change once.
func TestWatchResumesAfterADroppedConnection(t *testing.T) {
	forEachStore(t, func(t *testing.T, store func(*Options)) {
		ts := startServer(t, nil, store)
		seeded := seed(t, ts.review, 6)
		ctx := context.Background()
		dial := func() *grpc.ClientConn {
			conn, err := grpc.NewClient(ts.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			return conn
		}
		// Start after the six creations.
		last, err := ts.review.LastSequence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conn := dial()
		watch, err := vigilv1.NewReviewClient(conn).Watch(ts.as(auth.RoleReviewer), &vigilv1.WatchRequest{AfterSequence: last})
		if err != nil {
			t.Fatal(err)
		}
		decide := func(i int) {
			t.Helper()
			if _, err := ts.review.Decide(ctx, "dr.x", seeded[i].ID, 1, review.Decision{Outcome: review.OutcomeAccept}); err != nil {
				t.Fatal(err)
			}
		}
		decide(0)
		var seen []int64
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev.Sequence)
		decide(1)
		ev, err = watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev.Sequence)
		conn.Close() // the connection drops

		for i := 2; i < 6; i++ {
			decide(i) // changes while the reviewer is away
		}
		conn2 := dial()
		defer conn2.Close()
		wctx, cancel := context.WithCancel(ts.as(auth.RoleReviewer))
		defer cancel()
		watch2, err := vigilv1.NewReviewClient(conn2).Watch(wctx, &vigilv1.WatchRequest{AfterSequence: seen[len(seen)-1]})
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for len(seen) < 6 {
			ev, err := watch2.Recv()
			if err != nil {
				t.Fatalf("after %v: %v", seen, err)
			}
			seen = append(seen, ev.Sequence)
			ids[ev.Finding.Id] = true
			if ev.Action != "accept" || ev.Finding.State != vigilv1.FindingState_FINDING_STATE_ACCEPTED {
				t.Errorf("event %d: action %s state %v", ev.Sequence, ev.Action, ev.Finding.State)
			}
		}
		for i := 1; i < len(seen); i++ {
			if seen[i] != seen[i-1]+1 {
				t.Errorf("sequences %v have a gap or a repeat", seen)
			}
		}
		for i := 2; i < 6; i++ {
			if !ids[seeded[i].ID] {
				t.Errorf("the decision on %s was missed", seeded[i].ID)
			}
		}
		// Nothing more is pending: the stream waits, and ends when the client goes.
		cancel()
		if _, err := watch2.Recv(); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("after cancel: got %v, want a Canceled error", err)
		}
	})
}
