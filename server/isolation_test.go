package server

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/auth"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// pacsWorkerMethods are the methods a PACS worker may call, each with the test that shows a
// second worker learns nothing of the first one's instances, studies or decisions through it.
// A method opened to PACS workers without an entry here fails TestASecondWorkerLearnsNothing.
var pacsWorkerMethods = map[string]string{
	vigilv1.Imaging_AnalyzeInstance_FullMethodName:         "TestASecondWorkerLearnsNothing (replay), TestAnotherWorkerCannotReplayMyInstance",
	vigilv1.Imaging_AnalyzeInstanceProgress_FullMethodName: "TestASecondWorkerLearnsNothing (replay with progress)",
	vigilv1.Review_Watch_FullMethodName:                    "TestASecondWorkerLearnsNothing (from the first record), TestPACSWorkerSeesOnlyWhatItSent",
	vigilv1.Review_ExportReport_FullMethodName:             "TestASecondWorkerLearnsNothing, TestPACSWorkerSeesOnlyWhatItSent",
	vigilv1.Models_ListModels_FullMethodName:               "models only: no instance, study or count in its answer",
}

// TestASecondWorkerLearnsNothing: after the first PACS worker's instance is analysed and
// decided, a second PACS worker calls every method it may and some it may not. It gets
// PermissionDenied or its own data, and no answer, event or message names the first one's
// instance, study, patient, finding or reviewer.
func TestASecondWorkerLearnsNothing(t *testing.T) {
	for method, roles := range methodRoles {
		_, listed := pacsWorkerMethods[method]
		if slices.Contains(roles, auth.RolePACSWorker) && !listed && !strings.Contains(method, "ServerReflection") {
			t.Errorf("%s is open to PACS workers with no test that one worker learns nothing of another's through it: add it to pacsWorkerMethods", method)
		}
	}
	ts := startServer(t, nil, withTriage(t))
	secondToken, err := auth.AddToken(ts.tokensPath, auth.RolePACSWorker, "pacs-2")
	if err != nil {
		t.Fatal(err)
	}
	second := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+secondToken)
	imaging, review := vigilv1.NewImagingClient(ts.conn), vigilv1.NewReviewClient(ts.conn)

	first, truth := phantomFile(t, 900401, 1)
	sent, err := send(ts.as(auth.RolePACSWorker), imaging, first, 64<<10)
	if err != nil || len(sent.Findings) == 0 {
		t.Fatalf("the first worker's instance: %v", err)
	}
	f := sent.Findings[0]
	if _, err := review.Decide(ts.as(auth.RoleAdmin), &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT,
		ReasonCode: "confirmed", Comment: "seen by dr.first"}); err != nil {
		t.Fatal(err)
	}
	// What must not reach the second worker.
	secrets := []string{truth.Study, sent.Source.GetSopInstanceUid(), sent.Source.GetSeriesInstanceUid(), f.Id, "dr.first", "test-admin"}
	leaks := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s carries %q of the first worker's", what, s)
			}
		}
	}

	// The replay, both ways of analysing.
	stream, err := imaging.AnalyzeInstance(second)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: first, Options: &vigilv1.AnalyzeOptions{IncludeOverlays: true}})
	resp, err := stream.CloseAndRecv()
	if status.Code(err) != codes.PermissionDenied || resp != nil {
		t.Errorf("AnalyzeInstance replay: %v, %v; want PermissionDenied and nothing", resp, err)
	}
	leaks("AnalyzeInstance's refusal", status.Convert(err).Message())
	progress, err := imaging.AnalyzeInstanceProgress(second)
	if err != nil {
		t.Fatal(err)
	}
	progress.Send(&vigilv1.AnalyzeInstanceRequest{Chunk: first})
	progress.CloseSend()
	for {
		ev, err := progress.Recv()
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("AnalyzeInstanceProgress replay: %v, want PermissionDenied", err)
			}
			leaks("AnalyzeInstanceProgress's refusal", status.Convert(err).Message())
			break
		}
		if ev.GetResult() != nil {
			t.Errorf("AnalyzeInstanceProgress replay answered a result: %v", ev.GetResult())
		}
		leaks("an AnalyzeInstanceProgress event", ev.String())
	}

	// The export of the first worker's study.
	_, err = review.ExportReport(second, &vigilv1.ExportReportRequest{StudyInstanceUid: truth.Study})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("ExportReport of the first worker's study: %v, want PermissionDenied", err)
	}
	leaks("ExportReport's refusal", strings.ReplaceAll(status.Convert(err).Message(), truth.Study, "")) // the UID it was asked for may be named back

	// Watch from the very first record: the second worker's own instance comes through,
	// nothing before it does.
	ctx, cancel := context.WithCancel(second)
	defer cancel()
	watch, err := review.Watch(ctx, &vigilv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	own, _ := phantomFile(t, 900402, 1)
	mine, err := send(second, imaging, own, 64<<10)
	if err != nil || len(mine.Findings) == 0 {
		t.Fatalf("the second worker's own instance: %v", err)
	}
	for {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		leaks("a Watch event", ev.String())
		if ev.GetFinding().GetId() == mine.Findings[0].Id {
			break
		}
	}

	// The rest, refused by role; ListModels names models only.
	for name, call := range map[string]func() error{
		"List":   func() error { _, err := review.List(second, &vigilv1.ListRequest{}); return err },
		"Get":    func() error { _, err := review.Get(second, &vigilv1.GetRequest{Id: f.Id}); return err },
		"Counts": func() error { _, err := review.Counts(second, &vigilv1.CountsRequest{}); return err },
		"ClaimNext": func() error {
			_, err := review.ClaimNext(second, &vigilv1.ClaimNextRequest{})
			return err
		},
		"Decide": func() error {
			_, err := review.Decide(second, &vigilv1.DecideRequest{Id: f.Id, Version: f.Version + 1, Outcome: vigilv1.Outcome_OUTCOME_REJECT, ReasonCode: "artefact"})
			return err
		},
		"Release": func() error { _, err := review.Release(second, &vigilv1.ReleaseRequest{Id: f.Id}); return err },
	} {
		err := call()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s by a PACS worker: %v, want PermissionDenied", name, err)
		}
		leaks(name+"'s refusal", status.Convert(err).Message())
	}
	models, err := vigilv1.NewModelsClient(ts.conn).ListModels(second, &vigilv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leaks("ListModels", models.String())
}
