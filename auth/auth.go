// Package auth maps bearer tokens to principals and roles. Tokens live in a file that only
// keeps their sha256, so a copied tokens file lets nobody in; the file is re-read when it
// changes, so a token added with `vigil token add` works without a restart.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Role is what a principal is allowed to do; server/ holds the table of methods per role.
type Role string

const (
	RolePACSWorker Role = "pacs-worker"
	RoleWardBridge Role = "ward-bridge"
	RoleReviewer   Role = "reviewer"
	RoleAdmin      Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RolePACSWorker, RoleWardBridge, RoleReviewer, RoleAdmin}

// Principal is who a token belongs to.
type Principal struct {
	Name string
	Role Role
}

var (
	// ErrUnknownToken means the token is not in the tokens file.
	ErrUnknownToken = errors.New("auth: unknown token")
	// ErrBadRole means a role that is not one of Roles.
	ErrBadRole = errors.New("auth: unknown role")
	// ErrDuplicatePrincipal means the principal already holds a token.
	ErrDuplicatePrincipal = errors.New("auth: principal already has a token")
	// ErrBadPrincipal means a principal name that is empty or has odd characters.
	ErrBadPrincipal = errors.New("auth: bad principal name")
)

// TokenPrefix starts every token, so that a token pasted into the wrong place is recognisable.
const TokenPrefix = "vgl_"

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal a request was authenticated as.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// entry is one token as stored: never the token itself.
type entry struct {
	Principal string    `json:"principal"`
	Role      Role      `json:"role"`
	SHA256    string    `json:"sha256"`
	Created   time.Time `json:"created"`
}

type fileFormat struct {
	Tokens []entry `json:"tokens"`
}

// TokenFile is a tokens file on disk.
type TokenFile struct {
	path string

	mu     sync.Mutex
	stamp  fileStamp
	byHash map[string]Principal
}

type fileStamp struct {
	size    int64
	modTime time.Time
	inode   uint64
}

// OpenTokenFile reads the tokens file at path. A file that does not exist yet is empty.
func OpenTokenFile(path string) (*TokenFile, error) {
	f := &TokenFile{path: path}
	if err := f.reloadIfChanged(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file's location.
func (f *TokenFile) Path() string { return f.path }

// Lookup returns the principal of a token, re-reading the file first if it changed.
func (f *TokenFile) Lookup(token string) (Principal, error) {
	if err := f.reloadIfChanged(); err != nil {
		return Principal{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.byHash[hashToken(token)]
	if !ok {
		return Principal{}, ErrUnknownToken
	}
	return p, nil
}

// Len is the number of tokens.
func (f *TokenFile) Len() int {
	f.reloadIfChanged()
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byHash)
}

func (f *TokenFile) reloadIfChanged() error {
	st, err := stampOf(f.path)
	if errors.Is(err, os.ErrNotExist) {
		f.mu.Lock()
		f.byHash, f.stamp = map[string]Principal{}, fileStamp{}
		f.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == f.stamp && f.byHash != nil {
		return nil
	}
	entries, err := readEntries(f.path)
	if err != nil {
		return err
	}
	byHash := make(map[string]Principal, len(entries))
	for _, e := range entries {
		byHash[e.SHA256] = Principal{Name: e.Principal, Role: e.Role}
	}
	f.byHash, f.stamp = byHash, st
	return nil
}

func stampOf(path string) (fileStamp, error) {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: info.Size(), modTime: info.ModTime()}
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		st.inode = sys.Ino
	}
	return st, nil
}

func readEntries(path string) ([]entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(data, &ff); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	for i, e := range ff.Tokens {
		if !slices.Contains(Roles, e.Role) {
			return nil, fmt.Errorf("tokens file %s: token %d (%s): %w %q", path, i, e.Principal, ErrBadRole, e.Role)
		}
	}
	return ff.Tokens, nil
}

var validPrincipal = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// AddToken creates a token for principal with role, appends its hash to the tokens file at
// path (creating the file, mode 0600), and returns the token. This is the only time the token
// is seen. Concurrent adds are serialised with a lock file; readers see the old or the new
// file, never half of one.
func AddToken(path string, role Role, principal string) (string, error) {
	if !slices.Contains(Roles, role) {
		return "", fmt.Errorf("%w %q: want one of %v", ErrBadRole, role, Roles)
	}
	if !validPrincipal.MatchString(principal) {
		return "", fmt.Errorf("%w %q: use letters, digits, '.', '_', '@' or '-', at most 64", ErrBadPrincipal, principal)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("tokens file: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("tokens file: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("tokens file lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	entries, err := readEntries(path)
	if err != nil {
		return "", err
	}
	// One name, one token: the audit trail names principals, and two holders of one name
	// could not be told apart in it.
	for _, e := range entries {
		if e.Principal == principal {
			return "", fmt.Errorf("%w: %q already has a token (role %s); choose another name", ErrDuplicatePrincipal, principal, e.Role)
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	entries = append(entries, entry{Principal: principal, Role: role, SHA256: hashToken(token), Created: time.Now().UTC()})
	data, err := json.MarshalIndent(fileFormat{Tokens: entries}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("tokens file: %w", err)
	}
	return token, nil
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tokens-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}
