package review

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-health/vigil/internal/pgtest"
)

// TestReplicasStartingTogetherMigrateOnce opens eight stores on one empty database at once,
// as replicas starting together would: each opens without error, and each schema version is
// applied once.
func TestReplicasStartingTogetherMigrateOnce(t *testing.T) {
	url := postgresURL(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenPostgres(ctx, url)
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var versions, max int
	if err := c.QueryRow(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&versions, &max); err != nil {
		t.Fatal(err)
	}
	if versions != SchemaVersion || max != SchemaVersion {
		t.Errorf("schema_migrations has %d rows up to %d, want each of %d versions once", versions, max, SchemaVersion)
	}
	// A database newer than this build is refused, not written.
	if _, err := c.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(ctx, url); err == nil {
		t.Error("a store opened a database with a newer schema, want an error naming the versions")
	}
}

// twoReplicas are two stores on one new database, as two vigild replicas would have.
func twoReplicas(t *testing.T) [2]*Postgres {
	url := postgresURL(t)
	var replicas [2]*Postgres
	for i := range replicas {
		s, err := OpenPostgres(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		replicas[i] = s
	}
	return replicas
}

// TestTwoReplicasShareOneQueue: two stores on one database (two replicas) claim from one queue,
// each finding exactly once, and a change committed through one wakes the other's watchers.
func TestTwoReplicasShareOneQueue(t *testing.T) {
	replicas := twoReplicas(t)
	batch := make([]Finding, 60)
	for i := range batch {
		batch[i] = finding("s", i%5)
	}
	add(t, replicas[0], batch...)

	// Give the second replica's listener a moment to be connected; then one change through
	// the first must wake it.
	deadline := time.Now().Add(10 * time.Second)
	woke := false
	for !woke && time.Now().Before(deadline) {
		changed := replicas[1].Changed()
		if err := replicas[0].RecordRefusal(ctx, Refusal{Time: time.Now(), Principal: "p", Role: "r", Method: "m", Code: "c", Reason: "wake"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
			woke = true
		case <-time.After(time.Second):
		}
	}
	if !woke {
		t.Fatal("a change committed on one replica never woke the other's watchers")
	}

	claimedBy := claimConcurrently(t, []Store{replicas[0], replicas[1]}, 8, true)
	if len(claimedBy) != len(batch) {
		t.Errorf("claimed %d findings, want %d", len(claimedBy), len(batch))
	}
	// Both replicas see the same audit: 60 creates, 60 claims, 60 decisions, numbered 1..180.
	for i, s := range replicas {
		var seqs []int64
		for after := int64(0); ; {
			recs, err := s.Changes(ctx, after, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				seqs = append(seqs, r.Sequence)
			}
			after = recs[len(recs)-1].Sequence
		}
		for j, seq := range seqs {
			if seq != int64(j+1) {
				t.Fatalf("replica %d: record %d has sequence %d, want %d (no gaps)", i, j, seq, j+1)
			}
		}
		if len(seqs) != 3*len(batch) {
			t.Errorf("replica %d sees %d audit records, want %d", i, len(seqs), 3*len(batch))
		}
	}
	if rep, err := replicas[1].VerifyChains(ctx); err != nil || rep.AuditRecords != int64(3*len(batch)) {
		t.Errorf("chains: %+v, %v", rep, err)
	}
}

// TestDatabaseGoneIsUnreachable: when the PostgreSQL server goes away, reads and writes fail
// with ErrStoreUnreachable (the server maps it to Unavailable), and when it is back the same
// store works again without being reopened.
func TestDatabaseGoneIsUnreachable(t *testing.T) {
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	url, err := pg.NewDatabase("gone")
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := add(t, s, finding("1.2.3", 1))[0]
	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, f.ID); !errors.Is(err, ErrStoreUnreachable) {
		t.Errorf("a read with the database gone: %v, want ErrStoreUnreachable", err)
	}
	if _, err := s.Decide(ctx, "dr.a", f.ID, 1, Decision{Outcome: OutcomeAccept}); !errors.Is(err, ErrStoreUnreachable) {
		t.Errorf("a decision with the database gone: %v, want ErrStoreUnreachable", err)
	}
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	other, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got, err := other.Decide(ctx, "dr.a", f.ID, 1, Decision{Outcome: OutcomeAccept})
	if err != nil || got.State != StateAccepted {
		t.Fatalf("after the database is back: %+v, %v", got, err)
	}
	// The first store's listener reconnected: it wakes its watchers (at once on reconnecting,
	// and at the other store's commit).
	select {
	case <-changed:
	case <-time.After(15 * time.Second):
		t.Error("after the database came back, the store's watchers were never woken")
	}
	if again, err := s.Get(ctx, f.ID); err != nil || again.State != StateAccepted {
		t.Errorf("the first store after the database is back: %+v, %v", again.State, err)
	}
}

// TestSameInstanceOnTwoReplicas: two replicas given the same instance at once store one
// analysis and one set of findings; the other is told it existed and gets the same IDs.
func TestSameInstanceOnTwoReplicas(t *testing.T) {
	replicas := twoReplicas(t)
	for round := range 20 {
		uid := fmt.Sprintf("1.2.826.0.1.3680043.9.7.%d", round+1)
		var got [2]Analysis
		var existed [2]bool
		var errs [2]error
		var wg sync.WaitGroup
		for i, s := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := finding(uid, 1)
				got[i], existed[i], errs[i] = s.AddAnalysis(ctx, "pacs-1", Analysis{SOPInstanceUID: uid, Modality: "US"}, []Finding{f, f})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs[0], errs[1]); err != nil {
			t.Fatal(err)
		}
		if existed[0] == existed[1] || fmt.Sprint(got[0].FindingIDs) != fmt.Sprint(got[1].FindingIDs) {
			t.Fatalf("round %d: existed %v, finding IDs %v and %v; want one stored and the other told so, same IDs", round, existed, got[0].FindingIDs, got[1].FindingIDs)
		}
		list, _, err := replicas[0].List(ctx, Query{Filter: Filter{StudyUID: uid}})
		if err != nil || len(list) != 2 {
			t.Fatalf("round %d: %d findings stored for the instance, want 2 (%v)", round, len(list), err)
		}
	}
}
