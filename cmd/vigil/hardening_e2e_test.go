package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/internal/testcerts"
	"github.com/vigil-health/vigil/review"
)

// TestReviewerPageOverTLS serves both listeners with one certificate: the page signs in and
// decides over HTTPS in Chromium (which trusts that one key and no other), and the CLI reaches
// gRPC over TLS, verifying the server against the CA.
func TestReviewerPageOverTLS(t *testing.T) {
	vigild, _ := binaries(t)
	ca := testcerts.NewCA(t, "Vigil test CA")
	pair := ca.Server()
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 2)
	d := startDaemonIn(t, dataDir, vigild, "--tls-cert", pair.CertFile, "--tls-key", pair.KeyFile)
	token := addToken(t, dataDir, "reviewer", "dr.tls")
	if !strings.Contains(d.logs(), "http_tls=true") {
		t.Fatalf("vigild does not say its HTTP listener serves TLS:\n%s", d.logs())
	}

	wd := startBrowser(t, "--ignore-certificate-errors-spki-list="+pair.SPKI)
	wd.open("https://" + d.http + "/")
	wd.typeInto("#token", token)
	wd.click("#signin-button")
	wd.waitFor("two findings over TLS", rowsJS+`.length === 2 && !document.querySelector('#finding').hidden`)
	var first string
	wd.eval(`return `+rowsJS+`[0].dataset.id;`, &first)
	wd.waitFor("the first finding open", `document.querySelector('#finding').dataset.id === '`+first+`'`)
	wd.press("a")
	wd.waitFor("the accepted finding leaving the worklist", rowsJS+`.length === 1`)
	var scheme string
	wd.eval(`return location.protocol;`, &scheme)
	if scheme != "https:" {
		t.Errorf("the page was served over %s", scheme)
	}

	out, errOut, code := cli(t, "--server", d.grpc, "--ca", ca.CertFile, "--token", token, "review", "list", "--state", "accepted", "--json")
	if code != 0 || !strings.Contains(out, first) {
		t.Fatalf("the CLI over TLS: exit %d: %s %s", code, out, errOut)
	}
	if _, _, code := cli(t, "--server", d.grpc, "--token", token, "--timeout", "3s", "review", "list"); code == 0 {
		t.Error("the CLI without TLS reached a TLS-only server")
	}
	s, err := review.OpenSQLiteReadOnly(filepath.Join(dataDir, review.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, err := s.Get(t.Context(), first); err != nil || f.State != review.StateAccepted || f.Decision.Reviewer != "dr.tls" {
		t.Errorf("the decision made over TLS: %+v, %v", f.Decision, err)
	}
	_ = seeded
}

// TestClientCertificatesFromTheCLI: with --client-ca and --client-auth require, the CLI's
// --cert is its identity, and without one it cannot connect.
func TestClientCertificatesFromTheCLI(t *testing.T) {
	vigild, _ := binaries(t)
	ca := testcerts.NewCA(t, "Vigil test CA")
	pair := ca.Server()
	dataDir := t.TempDir()
	seedStore(t, dataDir, 1)
	d := startDaemonIn(t, dataDir, vigild, "--tls-cert", pair.CertFile, "--tls-key", pair.KeyFile, "--client-ca", ca.CertFile, "--client-auth", "require")
	reviewer := ca.Client("dr.cert", "reviewer")
	if out, errOut, code := cli(t, "--server", d.grpc, "--ca", ca.CertFile, "--cert", reviewer.CertFile, "--key", reviewer.KeyFile, "review", "list", "--json"); code != 0 || !strings.Contains(out, "f-") {
		t.Fatalf("a reviewer's certificate: exit %d: %s %s", code, out, errOut)
	}
	// Several replicas in --server, the first one down: TLS still checks each by its own host,
	// and the call goes to the one that answers.
	if out, errOut, code := cli(t, "--server", "127.0.0.1:1,"+d.grpc, "--ca", ca.CertFile, "--cert", reviewer.CertFile, "--key", reviewer.KeyFile, "review", "list", "--json"); code != 0 || !strings.Contains(out, "f-") {
		t.Fatalf("two addresses, the first down: exit %d: %s %s", code, out, errOut)
	}
	pacs := ca.Client("pacs-cert", "pacs-worker")
	if _, errOut, code := cli(t, "--server", d.grpc, "--ca", ca.CertFile, "--cert", pacs.CertFile, "--key", pacs.KeyFile, "review", "list"); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("a PACS worker's certificate on the worklist: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--ca", ca.CertFile, "--timeout", "3s", "review", "list"); code != 1 || !strings.Contains(errOut, "Unavailable") {
		t.Errorf("no certificate where one is required: exit %d: %s", code, errOut)
	}
}

// TestTokenListRevokeAndExpiry: list shows who holds a token, never the token; a revoked
// token stops working on a running server without a restart.
func TestTokenListRevokeAndExpiry(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	token := addToken(t, d.dataDir, "reviewer", "dr.short")
	if _, errOut, code := cli(t, "token", "add", "--data-dir", d.dataDir, "--role", "pacs-worker", "--principal", "pacs-day", "--expires", "24h"); code != 0 || !strings.Contains(errOut, "it expires at") {
		t.Fatalf("token add --expires: exit %d: %s", code, errOut)
	}
	out, _, code := cli(t, "token", "list", "--data-dir", d.dataDir)
	if code != 0 || !strings.Contains(out, "dr.short") || !strings.Contains(out, "never") || !strings.Contains(out, "pacs-day") || strings.Contains(out, token) {
		t.Errorf("token list: exit %d:\n%s", code, out)
	}
	out, _, _ = cli(t, "token", "list", "--data-dir", d.dataDir, "--json")
	var listed struct {
		Tokens []struct {
			Principal, Role string
			Expires         *string
		}
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Tokens) != 2 || listed.Tokens[1].Expires == nil {
		t.Errorf("token list --json: %v\n%s", err, out)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", token, "review", "counts"); code != 0 {
		t.Fatalf("before the revocation: %s", errOut)
	}
	if out, _, code := cli(t, "token", "revoke", "--data-dir", d.dataDir, "--principal", "dr.short"); code != 0 || !strings.Contains(out, "1 token(s) removed") {
		t.Fatalf("token revoke: exit %d: %s", code, out)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", token, "review", "counts"); code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("after the revocation: exit %d: %s", code, errOut)
	}
}

// TestAuditVerifyAndBackup: the chain holds on a live store; a backup taken while the server
// runs serves from an empty data folder and verifies; a record edited with the sqlite3 CLI
// is named.
func TestAuditVerifyAndBackup(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 3)
	d := startDaemonIn(t, dataDir, vigild)
	token := addToken(t, dataDir, "reviewer", "dr.audit")
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", token, "review", "accept", seeded[0].ID, "--version", "1"); code != 0 {
		t.Fatalf("accept: %s", errOut)
	}
	out, errOut, code := cli(t, "audit", "verify", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "audit chain holds: 4 audit records") {
		t.Fatalf("audit verify on the live store: exit %d: %s %s", code, out, errOut)
	}
	backup := filepath.Join(t.TempDir(), "vigil-backup.db")
	if out, errOut, code := cli(t, "backup", "--data-dir", dataDir, "--out", backup); code != 0 || !strings.Contains(out, "its chain holds") {
		t.Fatalf("backup: exit %d: %s %s", code, out, errOut)
	}
	restored := t.TempDir()
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(restored, review.SQLiteFile), data, 0o600)
	r := startDaemonIn(t, restored, vigild)
	reader := addToken(t, restored, "reviewer", "dr.restore")
	if out, errOut, code := cli(t, "--server", r.grpc, "--token", reader, "review", "list", "--state", "accepted", "--json"); code != 0 || !strings.Contains(out, seeded[0].ID) {
		t.Errorf("the restored store: exit %d: %s %s", code, out, errOut)
	}
	if out, _, code := cli(t, "audit", "verify", "--data-dir", restored); code != 0 {
		t.Errorf("audit verify on the restored store: exit %d: %s", code, out)
	}

	// An intruder with the sqlite3 CLI drops the trigger and edits who accepted.
	sql := `DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'dr.mallory' WHERE seq = 4;`
	if msg, err := exec.Command("sqlite3", filepath.Join(dataDir, review.SQLiteFile), sql).CombinedOutput(); err != nil {
		t.Fatalf("sqlite3 (make deps installs it): %v: %s", err, msg)
	}
	out, errOut, code = cli(t, "audit", "verify", "--data-dir", dataDir)
	if code != 1 || !strings.Contains(errOut, "audit record 4") {
		t.Errorf("audit verify after an edit: exit %d: %s %s; want exit 1 naming audit record 4", code, out, errOut)
	}
}

// TestWarnsOfClearTextOffLoopback: gRPC and HTTP on every address without TLS each get a
// warning at start; with the TLS pair, neither does.
func TestWarnsOfClearTextOffLoopback(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild, "--listen", "0.0.0.0:0", "--http", "0.0.0.0:0")
	for _, want := range []string{"serving gRPC without TLS on a non-loopback address", "serving HTTP (the review page, its API and /metrics) without TLS on a non-loopback address"} {
		if !strings.Contains(d.logs(), want) {
			t.Errorf("no warning %q in:\n%s", want, d.logs())
		}
	}
	pair := testcerts.NewCA(t, "Vigil test CA").Server()
	d2 := startDaemon(t, vigild, "--listen", "0.0.0.0:0", "--http", "0.0.0.0:0", "--tls-cert", pair.CertFile, "--tls-key", pair.KeyFile)
	if strings.Contains(d2.logs(), "without TLS") {
		t.Errorf("a warning with TLS on both listeners:\n%s", d2.logs())
	}
}
