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
	// ErrExpired means the token's expiry has passed.
	ErrExpired = errors.New("auth: token expired")
	// ErrRevoked means the principal was revoked: its tokens are gone, and a client
	// certificate in its name is refused too.
	ErrRevoked = errors.New("auth: principal revoked")
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
	// Expires, when set, ends the token.
	Expires *time.Time `json:"expires,omitempty"`
}

// revocation is a principal revoked, kept so that its client certificates stay refused.
type revocation struct {
	Principal string    `json:"principal"`
	At        time.Time `json:"at"`
}

type fileFormat struct {
	Tokens  []entry      `json:"tokens"`
	Revoked []revocation `json:"revoked,omitempty"`
}

// TokenInfo is what `vigil token list` shows of a token: never the token or its hash.
type TokenInfo struct {
	Principal string     `json:"principal"`
	Role      Role       `json:"role"`
	Created   time.Time  `json:"created"`
	Expires   *time.Time `json:"expires,omitempty"`
	Expired   bool       `json:"expired"`
}

// TokenFile is a tokens file on disk.
type TokenFile struct {
	path string

	mu      sync.Mutex
	stamp   fileStamp
	byHash  map[string]entry
	revoked map[string]bool
	// now is the clock expiry is judged by (tests move it).
	now func() time.Time
}

type fileStamp struct {
	size    int64
	modTime time.Time
	inode   uint64
}

// OpenTokenFile reads the tokens file at path. A file that does not exist yet is empty.
func OpenTokenFile(path string) (*TokenFile, error) {
	f := &TokenFile{path: path, now: time.Now}
	if err := f.reloadIfChanged(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file's location.
func (f *TokenFile) Path() string { return f.path }

// Lookup returns the principal of a token, re-reading the file first if it changed. An
// expired token gives ErrExpired with its principal.
func (f *TokenFile) Lookup(token string) (Principal, error) {
	if err := f.reloadIfChanged(); err != nil {
		return Principal{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.byHash[hashToken(token)]
	if !ok {
		return Principal{}, ErrUnknownToken
	}
	p := Principal{Name: e.Principal, Role: e.Role}
	if e.Expires != nil && !f.now().Before(*e.Expires) {
		// The principal comes back with the error: the refusal is audited in its name.
		return p, fmt.Errorf("%w at %s", ErrExpired, e.Expires.UTC().Format(time.RFC3339))
	}
	return p, nil
}

// CheckPrincipal says whether a principal that did not come from a token (a client
// certificate) may still act: ErrRevoked once `vigil token revoke` named it.
func (f *TokenFile) CheckPrincipal(name string) error {
	if err := f.reloadIfChanged(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked[name] {
		return fmt.Errorf("%w: %q", ErrRevoked, name)
	}
	return nil
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
		f.byHash, f.revoked, f.stamp = map[string]entry{}, map[string]bool{}, fileStamp{}
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
	ff, err := readFile(f.path)
	if err != nil {
		return err
	}
	byHash := make(map[string]entry, len(ff.Tokens))
	for _, e := range ff.Tokens {
		byHash[e.SHA256] = e
	}
	revoked := make(map[string]bool, len(ff.Revoked))
	for _, r := range ff.Revoked {
		revoked[r.Principal] = true
	}
	f.byHash, f.revoked, f.stamp = byHash, revoked, st
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

func readFile(path string) (fileFormat, error) {
	var ff fileFormat
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ff, nil
	}
	if err != nil {
		return ff, fmt.Errorf("tokens file: %w", err)
	}
	if err := json.Unmarshal(data, &ff); err != nil {
		return ff, fmt.Errorf("tokens file %s: %w", path, err)
	}
	for i, e := range ff.Tokens {
		if !slices.Contains(Roles, e.Role) {
			return ff, fmt.Errorf("tokens file %s: token %d (%s): %w %q", path, i, e.Principal, ErrBadRole, e.Role)
		}
	}
	return ff, nil
}

// ValidPrincipal says whether name can be a principal: letters, digits, '.', '_', '@' or '-',
// at most 64.
func ValidPrincipal(name string) bool { return validPrincipal.MatchString(name) }

// ListTokens describes the tokens in the file at path, oldest first.
func ListTokens(path string, now time.Time) ([]TokenInfo, error) {
	ff, err := readFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(ff.Tokens))
	for _, e := range ff.Tokens {
		out = append(out, TokenInfo{Principal: e.Principal, Role: e.Role, Created: e.Created, Expires: e.Expires,
			Expired: e.Expires != nil && !now.Before(*e.Expires)})
	}
	return out, nil
}

// Revoke removes principal's tokens from the file at path and records the principal as
// revoked, so that a client certificate in its name is refused as well. It returns how many
// tokens it removed. A running server sees the change within a second or two, refuses the
// principal's calls and ends the streams it holds open.
func Revoke(path, principal string) (removed int, err error) {
	if !validPrincipal.MatchString(principal) {
		return 0, fmt.Errorf("%w %q", ErrBadPrincipal, principal)
	}
	err = update(path, func(ff *fileFormat) error {
		before := len(ff.Tokens)
		ff.Tokens = slices.DeleteFunc(ff.Tokens, func(e entry) bool { return e.Principal == principal })
		removed = before - len(ff.Tokens)
		if !slices.ContainsFunc(ff.Revoked, func(r revocation) bool { return r.Principal == principal }) {
			ff.Revoked = append(ff.Revoked, revocation{Principal: principal, At: time.Now().UTC()})
		}
		return nil
	})
	return removed, err
}

// update changes the tokens file under its lock: readers see the old or the new file, never
// half of one.
func update(path string, change func(*fileFormat) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("tokens file lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	ff, err := readFile(path)
	if err != nil {
		return err
	}
	if err := change(&ff); err != nil {
		return err
	}
	data, err := json.MarshalIndent(ff, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	return nil
}

var validPrincipal = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// AddToken creates a token for principal with role that never expires; see AddTokenUntil.
func AddToken(path string, role Role, principal string) (string, error) {
	return AddTokenUntil(path, role, principal, time.Time{})
}

// AddTokenUntil creates a token for principal with role, valid until expires (forever when
// zero), appends its hash to the tokens file at path (creating the file, mode 0600), and
// returns the token. This is the only time the token is seen. Concurrent adds are serialised
// with a lock file. A principal revoked before may be given a token again: that lifts the
// revocation.
func AddTokenUntil(path string, role Role, principal string, expires time.Time) (string, error) {
	if !slices.Contains(Roles, role) {
		return "", fmt.Errorf("%w %q: want one of %v", ErrBadRole, role, Roles)
	}
	if !validPrincipal.MatchString(principal) {
		return "", fmt.Errorf("%w %q: use letters, digits, '.', '_', '@' or '-', at most 64", ErrBadPrincipal, principal)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	err := update(path, func(ff *fileFormat) error {
		// One name, one token: the audit trail names principals, and two holders of one name
		// could not be told apart in it.
		for _, e := range ff.Tokens {
			if e.Principal == principal {
				return fmt.Errorf("%w: %q already has a token (role %s); choose another name", ErrDuplicatePrincipal, principal, e.Role)
			}
		}
		e := entry{Principal: principal, Role: role, SHA256: hashToken(token), Created: time.Now().UTC()}
		if !expires.IsZero() {
			at := expires.UTC()
			e.Expires = &at
		}
		ff.Tokens = append(ff.Tokens, e)
		ff.Revoked = slices.DeleteFunc(ff.Revoked, func(r revocation) bool { return r.Principal == principal })
		return nil
	})
	if err != nil {
		return "", err
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
