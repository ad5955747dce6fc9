package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAddAndLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	f, err := OpenTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Lookup("vgl_nothing"); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("empty file: got %v, want ErrUnknownToken", err)
	}
	token, err := AddToken(path, RoleReviewer, "dr.house")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, TokenPrefix) || len(token) < 40 {
		t.Errorf("token %q: want the %s prefix and 32 random bytes", token, TokenPrefix)
	}
	// The open file sees the new token without being reopened.
	p, err := f.Lookup(token)
	if err != nil || p != (Principal{Name: "dr.house", Role: RoleReviewer}) {
		t.Fatalf("got %+v, %v; want dr.house as reviewer", p, err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), token) {
		t.Error("the tokens file holds the token itself, want only its hash")
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode %v, want 0600", info.Mode().Perm())
	}
	if _, err := f.Lookup(token + "x"); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("altered token: got %v, want ErrUnknownToken", err)
	}
}

func TestAddTokenValidates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	if _, err := AddToken(path, "superuser", "x"); !errors.Is(err, ErrBadRole) {
		t.Errorf("role superuser: got %v, want ErrBadRole", err)
	}
	for _, name := range []string{"", "a b", "../x", strings.Repeat("a", 65)} {
		if _, err := AddToken(path, RoleAdmin, name); !errors.Is(err, ErrBadPrincipal) {
			t.Errorf("principal %q: got %v, want ErrBadPrincipal", name, err)
		}
	}
}

func TestConcurrentAddsKeepEveryToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	var wg sync.WaitGroup
	tokens := make([]string, 20)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := AddToken(path, RoleWardBridge, fmt.Sprintf("camera-bridge-%d", i))
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok
		}()
	}
	wg.Wait()
	f, err := OpenTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != len(tokens) {
		t.Fatalf("got %d tokens in the file, want %d", f.Len(), len(tokens))
	}
	for _, tok := range tokens {
		if _, err := f.Lookup(tok); err != nil {
			t.Errorf("token lost: %v", err)
		}
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(path, []byte(`{"tokens":[{"principal":"x","role":"root","sha256":"00"}]}`), 0o600)
	if _, err := OpenTokenFile(path); !errors.Is(err, ErrBadRole) {
		t.Fatalf("got %v, want ErrBadRole naming the file", err)
	}
}

// TestPrincipalsAreUnique: a second token for a name already in the file is refused, whatever
// its role, and the file keeps the first.
func TestPrincipalsAreUnique(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	first, err := AddToken(path, RoleReviewer, "dr.house")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []Role{RoleReviewer, RoleAdmin} {
		if _, err := AddToken(path, role, "dr.house"); !errors.Is(err, ErrDuplicatePrincipal) {
			t.Errorf("a second dr.house as %s: %v", role, err)
		}
	}
	f, err := OpenTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := f.Lookup(first); err != nil || f.Len() != 1 || p.Role != RoleReviewer {
		t.Errorf("the first token: %+v %v (%d tokens)", p, err, f.Len())
	}
}

func TestExpiryListAndRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	f, err := OpenTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f.now = func() time.Time { return now }
	day, err := AddTokenUntil(path, RolePACSWorker, "pacs-1", now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forever, err := AddToken(path, RoleReviewer, "dr.a")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := f.Lookup(day); err != nil || p.Name != "pacs-1" {
		t.Fatalf("before its expiry: %+v, %v", p, err)
	}
	now = now.Add(24 * time.Hour)
	if p, err := f.Lookup(day); !errors.Is(err, ErrExpired) || p.Name != "pacs-1" {
		t.Errorf("at its expiry: got %+v, %v; want ErrExpired with the principal", p, err)
	}
	list, err := ListTokens(path, now)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if !list[0].Expired || list[0].Expires == nil || list[1].Expired || list[1].Expires != nil || list[1].Principal != "dr.a" {
		t.Errorf("list %+v: want pacs-1 expired, dr.a without expiry", list)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), forever) {
		t.Error("the file holds a token")
	}
	if n, err := Revoke(path, "dr.a"); err != nil || n != 1 {
		t.Fatalf("revoke: %d, %v", n, err)
	}
	if _, err := f.Lookup(forever); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("a revoked token: got %v, want ErrUnknownToken", err)
	}
	if err := f.CheckPrincipal("dr.a"); !errors.Is(err, ErrRevoked) {
		t.Errorf("a revoked principal (for its certificates): got %v, want ErrRevoked", err)
	}
	if err := f.CheckPrincipal("pacs-1"); err != nil {
		t.Errorf("a principal not revoked: %v", err)
	}
	if n, err := Revoke(path, "cert-only"); err != nil || n != 0 || !errors.Is(f.CheckPrincipal("cert-only"), ErrRevoked) {
		t.Errorf("revoking a principal with no token (a certificate's): %d, %v", n, err)
	}
	// A new token for the name lifts the revocation.
	if _, err := AddToken(path, RoleReviewer, "dr.a"); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckPrincipal("dr.a"); err != nil {
		t.Errorf("after a new token: %v", err)
	}
}
