package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/review"
)

// TestDataAtRestIsPrivate: in a data folder that already exists and is open to others, the
// store, its WAL and SHM files, the tokens, a backup, an SR export and an overlay are readable
// by their owner alone, and a store left readable by an earlier version is made private.
func TestDataAtRestIsPrivate(t *testing.T) {
	vigild, _ := binaries(t)
	private := func(paths ...string) {
		t.Helper()
		for _, p := range paths {
			st, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if st.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is %v: readable by others", filepath.Base(p), st.Mode().Perm())
			}
		}
	}
	// A folder the operator made, open to others, with a store this test wrote 0644.
	dataDir := t.TempDir()
	os.Chmod(dataDir, 0o755)
	seeded := seedStore(t, dataDir, 2)
	db := filepath.Join(dataDir, review.SQLiteFile)
	os.Chmod(db, 0o644)
	d := startDaemonIn(t, dataDir, vigild)
	reviewer := addToken(t, dataDir, "reviewer", "dr.private")
	pacs := addToken(t, dataDir, "pacs-worker", "pacs-1")
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "accept", seeded[0].ID, "--version", "1"); code != 0 {
		t.Fatalf("accept: %s", errOut)
	}
	if !strings.Contains(d.logs(), "made private") {
		t.Errorf("vigild does not say it made the open store private:\n%s", d.logs())
	}
	private(dataDir, db, db+"-wal", db+"-shm", filepath.Join(dataDir, "tokens.json"))

	// A fresh folder, open to others: what vigild creates is private from the start.
	fresh := t.TempDir()
	os.Chmod(fresh, 0o755)
	startDaemonIn(t, fresh, vigild)
	freshDB := filepath.Join(fresh, review.SQLiteFile)
	private(freshDB, freshDB+"-wal", freshDB+"-shm")

	out := t.TempDir()
	sr, overlay := filepath.Join(out, "sr.dcm"), filepath.Join(out, "overlay.png")
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", pacs, "review", "export", "--study", seedStudy, "--out", sr); code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "show", seeded[1].ID, "--overlay", overlay); code != 0 {
		t.Fatalf("show --overlay: %s", errOut)
	}
	backup := filepath.Join(out, "backup.db")
	if _, errOut, code := cli(t, "backup", "--data-dir", dataDir, "--out", backup); code != 0 {
		t.Fatalf("backup: %s", errOut)
	}
	private(sr, overlay, backup, backup+tokensSuffix)
}

// TestRestoreRestoresAccess: a backup carries the tokens and the revocations, so a server
// restored from it lets the same callers in and keeps the revoked one out.
func TestRestoreRestoresAccess(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seedStore(t, dataDir, 1)
	reviewer := addToken(t, dataDir, "reviewer", "dr.kept")
	gone := addToken(t, dataDir, "reviewer", "dr.gone")
	if _, errOut, code := cli(t, "token", "revoke", "--data-dir", dataDir, "--principal", "dr.gone"); code != 0 {
		t.Fatalf("token revoke: %s", errOut)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out, errOut, code := cli(t, "backup", "--data-dir", dataDir, "--out", backup); code != 0 || !strings.Contains(out, "tokens and revocations written") {
		t.Fatalf("backup: exit %d: %s %s", code, out, errOut)
	}
	restored := filepath.Join(t.TempDir(), "data")
	if out, errOut, code := cli(t, "restore", "--from", backup, "--data-dir", restored); code != 0 || !strings.Contains(out, "tokens and revocations restored") {
		t.Fatalf("restore: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := cli(t, "restore", "--from", backup, "--data-dir", restored); code == 0 || !strings.Contains(errOut, "no "+review.SQLiteFile) {
		t.Errorf("a second restore into the same folder: exit %d: %s; want a refusal", code, errOut)
	}
	r := startDaemonIn(t, restored, vigild)
	if out, errOut, code := cli(t, "--server", r.grpc, "--token", reviewer, "review", "list", "--json"); code != 0 || !strings.Contains(out, seedStudy) {
		t.Errorf("the kept reviewer on the restored server: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := cli(t, "--server", r.grpc, "--token", gone, "review", "list"); code == 0 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("the revoked reviewer on the restored server: exit %d: %s; want Unauthenticated", code, errOut)
	}
}

// TestOldRefusalsArePruned: vigild deletes refused calls older than --refusal-retention
// when it starts (and hourly), the newest kept; `vigil audit verify` then verifies the rest
// from the retention's checkpoint.
func TestOldRefusalsArePruned(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	s, err := review.OpenSQLite(filepath.Join(dataDir, review.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-400 * 24 * time.Hour)
	for i, at := range []time.Time{old, old.Add(time.Minute), old.Add(2 * time.Minute), time.Now().Add(-time.Hour)} {
		if err := s.RecordRefusal(context.Background(), review.Refusal{Time: at, Principal: "pacs-1", Role: "pacs-worker",
			Method: "/vigil.v1.Review/List", Code: "PermissionDenied", Reason: fmt.Sprintf("role %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	d := startDaemonIn(t, dataDir, vigild, "--refusal-retention", "720h")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.logs(), "refusals pruned") {
		if time.Now().After(deadline) {
			t.Fatalf("vigild did not prune the refusals older than 30 days:\n%s", d.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(d.logs(), "records=3") {
		t.Errorf("vigild's log does not say 3 were pruned:\n%s", d.logs())
	}
	out, errOut, code := cli(t, "audit", "verify", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "1 refusals") || !strings.Contains(out, "after record 3") {
		t.Errorf("audit verify: %q %q; want 1 refusal, verified from the checkpoint after record 3", out, errOut)
	}
}
