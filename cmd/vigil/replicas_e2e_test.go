package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/pgtest"
	"github.com/vigil-health/vigil/internal/testenv"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

var healthLine = regexp.MustCompile(`msg="health for probes" health_listen=(\S+)`)

// replicaSet is several vigild processes on one PostgreSQL, sharing one tokens file.
type replicaSet struct {
	pg      *pgtest.Server
	url     string
	tokens  string // the data folder whose tokens.json every replica reads
	daemons []*daemon
}

// startReplicas starts n replicas at once against a new, empty database: they race to
// migrate it.
func startReplicas(t *testing.T, n int) *replicaSet {
	t.Helper()
	vigild, _ := binaries(t)
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	url, err := pg.NewDatabase("replicas")
	if err != nil {
		t.Fatal(err)
	}
	rs := &replicaSet{pg: pg, url: url, tokens: t.TempDir()}
	addToken(t, rs.tokens, "admin", "ops") // the tokens file exists before the replicas read it
	for range n {
		rs.daemons = append(rs.daemons, launchDaemon(t, t.TempDir(), vigild, "--store", url,
			"--tokens-file", filepath.Join(rs.tokens, "tokens.json"), "--health-listen", "127.0.0.1:0"))
	}
	for _, d := range rs.daemons {
		d.waitServing(t)
	}
	return rs
}

func (rs *replicaSet) token(t *testing.T, role, principal string) string {
	return addToken(t, rs.tokens, role, principal)
}

func (rs *replicaSet) addrs() string {
	var a []string
	for _, d := range rs.daemons {
		a = append(a, d.grpc)
	}
	return strings.Join(a, ",")
}

// TestThreeReplicasOnePostgres: three vigild replicas started together on one empty
// PostgreSQL make one schema without error; 12 reviewers claiming across them claim each of
// 300 findings exactly once; a Watch on replica 1 sees every decision made on replica 3, in
// order and without gaps; kill -9 of a replica during a burst of decisions and analyses loses
// nothing acknowledged, the others go on serving, and the bridge streaming to it goes on with
// another.
func TestThreeReplicasOnePostgres(t *testing.T) {
	rs := startReplicas(t, 3)
	store, err := review.ConnectPostgres(context.Background(), rs.url)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i, d := range rs.daemons {
		if strings.Contains(d.logs(), "level=ERROR") {
			t.Errorf("replica %d logged an error starting beside the others:\n%s", i+1, d.logs())
		}
		// The probes' port answers health without TLS or a token, and serves nothing else.
		m := healthLine.FindStringSubmatch(d.logs())
		if m == nil {
			t.Fatalf("replica %d did not log its health listener", i+1)
		}
		conn := dialAs(t, m[1], "")
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("replica %d health on %s: %v %v", i+1, m[1], resp, err)
		}
		if _, err := vigilv1.NewModelsClient(conn).ListModels(context.Background(), &vigilv1.ListModelsRequest{}); status.Code(err) != codes.Unimplemented {
			t.Errorf("the health port served ListModels: %v, want Unimplemented", err)
		}
	}

	t.Run("claims and watch", func(t *testing.T) {
		seeded := seedInto(t, store, 300)
		watcher := vigilv1.NewReviewClient(dialAs(t, rs.daemons[0].grpc, rs.token(t, "reviewer", "dr.watch")))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		after, err := store.LastSequence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		watch, err := watcher.Watch(ctx, &vigilv1.WatchRequest{AfterSequence: after})
		if err != nil {
			t.Fatal(err)
		}

		type decision struct {
			id      string
			replica int
		}
		var mu sync.Mutex
		claimedBy := map[string]string{}
		decidedOn3 := map[string][]string{} // reviewer -> finding IDs decided on replica 3, in order
		var wg sync.WaitGroup
		for r := range 12 {
			replica := r % 3
			me := fmt.Sprintf("dr.%02d", r)
			rc := vigilv1.NewReviewClient(dialAs(t, rs.daemons[replica].grpc, rs.token(t, "reviewer", me)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					resp, err := rc.ClaimNext(ctx, &vigilv1.ClaimNextRequest{LeaseSeconds: 600})
					if err != nil {
						t.Errorf("%s on replica %d: claim: %v", me, replica+1, err)
						return
					}
					f := resp.GetFinding()
					if f == nil {
						return
					}
					mu.Lock()
					if prev, dup := claimedBy[f.Id]; dup {
						t.Errorf("%s claimed by %s and %s", f.Id, prev, me)
					}
					claimedBy[f.Id] = me
					mu.Unlock()
					if _, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT}); err != nil {
						t.Errorf("%s on replica %d: decide %s: %v", me, replica+1, f.Id, err)
						return
					}
					if replica == 2 {
						mu.Lock()
						decidedOn3[me] = append(decidedOn3[me], f.Id)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if len(claimedBy) != len(seeded) {
			t.Errorf("%d of %d findings claimed", len(claimedBy), len(seeded))
		}

		// Every claim and decision is one audit record: 600 of them after the watch began.
		var seqs []int64
		accepted := map[string]string{} // finding -> reviewer, as the watch saw it
		acceptOrder := map[string][]string{}
		for len(seqs) < 2*len(seeded) {
			ev, err := watch.Recv()
			if err != nil {
				t.Fatalf("watch after %d events: %v", len(seqs), err)
			}
			seqs = append(seqs, ev.Sequence)
			if ev.Action == "accept" {
				who := ev.Finding.GetDecision().GetReviewer()
				accepted[ev.Finding.Id] = who
				acceptOrder[who] = append(acceptOrder[who], ev.Finding.Id)
			}
		}
		for i, seq := range seqs {
			if seq != after+int64(i)+1 {
				t.Fatalf("watch event %d has sequence %d, want %d: a gap or a reorder", i, seq, after+int64(i)+1)
			}
		}
		n3 := 0
		for who, ids := range decidedOn3 {
			n3 += len(ids)
			if fmt.Sprint(acceptOrder[who]) != fmt.Sprint(ids) {
				t.Errorf("%s's decisions on replica 3 as the watch on replica 1 saw them: %v, as made: %v", who, acceptOrder[who], ids)
			}
		}
		if n3 < 20 {
			t.Errorf("only %d decisions were made on replica 3", n3)
		}
		t.Logf("300 findings claimed once each by 12 reviewers on 3 replicas; the watch on replica 1 saw all %d decisions made on replica 3 in order, sequences %d..%d without gaps",
			n3, seqs[0], seqs[len(seqs)-1])
	})

	t.Run("kill -9 of a replica", func(t *testing.T) {
		seeded := seedInto(t, store, 400)
		files := phantomFiles(t, 990000, 120)
		// The bridge streams to one of the replicas; that one is killed.
		bridgeToken := rs.token(t, "ward-bridge", "bridge-ward-7")
		_, vigil := binaries(t)
		bridge := exec.Command(vigil, "--server", rs.addrs(), "--token", bridgeToken, "bridge", "--json", "--realtime",
			"--camera", "ward-7", "--fps", "7", "--source", testenv.Shared(t, "video/walkers-vtest.avi"))
		stdout, _ := bridge.StdoutPipe()
		stderr, _ := bridge.StderrPipe()
		if err := bridge.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { bridge.Process.Kill(); bridge.Wait() }()
		var bmu sync.Mutex
		var bridgeLog strings.Builder
		streamingTo := make(chan string, 8)
		frames := 0
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				bmu.Lock()
				bridgeLog.WriteString(sc.Text() + "\n")
				bmu.Unlock()
				if _, addr, ok := strings.Cut(sc.Text(), "streaming camera ward-7 to "); ok {
					streamingTo <- addr
				}
			}
		}()
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var ev bridgeEvent
				if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type == "frame" {
					bmu.Lock()
					frames++
					bmu.Unlock()
				}
			}
		}()
		framesNow := func() int { bmu.Lock(); defer bmu.Unlock(); return frames }
		var first string
		select {
		case first = <-streamingTo:
		case <-time.After(30 * time.Second):
			t.Fatalf("the bridge never opened its stream:\n%s", bridgeLog.String())
		}
		victim := -1
		for i, d := range rs.daemons {
			if d.grpc == first {
				victim = i
			}
		}
		if victim < 0 {
			t.Fatalf("the bridge streams to %s, none of the replicas %s", first, rs.addrs())
		}

		// The burst: one PACS worker on each replica, and then, once analyses and the bridge's
		// frames are acknowledged, two reviewers on each.
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		var mu sync.Mutex
		decided := map[string]int64{} // finding -> the version acknowledged
		analysed := map[string][]string{}
		decidedOnVictim := 0
		reviewersGo := make(chan struct{})
		// The PACS workers start once the bridge's frames flow, so that the victim's share of
		// analyses is still under way when its reviewers start: on a busy machine a worker let
		// go at once finished its whole share while the bridge was still connecting.
		pacsGo := make(chan struct{})
		var analysesOn [3]int
		var wg sync.WaitGroup
		g := &globals{timeout: 60 * time.Second}
		for i, d := range rs.daemons {
			for w := range 2 {
				rc := vigilv1.NewReviewClient(dialAs(t, d.grpc, rs.token(t, "reviewer", fmt.Sprintf("dr.burst-%d-%d", i, w))))
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-reviewersGo
					for k := 2*i + w; k < len(seeded) && ctx.Err() == nil; k += 6 {
						resp, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[k].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
						if err != nil {
							if i == victim {
								return
							}
							continue
						}
						mu.Lock()
						decided[seeded[k].ID] = resp.Finding.Version
						if i == victim {
							decidedOnVictim++
						}
						mu.Unlock()
					}
				}()
			}
			pacs := vigilv1.NewImagingClient(dialAs(t, d.grpc, rs.token(t, "pacs-worker", fmt.Sprintf("pacs-burst-%d", i))))
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-pacsGo:
				case <-ctx.Done():
					return
				}
				for k := i; k < len(files) && ctx.Err() == nil; k += 3 {
					resp, err := analyzeFile(g, pacs, files[k], "us-lesion-demo", false)
					if err != nil {
						if i == victim {
							return
						}
						continue
					}
					mu.Lock()
					ids := []string{}
					for _, f := range resp.Findings {
						ids = append(ids, f.Id)
					}
					analysed[resp.Source.SopInstanceUid] = ids
					analysesOn[i]++
					mu.Unlock()
				}
			}()
		}
		deadline := time.Now().Add(2 * time.Minute)
		for started, pacsStarted := false, false; ; {
			if !pacsStarted && framesNow() >= 10 {
				close(pacsGo)
				pacsStarted = true
			}
			mu.Lock()
			ready := len(analysed) >= 3 && framesNow() >= 10
			counts := fmt.Sprintf("%d decisions on the victim, %d analyses", decidedOnVictim, len(analysed))
			kill := decidedOnVictim >= 20
			mu.Unlock()
			if ready && !started {
				close(reviewersGo)
				started = true
			}
			if kill {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the burst never got going: %s, %d frames", counts, framesNow())
			}
			time.Sleep(time.Millisecond)
		}
		framesBefore := framesNow()
		killed := time.Now()
		rs.daemons[victim].cmd.Process.Kill()
		<-rs.daemons[victim].exited
		mu.Lock()
		t.Logf("killed replica %d (%s) with SIGKILL after %d decisions and %d analyses on it, %d bridge frames", victim+1, first, decidedOnVictim, analysesOn[victim], framesBefore)
		decidedAtKill := len(decided)
		// The victim was mid-burst: it had decisions and analyses still to make.
		if decidedOnVictim >= len(seeded)/3 || analysesOn[victim] >= len(files)/3 {
			t.Fatalf("the victim's share of the burst was done before the kill; the test proves nothing")
		}
		mu.Unlock()

		// The bridge goes on with another replica within seconds.
		select {
		case next := <-streamingTo:
			if next == first {
				t.Errorf("the bridge reopened its stream on the killed replica %s", next)
			}
			for framesNow() < framesBefore+10 && time.Since(killed) < 30*time.Second {
				time.Sleep(50 * time.Millisecond)
			}
			if framesNow() < framesBefore+10 {
				t.Errorf("the bridge reconnected to %s but no frames came back in 30 s", next)
			}
			t.Logf("the bridge streams to %s %.1f s after the kill, frames processed again", next, time.Since(killed).Seconds())
		case <-time.After(30 * time.Second):
			t.Fatalf("the bridge did not move to another replica within 30 s:\n%s", bridgeLog.String())
		}

		// The others go on serving: the burst's decisions on them go on being acknowledged.
		for {
			mu.Lock()
			after := len(decided) - decidedAtKill
			mu.Unlock()
			if after >= 10 {
				break
			}
			if time.Since(killed) > 30*time.Second {
				t.Fatalf("only %d decisions acknowledged by the survivors in the 30 s after the kill", after)
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		// Nothing acknowledged is lost: every decision and analysis, read through a survivor.
		survivor := rs.daemons[(victim+1)%3]
		rc := vigilv1.NewReviewClient(dialAs(t, survivor.grpc, rs.token(t, "reviewer", "dr.after")))
		for id, version := range decided {
			got, err := rc.Get(context.Background(), &vigilv1.GetRequest{Id: id})
			if err != nil || got.Finding.State != vigilv1.FindingState_FINDING_STATE_ACCEPTED || got.Finding.Version != version {
				t.Errorf("decision on %s (version %d acknowledged): %v %v", id, version, got.GetFinding().GetState(), err)
			}
		}
		for sop, ids := range analysed {
			for _, id := range ids {
				got, err := rc.Get(context.Background(), &vigilv1.GetRequest{Id: id})
				if err != nil || got.Finding.GetDicom().GetSopInstanceUid() != sop {
					t.Errorf("finding %s of %s: %v", id, sop, err)
				}
			}
		}
		// After the kill, every survivor still takes a decision.
		for i, d := range rs.daemons {
			if i == victim {
				continue
			}
			c := vigilv1.NewReviewClient(dialAs(t, d.grpc, rs.token(t, "reviewer", fmt.Sprintf("dr.late-%d", i))))
			resp, err := c.ClaimNext(context.Background(), &vigilv1.ClaimNextRequest{})
			if err != nil || resp.GetFinding() == nil {
				t.Errorf("replica %d after the kill: claim %v %v", i+1, resp, err)
			}
		}
		if rep, err := store.VerifyChains(context.Background()); err != nil {
			t.Errorf("the audit chain after the kill: %v", err)
		} else {
			t.Logf("%d decisions and %d analyses acknowledged, all there; the audit chain holds (%d records)", len(decided), len(analysed), rep.AuditRecords)
		}
		if out, errOut, code := cli(t, "audit", "verify", "--store", rs.url); code != 0 || !strings.Contains(out, "holds") {
			t.Errorf("vigil audit verify --store: exit %d: %s %s", code, out, errOut)
		}
		if out, errOut, code := cli(t, "migrate", "--store", rs.url); code != 0 || strings.TrimSpace(out) != fmt.Sprintf("schema at version %d", review.SchemaVersion) {
			t.Errorf("vigil migrate on a current schema: exit %d: %s %s", code, out, errOut)
		}
		if _, errOut, code := cli(t, "backup", "--store", rs.url, "--out", filepath.Join(t.TempDir(), "copy.db")); code == 0 || !strings.Contains(errOut, "pg_dump") {
			t.Errorf("vigil backup of a PostgreSQL store: exit %d: %s; want a refusal naming pg_dump", code, errOut)
		}
	})
}
