// Command capacity measures the review store behind real vigild replicas: how many claims and
// decisions a second a crowd of reviewers gets through, on SQLite (one replica) and on a real
// PostgreSQL (one replica, then three). It prints the table in docs/SCALING.md.
//
//	make capacity        (builds bin/vigild and bin/vigil first)
//	go run ./scripts/capacity --findings 3000 --reviewers 12
//
// It starts its own PostgreSQL (Debian's postgresql-15, as internal/pgtest does for the tests)
// and its own replicas on loopback ports, in temporary folders, and removes them at the end.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigil-health/vigil/internal/pgtest"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/review"
)

var servingLine = regexp.MustCompile(`msg="vigild serving" grpc=(\S+)`)

func main() {
	bin := flag.String("bin", "bin", "folder with vigild and vigil")
	findings := flag.Int("findings", 3000, "findings seeded, then claimed and decided, per setup")
	reviewers := flag.Int("reviewers", 12, "reviewers at once, spread over the replicas")
	flag.Parse()
	if err := run(*bin, *findings, *reviewers); err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
}

type setup struct {
	name     string
	postgres bool
	replicas int
}

type result struct {
	setup
	claims, decisions      float64 // per second
	claimP50, decisionP50  time.Duration
	claimP99, decisionP99  time.Duration
	claimedOnce, decidedOK bool
}

func run(bin string, n, reviewers int) error {
	pg, err := pgtest.Start()
	if err != nil {
		return err
	}
	defer pg.Stop()
	var results []result
	for _, s := range []setup{{"SQLite", false, 1}, {"PostgreSQL", true, 1}, {"PostgreSQL", true, 3}} {
		r, err := measure(bin, pg, s, n, reviewers)
		if err != nil {
			return fmt.Errorf("%s, %d replica(s): %w", s.name, s.replicas, err)
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%s x%d: %.0f claims/s, %.0f decisions/s\n", s.name, s.replicas, r.claims, r.decisions)
	}
	fmt.Printf("%d findings, %d reviewers at once, each claim and each decision one gRPC call committed to the store\n\n", n, reviewers)
	fmt.Println("| store | replicas | claims/s | claim p50 / p99 ms | decisions/s | decision p50 / p99 ms | each claimed once |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %d | %.0f | %.1f / %.1f | %.0f | %.1f / %.1f | %v |\n", r.name, r.replicas, r.claims,
			ms(r.claimP50), ms(r.claimP99), r.decisions, ms(r.decisionP50), ms(r.decisionP99), r.claimedOnce && r.decidedOK)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func measure(bin string, pg *pgtest.Server, s setup, n, reviewers int) (result, error) {
	res := result{setup: s}
	tmp, err := os.MkdirTemp("", "vigil-capacity-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	ctx := context.Background()

	// Seed the store, then start the replicas on it.
	var store review.Store
	args := []string{}
	if s.postgres {
		url, err := pg.NewDatabase("capacity")
		if err != nil {
			return res, err
		}
		if store, err = review.OpenPostgres(ctx, url); err != nil {
			return res, err
		}
		args = append(args, "--store", url)
	} else {
		os.MkdirAll(filepath.Join(tmp, "replica-0"), 0o700)
		if store, err = review.OpenSQLite(filepath.Join(tmp, "replica-0", review.SQLiteFile)); err != nil {
			return res, err
		}
	}
	if err := seed(ctx, store, n); err != nil {
		store.Close()
		return res, err
	}
	store.Close()

	tokensDir := filepath.Join(tmp, "tokens")
	tokens := make([]string, reviewers)
	for i := range tokens {
		out, err := exec.Command(filepath.Join(bin, "vigil"), "token", "add", "--data-dir", tokensDir,
			"--role", "reviewer", "--principal", fmt.Sprintf("dr.%02d", i)).Output()
		if err != nil {
			return res, fmt.Errorf("vigil token add: %w", err)
		}
		tokens[i] = strings.TrimSpace(string(out))
	}
	var addrs []string
	for i := range s.replicas {
		addr, stop, err := startReplica(bin, filepath.Join(tmp, fmt.Sprintf("replica-%d", i)), filepath.Join(tokensDir, "tokens.json"), args)
		if err != nil {
			return res, err
		}
		defer stop()
		addrs = append(addrs, addr)
	}

	clients := make([]vigilv1.ReviewClient, reviewers)
	for i := range clients {
		conn, err := grpc.NewClient(addrs[i%len(addrs)], grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearer(tokens[i])))
		if err != nil {
			return res, err
		}
		defer conn.Close()
		clients[i] = vigilv1.NewReviewClient(conn)
	}

	// Claims: every reviewer claims until the queue is empty.
	claimed := make([][]*vigilv1.Finding, reviewers)
	var lat [][]time.Duration
	elapsed, err := together(reviewers, &lat, func(i int, observe func(time.Duration)) error {
		for {
			t0 := time.Now()
			resp, err := clients[i].ClaimNext(ctx, &vigilv1.ClaimNextRequest{LeaseSeconds: 3600})
			if err != nil {
				return err
			}
			if resp.GetFinding() == nil {
				return nil
			}
			observe(time.Since(t0))
			claimed[i] = append(claimed[i], resp.Finding)
		}
	})
	if err != nil {
		return res, fmt.Errorf("claims: %w", err)
	}
	res.claims = float64(n) / elapsed.Seconds()
	res.claimP50, res.claimP99 = percentiles(lat)
	seen := map[string]bool{}
	total := 0
	for _, c := range claimed {
		for _, f := range c {
			seen[f.Id] = true
			total++
		}
	}
	res.claimedOnce = total == n && len(seen) == n

	// Decisions: every reviewer accepts what it claimed.
	lat = nil
	elapsed, err = together(reviewers, &lat, func(i int, observe func(time.Duration)) error {
		for _, f := range claimed[i] {
			t0 := time.Now()
			if _, err := clients[i].Decide(ctx, &vigilv1.DecideRequest{Id: f.Id, Version: f.Version, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT}); err != nil {
				return err
			}
			observe(time.Since(t0))
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("decisions: %w", err)
	}
	res.decisions = float64(total) / elapsed.Seconds()
	res.decisionP50, res.decisionP99 = percentiles(lat)
	res.decidedOK = true
	return res, nil
}

// together runs fn on k goroutines at once and returns the wall time and each one's latencies.
func together(k int, lat *[][]time.Duration, fn func(i int, observe func(time.Duration)) error) (time.Duration, error) {
	*lat = make([][]time.Duration, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i, func(d time.Duration) { (*lat)[i] = append((*lat)[i], d) })
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func percentiles(lat [][]time.Duration) (p50, p99 time.Duration) {
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.Sort(all)
	return all[len(all)/2], all[len(all)*99/100]
}

func seed(ctx context.Context, s review.Store, n int) error {
	for done := 0; done < n; done += 500 {
		batch := make([]review.Finding, min(500, n-done))
		for i := range batch {
			k := done + i
			batch[i] = review.Finding{
				Pipeline: review.PipelineTriage, Label: "hypoechoic lesion", Score: 0.8, Priority: k % 4,
				Box:   &review.Box{X: 100, Y: 80, Width: 40, Height: 30},
				Model: review.ModelRef{Name: "us-lesion-demo", Version: "1", SHA256: "cafe"},
				Source: review.Source{StudyInstanceUID: "1.2.826.0.1.3680043.9.7.1", SeriesInstanceUID: "1.2.826.0.1.3680043.9.7.1.1",
					SOPInstanceUID: fmt.Sprintf("1.2.826.0.1.3680043.9.7.1.1.%d", k), SOPClassUID: "1.2.840.10008.5.1.4.1.1.6.1",
					Modality: "US", Frames: []int{1}, NumberOfFrames: 1},
			}
		}
		if _, err := s.Add(ctx, "pacs-1", batch); err != nil {
			return err
		}
	}
	return nil
}

// startReplica starts vigild and waits for its gRPC address.
func startReplica(bin, dataDir, tokensFile string, args []string) (string, func(), error) {
	os.MkdirAll(dataDir, 0o700)
	cmd := exec.Command(filepath.Join(bin, "vigild"), append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0",
		"--http", "", "--tokens-file", tokensFile}, args...)...)
	cmd.Env = os.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	addr := make(chan string, 1)
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
			logMu.Lock()
			if log.Len() < 1<<16 {
				log.WriteString(sc.Text() + "\n")
			}
			logMu.Unlock()
		}
	}()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	select {
	case a := <-addr:
		return a, stop, nil
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		logMu.Lock()
		defer logMu.Unlock()
		return "", nil, fmt.Errorf("vigild did not serve within 2 minutes:\n%s", log.String())
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return false }
