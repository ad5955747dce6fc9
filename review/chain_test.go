package review

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fillChains gives a store six audit records (three creates, a claim and two decisions) and
// two refusals.
func fillChains(t *testing.T, s Store) {
	t.Helper()
	fs := add(t, s, finding("1.2.3", 3), finding("1.2.3", 2), finding("1.2.4", 1))
	if _, ok, err := s.ClaimNext(ctx, "dr.a", Filter{}, time.Minute); err != nil || !ok {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, "dr.a", fs[0].ID, 2, Decision{Outcome: OutcomeAccept, ReasonCode: "confirmed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, "dr.b", fs[1].ID, 1, Decision{Outcome: OutcomeReject, ReasonCode: "artefact"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"/vigil.v1.Review/List", "/vigil.v1.Imaging/AnalyzeInstance"} {
		if err := s.RecordRefusal(ctx, Refusal{Time: time.Now(), Principal: "pacs-1", Role: "pacs-worker", Method: m, Code: "PermissionDenied", Reason: "role"}); err != nil {
			t.Fatal(err)
		}
	}
}

// tamper changes the records as an intruder with the database's owner rights would: the
// append-only guards lifted first.
func tamper(t *testing.T, s testStore, stmts ...string) {
	t.Helper()
	lift := []string{`DROP TRIGGER audit_no_update`, `DROP TRIGGER audit_no_delete`,
		`DROP TRIGGER refusals_no_update`, `DROP TRIGGER refusals_prune_only`}
	if _, ok := s.(*Postgres); ok {
		lift = []string{`ALTER TABLE audit DISABLE TRIGGER audit_append_only`, `ALTER TABLE refusals DISABLE TRIGGER refusals_append_only`,
			`ALTER TABLE refusals DISABLE TRIGGER refusals_prune_only`}
	}
	for _, q := range append(lift, stmts...) {
		if err := s.raw(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestAuditChainHoldsAndNamesTheFirstBadRecord(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		fillChains(t, s)
		rep, err := s.VerifyChains(ctx)
		if err != nil || rep.AuditRecords != 6 || rep.Refusals != 2 || len(rep.AuditHead) != 64 {
			t.Fatalf("an untouched store: %+v, %v; want 6 audit records and 2 refusals, chained", rep, err)
		}
	})
	tests := []struct {
		name  string
		stmts []string
		table string
		seq   int64
	}{
		{"an actor edited", []string{`UPDATE audit SET actor = 'dr.x' WHERE seq = 5`}, "audit", 5},
		{"a decision's contents edited", []string{`UPDATE audit SET after = replace(after, 'accepted', 'rejected') WHERE seq = 5`}, "audit", 5},
		{"a record deleted", []string{`DELETE FROM audit WHERE seq = 3`}, "audit", 3},
		{"a record deleted and the rest renumbered", []string{`DELETE FROM audit WHERE seq = 3`, `UPDATE audit SET seq = seq - 1 WHERE seq > 3`}, "audit", 3},
		{"a hash recomputed by hand", []string{`UPDATE audit SET hash = '00' WHERE seq = 2`}, "audit", 2},
		{"a refusal edited", []string{`UPDATE refusals SET principal = 'someone' WHERE seq = 1`}, "refusals", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s testStore, reopen func() testStore) {
				fillChains(t, s)
				tamper(t, s, tt.stmts...)
				_, err := reopen().VerifyChains(ctx)
				var ce *ChainError
				if !errors.As(err, &ce) || ce.Table != tt.table || ce.Seq != tt.seq || !errors.Is(err, ErrChainBroken) {
					t.Errorf("got %v, want the %s chain broken at %d", err, tt.table, tt.seq)
				}
			})
		})
	}
}

// TestOldStoreIsChainedOnOpen: a store made before the chain (no hash column) gets its
// records chained when opened, and stays append-only.
func TestOldStoreIsChainedOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, finding_id TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, at INTEGER NOT NULL, before TEXT, after TEXT NOT NULL)`,
		`CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END`,
		`INSERT INTO audit (finding_id, actor, action, at, before, after) VALUES ('f-1', 'pacs-1', 'create', 1, NULL, '{"id":"f-1"}')`,
		`INSERT INTO audit (finding_id, actor, action, at, before, after) VALUES ('f-1', 'dr.a', 'claim', 2, '{"id":"f-1"}', '{"id":"f-1"}')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rep, err := s.VerifyChains(ctx); err != nil || rep.AuditRecords != 2 {
		t.Fatalf("after the migration: %+v, %v; want 2 chained records", rep, err)
	}
	if err := s.raw(`UPDATE audit SET actor = 'x' WHERE seq = 1`); err == nil {
		t.Error("the migrated audit accepts UPDATE, want append-only")
	}
}

// TestBackupWhileWriting copies the store while findings are added and decided: the copy
// is a store that opens, its chain holds, and it holds a prefix of what was written.
func TestBackupWhileWriting(t *testing.T) {
	s, _ := openStore(t)
	add(t, s, finding("1.2.0", 1))
	stop, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			if i == 20 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Add(ctx, "pacs-1", []Finding{finding(fmt.Sprintf("1.2.%d", i), 1)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	<-started
	out := filepath.Join(t.TempDir(), "backup.db")
	err := s.Backup(ctx, out)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(ctx, out); err == nil {
		t.Error("a backup over an existing file succeeded, want a refusal")
	}
	b, err := OpenSQLite(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rep, err := b.VerifyChains(ctx)
	if err != nil || rep.AuditRecords == 0 {
		t.Fatalf("the backup's chain: %+v, %v", rep, err)
	}
	live, _ := s.VerifyChains(ctx)
	if rep.AuditRecords > live.AuditRecords {
		t.Errorf("the backup has %d records, the live store %d", rep.AuditRecords, live.AuditRecords)
	}
	counts, err := b.Counts(ctx, Filter{})
	if err != nil || counts.ByState[StatePending] != rep.AuditRecords || rep.AuditRecords < 21 {
		t.Errorf("the backup holds %d findings and %d create records (%v): want one snapshot, after 20 adds", counts.ByState[StatePending], rep.AuditRecords, err)
	}
}

// TestRefusalsArePrunedFromACheckpoint: the retention deletes the oldest refusals (never
// the newest), leaves a checkpoint the rest verifies from, and nothing else can delete:
// not a refusal after the checkpoint, not a checkpoint. A refusal deleted after pruning
// still breaks the chain.
func TestRefusalsArePrunedFromACheckpoint(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, reopen func() testStore) {
		base := time.Now().Add(-48 * time.Hour)
		record := func(at time.Time) {
			t.Helper()
			if err := s.RecordRefusal(ctx, Refusal{Time: at, Principal: "pacs-1", Role: "pacs-worker", Method: "/vigil.v1.Review/List", Code: "PermissionDenied", Reason: "role"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			record(base.Add(time.Duration(i) * time.Minute))
		}
		n, err := s.PruneRefusals(ctx, base.Add(5*time.Minute))
		if err != nil || n != 5 {
			t.Fatalf("pruning before the sixth: %d, %v; want the first 5 deleted", n, err)
		}
		rep, err := s.VerifyChains(ctx)
		if err != nil || rep.Refusals != 5 || rep.RefusalsPruned != 5 {
			t.Fatalf("after pruning: %+v, %v; want 5 refusals verified from the checkpoint after record 5", rep, err)
		}
		attempts := []string{`DELETE FROM refusals WHERE seq = 7`, `DELETE FROM refusals_pruned`, `UPDATE refusals_pruned SET seq = 9`}
		if _, ok := s.(*Postgres); ok {
			attempts = append(attempts, `TRUNCATE refusals`, `TRUNCATE refusals_pruned`)
		}
		for _, q := range attempts {
			if err := s.raw(q); err == nil {
				t.Errorf("%s succeeded; only the retention may delete, and only up to its checkpoint", q)
			}
		}
		if n, err := s.PruneRefusals(ctx, time.Now()); err != nil || n != 4 {
			t.Fatalf("pruning everything old: %d, %v; want 4 (the newest record stays, to chain on)", n, err)
		}
		record(time.Now())
		s = reopen()
		if rep, err := s.VerifyChains(ctx); err != nil || rep.Refusals != 2 || rep.RefusalsPruned != 9 {
			t.Fatalf("a refusal after pruning: %+v, %v; want records 10 and 11 verified from the checkpoint after 9", rep, err)
		}
		tamper(t, s, `DELETE FROM refusals WHERE seq = 10`)
		_, err = reopen().VerifyChains(ctx)
		var ce *ChainError
		if !errors.As(err, &ce) || ce.Table != "refusals" || ce.Seq != 10 {
			t.Errorf("record 10 deleted by hand: %v, want the refusals chain broken at 10", err)
		}
	})
}
