package review

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// SQLite is the Store on a SQLite file in WAL mode with synchronous=FULL: a committed change is
// on disk before the call returns. Writes go through one connection (SQLite has one writer);
// reads use a pool of their own and never wait for writes.
type SQLite struct {
	write *sql.DB
	read  *sql.DB
	now   func() time.Time

	changedMu sync.Mutex
	changed   chan struct{}
}

const schema = `
CREATE TABLE IF NOT EXISTS findings (
	id               TEXT PRIMARY KEY,
	pipeline         TEXT NOT NULL,
	label            TEXT NOT NULL,
	priority         INTEGER NOT NULL,
	state            TEXT NOT NULL,
	version          INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	lease_expires_at INTEGER NOT NULL DEFAULT 0,
	modality         TEXT NOT NULL DEFAULT '',
	camera_id        TEXT NOT NULL DEFAULT '',
	study_uid        TEXT NOT NULL DEFAULT '',
	model_name       TEXT NOT NULL,
	model_version    TEXT NOT NULL,
	model_sha256     TEXT NOT NULL,
	body             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_worklist ON findings (state, priority DESC, created_at, id);
CREATE INDEX IF NOT EXISTS findings_study ON findings (study_uid);
CREATE TABLE IF NOT EXISTS overlays (
	finding_id TEXT PRIMARY KEY REFERENCES findings (id),
	media_type TEXT NOT NULL,
	width      INTEGER NOT NULL,
	height     INTEGER NOT NULL,
	data       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	finding_id TEXT NOT NULL,
	actor      TEXT NOT NULL,
	action     TEXT NOT NULL,
	at         INTEGER NOT NULL,
	before     TEXT,
	after      TEXT NOT NULL,
	hash       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_finding ON audit (finding_id, seq);
CREATE TABLE IF NOT EXISTS refusals (
	seq       INTEGER PRIMARY KEY,
	at        INTEGER NOT NULL,
	principal TEXT NOT NULL,
	role      TEXT NOT NULL,
	method    TEXT NOT NULL,
	code      TEXT NOT NULL,
	reason    TEXT NOT NULL,
	hash      TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS refusals_no_update BEFORE UPDATE ON refusals
	BEGIN SELECT RAISE(ABORT, 'refusal records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS refusals_no_delete BEFORE DELETE ON refusals
	BEGIN SELECT RAISE(ABORT, 'refusal records are append-only'); END;
CREATE TABLE IF NOT EXISTS analyses (
	sop_instance_uid TEXT PRIMARY KEY,
	body             TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
	BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
	BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
`

// SQLiteFile is the store's file name in vigild's data folder.
const SQLiteFile = "vigil.db"

// OpenSQLite opens (creating if needed) the store at path.
func OpenSQLite(path string) (*SQLite, error) {
	dsn := func(txlock string) string {
		q := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", txlock)
		return "file:" + path + "?" + q.Encode()
	}
	write, err := sql.Open("sqlite", dsn("immediate"))
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	write.SetMaxOpenConns(1)
	if err := migrate(write); err != nil {
		write.Close()
		return nil, fmt.Errorf("review store %s: %w", path, err)
	}
	if _, err := write.Exec(schema); err != nil {
		write.Close()
		return nil, fmt.Errorf("review store %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn("deferred"))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("review store: %w", err)
	}
	read.SetMaxOpenConns(4)
	return &SQLite{write: write, read: read, now: time.Now, changed: make(chan struct{})}, nil
}

// OpenSQLiteReadOnly opens an existing store only to read it (to verify or back it up),
// beside a server that writes it.
func OpenSQLiteReadOnly(path string) (*SQLite, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Set("mode", "ro")
	read, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	read.SetMaxOpenConns(2)
	if err := read.Ping(); err != nil {
		read.Close()
		return nil, fmt.Errorf("review store %s: %w", path, err)
	}
	return &SQLite{write: read, read: read, now: time.Now, changed: make(chan struct{})}, nil
}

// SetClock replaces the store's clock, for tests of leases.
func (s *SQLite) SetClock(now func() time.Time) { s.now = now }

// Close closes both pools.
func (s *SQLite) Close() error {
	if s.read == s.write {
		return s.read.Close()
	}
	return errors.Join(s.read.Close(), s.write.Close())
}

// Changed returns a channel closed at the next committed change.
func (s *SQLite) Changed() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

func (s *SQLite) notify() {
	s.changedMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.changedMu.Unlock()
}

// update runs fn in a write transaction and, once it has committed, wakes the watchers.
func (s *SQLite) update(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return storage(fmt.Errorf("review store: %w", err))
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return storage(err)
	}
	if err := tx.Commit(); err != nil {
		return storage(fmt.Errorf("review store: commit: %w", err))
	}
	s.notify()
	return nil
}

// SQLite's primary result codes for a disk that is full, a file that cannot be written, and
// an I/O error (what a file system remounted read-only gives a write).
const (
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteFull     = 13
)

// storage names an error of the disk under the store, so that callers can say what an
// operator must do: the write is refused, nothing changed, and reads go on.
func storage(err error) error {
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqliteFull:
		return fmt.Errorf("%w: %w", ErrStoreFull, err)
	case sqliteReadOnly, sqliteIOErr:
		return fmt.Errorf("%w: %w", ErrStoreUnwritable, err)
	}
	return err
}

// ValidID says whether id has the form this store gives (f- and 20 hex digits). Callers check
// it before anything else, so that arbitrary text never reaches a query or a log line.
func ValidID(id string) bool {
	if len(id) != 22 || !strings.HasPrefix(id, "f-") {
		return false
	}
	_, err := hex.DecodeString(id[2:])
	return err == nil && strings.ToLower(id) == id
}

func newID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "f-" + hex.EncodeToString(b)
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// put writes a finding's row from the struct: the one write path, so the indexed columns and
// the JSON body never disagree.
func put(ctx context.Context, tx *sql.Tx, f *Finding, insert bool) error {
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	args := []any{f.Pipeline, f.Label, f.Priority, f.State, f.Version, nanos(f.CreatedAt), nanos(f.LeaseExpiresAt),
		f.Source.Modality, f.Source.CameraID, f.Source.StudyInstanceUID, f.Model.Name, f.Model.Version, f.Model.SHA256, string(body), f.ID}
	q := `UPDATE findings SET pipeline=?, label=?, priority=?, state=?, version=?, created_at=?, lease_expires_at=?,
		modality=?, camera_id=?, study_uid=?, model_name=?, model_version=?, model_sha256=?, body=? WHERE id=?`
	if insert {
		q = `INSERT INTO findings (pipeline, label, priority, state, version, created_at, lease_expires_at,
			modality, camera_id, study_uid, model_name, model_version, model_sha256, body, id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("review store: write finding: %w", err)
	}
	return nil
}

func audit(ctx context.Context, tx *sql.Tx, actor, action string, at time.Time, before, after *Finding) error {
	var b sql.NullString
	if before != nil {
		data, err := json.Marshal(before)
		if err != nil {
			return err
		}
		b = sql.NullString{String: string(data), Valid: true}
	}
	a, err := json.Marshal(after)
	if err != nil {
		return err
	}
	seq, prev, err := chainHead(ctx, tx, "audit")
	if err != nil {
		return err
	}
	r := auditRow{seq: seq + 1, findingID: after.ID, actor: actor, action: action, at: at.UnixNano(), before: b, after: string(a)}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit (seq, finding_id, actor, action, at, before, after, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.seq, r.findingID, r.actor, r.action, r.at, b, r.after, r.hash(prev))
	if err != nil {
		return fmt.Errorf("review store: write audit: %w", err)
	}
	return nil
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func load(ctx context.Context, db querier, id string) (Finding, error) {
	var body string
	err := db.QueryRowContext(ctx, `SELECT body FROM findings WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return Finding{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Finding{}, fmt.Errorf("review store: %w", err)
	}
	var f Finding
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		return Finding{}, fmt.Errorf("review store: finding %s: %w", id, err)
	}
	return f, nil
}

// Add stores new findings as pending, in one transaction.
func (s *SQLite) Add(ctx context.Context, actor string, findings []Finding) ([]Finding, error) {
	out, err := s.prepare(findings)
	if err != nil {
		return nil, err
	}
	err = s.update(ctx, func(tx *sql.Tx) error { return insertFindings(ctx, tx, actor, out) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// prepare validates new findings and fills their ID, state, version and times.
func (s *SQLite) prepare(findings []Finding) ([]Finding, error) {
	now := s.now().UTC()
	out := make([]Finding, len(findings))
	for i := range findings {
		f := findings[i]
		if err := validateNew(&f); err != nil {
			return nil, err
		}
		f.ID, f.State, f.Version = newID(), StatePending, 1
		f.CreatedAt, f.UpdatedAt = now, now
		f.ClaimedBy, f.LeaseExpiresAt, f.Decision = "", time.Time{}, nil
		out[i] = f
	}
	return out, nil
}

func insertFindings(ctx context.Context, tx *sql.Tx, actor string, fs []Finding) error {
	for i := range fs {
		f := &fs[i]
		f.SubmittedBy = actor
		if err := put(ctx, tx, f, true); err != nil {
			return err
		}
		if o := f.Overlay; o != nil {
			_, err := tx.ExecContext(ctx, `INSERT INTO overlays (finding_id, media_type, width, height, data) VALUES (?, ?, ?, ?, ?)`,
				f.ID, o.MediaType, o.Width, o.Height, o.Data)
			if err != nil {
				return fmt.Errorf("review store: write overlay: %w", err)
			}
		}
		if err := audit(ctx, tx, actor, "create", f.CreatedAt, nil, f); err != nil {
			return err
		}
	}
	return nil
}

// AddAnalysis stores an analysed instance with its findings in one transaction. When the
// instance was analysed before, nothing is written and the stored analysis comes back with
// existed set: resubmitting an instance never duplicates its findings.
func (s *SQLite) AddAnalysis(ctx context.Context, actor string, a Analysis, findings []Finding) (Analysis, bool, error) {
	if !ValidUID(a.SOPInstanceUID) {
		return Analysis{}, false, invalid("the instance's SOP Instance UID is not a DICOM UID")
	}
	out, err := s.prepare(findings)
	if err != nil {
		return Analysis{}, false, err
	}
	existed := false
	err = s.update(ctx, func(tx *sql.Tx) error {
		prev, err := loadAnalysis(ctx, tx, a.SOPInstanceUID)
		if err == nil {
			a, existed = prev, true
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := insertFindings(ctx, tx, actor, out); err != nil {
			return err
		}
		a.FindingIDs = a.FindingIDs[:0]
		for _, f := range out {
			a.FindingIDs = append(a.FindingIDs, f.ID)
		}
		a.CreatedAt = s.now().UTC()
		body, err := json.Marshal(a)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO analyses (sop_instance_uid, body) VALUES (?, ?)`, a.SOPInstanceUID, string(body))
		if err != nil {
			return fmt.Errorf("review store: write analysis: %w", err)
		}
		return nil
	})
	return a, existed, err
}

// GetAnalysis returns the analysis of an instance, or ErrNotFound.
func (s *SQLite) GetAnalysis(ctx context.Context, sopInstanceUID string) (Analysis, error) {
	return loadAnalysis(ctx, s.read, sopInstanceUID)
}

func loadAnalysis(ctx context.Context, db querier, uid string) (Analysis, error) {
	var body string
	err := db.QueryRowContext(ctx, `SELECT body FROM analyses WHERE sop_instance_uid = ?`, uid).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return Analysis{}, fmt.Errorf("%w: no analysis of that instance", ErrNotFound)
	}
	if err != nil {
		return Analysis{}, fmt.Errorf("review store: %w", err)
	}
	var a Analysis
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		return Analysis{}, fmt.Errorf("review store: analysis: %w", err)
	}
	return a, nil
}

// Get returns a finding with its overlay.
func (s *SQLite) Get(ctx context.Context, id string) (Finding, error) {
	f, err := load(ctx, s.read, id)
	if err != nil {
		return f, err
	}
	var o Image
	err = s.read.QueryRowContext(ctx, `SELECT media_type, width, height, data FROM overlays WHERE finding_id = ?`, id).
		Scan(&o.MediaType, &o.Width, &o.Height, &o.Data)
	switch {
	case err == nil:
		f.Overlay = &o
	case !errors.Is(err, sql.ErrNoRows):
		return f, fmt.Errorf("review store: %w", err)
	}
	return f, nil
}

// where builds the SQL condition for a filter.
func where(f Filter) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
	if f.Pipeline != "" {
		add("pipeline = ?", string(f.Pipeline))
	}
	if f.Modality != "" {
		add("modality = ?", f.Modality)
	}
	if f.CameraID != "" {
		add("camera_id = ?", f.CameraID)
	}
	if f.Model != "" {
		add("model_name = ?", f.Model)
	}
	if f.StudyUID != "" {
		add("study_uid = ?", f.StudyUID)
	}
	if len(f.States) > 0 {
		marks := strings.TrimSuffix(strings.Repeat("?,", len(f.States)), ",")
		conds = append(conds, "state IN ("+marks+")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	if len(conds) == 0 {
		return "1", nil
	}
	return strings.Join(conds, " AND "), args
}

// pageKey is the position after which the next page starts.
type pageKey struct {
	Priority  int
	CreatedAt int64
	ID        string
}

func (k pageKey) token() string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%d|%d|%s", k.Priority, k.CreatedAt, k.ID)))
}

func parsePageToken(tok string) (pageKey, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	parts := strings.SplitN(string(raw), "|", 3)
	if err != nil || len(parts) != 3 {
		return pageKey{}, invalid("page token %q is not one this server gave", tok)
	}
	p, err1 := strconv.Atoi(parts[0])
	c, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return pageKey{}, invalid("page token %q is not one this server gave", tok)
	}
	return pageKey{p, c, parts[2]}, nil
}

// MaxPageSize bounds one List page.
const MaxPageSize = 500

// List returns the worklist: priority first, then the oldest.
func (s *SQLite) List(ctx context.Context, q Query) ([]Finding, string, error) {
	size := q.PageSize
	if size <= 0 {
		size = 50
	}
	if size > MaxPageSize {
		return nil, "", invalid("page size %d is over %d", size, MaxPageSize)
	}
	cond, args := where(q.Filter)
	if q.PageToken != "" {
		k, err := parsePageToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		cond += " AND (priority < ? OR (priority = ? AND (created_at > ? OR (created_at = ? AND id > ?))))"
		args = append(args, k.Priority, k.Priority, k.CreatedAt, k.CreatedAt, k.ID)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT body FROM findings WHERE `+cond+
		` ORDER BY priority DESC, created_at ASC, id ASC LIMIT ?`, append(args, size+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("review store: %w", err)
	}
	defer rows.Close()
	var out []Finding
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, "", fmt.Errorf("review store: %w", err)
		}
		var f Finding
		if err := json.Unmarshal([]byte(body), &f); err != nil {
			return nil, "", fmt.Errorf("review store: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("review store: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = pageKey{last.Priority, last.CreatedAt.UnixNano(), last.ID}.token()
	}
	return out, next, nil
}

// expire returns lapsed claims to the queue, inside tx.
func (s *SQLite) expire(ctx context.Context, tx *sql.Tx, now time.Time) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM findings WHERE state = ? AND lease_expires_at <= ?`, string(StateClaimed), now.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("review store: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("review store: %w", err)
		}
		ids = append(ids, id)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("review store: %w", err)
	}
	for _, id := range ids {
		before, err := load(ctx, tx, id)
		if err != nil {
			return 0, err
		}
		after := before
		after.State, after.ClaimedBy, after.LeaseExpiresAt = StatePending, "", time.Time{}
		after.Version++
		after.UpdatedAt = now
		if err := put(ctx, tx, &after, false); err != nil {
			return 0, err
		}
		if err := audit(ctx, tx, "vigil", "expire", now, &before, &after); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// ExpireLeases returns every lapsed claim to the queue, with an audit record each.
func (s *SQLite) ExpireLeases(ctx context.Context) (int, error) {
	var n int
	var err error
	now := s.now().UTC()
	// Look first on the read side, so that a server with nothing to expire never takes the lock.
	var waiting int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM findings WHERE state = ? AND lease_expires_at <= ?`,
		string(StateClaimed), now.UnixNano()).Scan(&waiting); err != nil {
		return 0, fmt.Errorf("review store: %w", err)
	}
	if waiting == 0 {
		return 0, nil
	}
	err = s.update(ctx, func(tx *sql.Tx) error {
		n, err = s.expire(ctx, tx, now)
		return err
	})
	return n, err
}

// ClaimNext leases the most urgent pending finding to actor.
func (s *SQLite) ClaimNext(ctx context.Context, actor string, f Filter, lease time.Duration) (Finding, bool, error) {
	if lease <= 0 {
		return Finding{}, false, invalid("lease must be positive")
	}
	if actor == "" {
		return Finding{}, false, invalid("a claim needs a reviewer")
	}
	f.States = []State{StatePending}
	var claimed Finding
	var found bool
	err := s.update(ctx, func(tx *sql.Tx) error {
		now := s.now().UTC()
		if _, err := s.expire(ctx, tx, now); err != nil {
			return err
		}
		cond, args := where(f)
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM findings WHERE `+cond+
			` ORDER BY priority DESC, created_at ASC, id ASC LIMIT 1`, args...).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("review store: %w", err)
		}
		before, err := load(ctx, tx, id)
		if err != nil {
			return err
		}
		claimed = before
		claimed.State, claimed.ClaimedBy, claimed.LeaseExpiresAt = StateClaimed, actor, now.Add(lease)
		claimed.Version++
		claimed.UpdatedAt = now
		if err := put(ctx, tx, &claimed, false); err != nil {
			return err
		}
		found = true
		return audit(ctx, tx, actor, "claim", now, &before, &claimed)
	})
	return claimed, found, err
}

// change loads a finding in a write transaction, checks its version, lets fn change it, and
// writes it back with its audit record.
func (s *SQLite) change(ctx context.Context, actor, id string, version int64, action string, fn func(now time.Time, f *Finding) error) (Finding, error) {
	var after Finding
	err := s.update(ctx, func(tx *sql.Tx) error {
		now := s.now().UTC()
		before, err := load(ctx, tx, id)
		if err != nil {
			return err
		}
		if before.Version != version {
			return &StaleError{ID: id, Given: version, Current: before.Version}
		}
		after = before
		if err := fn(now, &after); err != nil {
			return err
		}
		after.Version++
		after.UpdatedAt = now
		if err := put(ctx, tx, &after, false); err != nil {
			return err
		}
		return audit(ctx, tx, actor, action, now, &before, &after)
	})
	return after, err
}

// Decide records a reviewer's decision. A finding claimed by someone else (with a live lease)
// cannot be decided; a pending one can, and a decision is final.
func (s *SQLite) Decide(ctx context.Context, actor, id string, version int64, d Decision) (Finding, error) {
	if actor == "" {
		return Finding{}, invalid("a decision needs a reviewer")
	}
	if err := validateDecision(&d); err != nil {
		return Finding{}, err
	}
	return s.change(ctx, actor, id, version, string(d.Outcome), func(now time.Time, f *Finding) error {
		if f.State.Decided() {
			return fmt.Errorf("%w: %s was %s by %s", ErrDecided, id, f.State, f.Decision.Reviewer)
		}
		if f.State == StateClaimed && f.ClaimedBy != actor && f.LeaseExpiresAt.After(now) {
			return fmt.Errorf("%w: %s holds %s until %s", ErrClaimed, f.ClaimedBy, id, f.LeaseExpiresAt.Format(time.RFC3339))
		}
		d.Reviewer, d.DecidedAt = actor, now
		f.Decision = &d
		f.ClaimedBy, f.LeaseExpiresAt = "", time.Time{}
		switch d.Outcome {
		case OutcomeAccept:
			f.State = StateAccepted
		case OutcomeReject:
			f.State = StateRejected
		case OutcomeAmend:
			f.State = StateAmended
		}
		return nil
	})
}

// Release gives back a finding the actor holds.
func (s *SQLite) Release(ctx context.Context, actor, id string, version int64) (Finding, error) {
	return s.change(ctx, actor, id, version, "release", func(now time.Time, f *Finding) error {
		if f.State != StateClaimed || f.ClaimedBy != actor {
			return fmt.Errorf("%w: %s is %s", ErrNotClaimed, id, f.State)
		}
		f.State, f.ClaimedBy, f.LeaseExpiresAt = StatePending, "", time.Time{}
		return nil
	})
}

func scanAudit(rows *sql.Rows) ([]AuditRecord, error) {
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		var r AuditRecord
		var at int64
		var before sql.NullString
		var after string
		if err := rows.Scan(&r.Sequence, &r.FindingID, &r.Actor, &r.Action, &at, &before, &after); err != nil {
			return nil, fmt.Errorf("review store: %w", err)
		}
		r.Time = time.Unix(0, at).UTC()
		r.After = new(Finding)
		if err := json.Unmarshal([]byte(after), r.After); err != nil {
			return nil, fmt.Errorf("review store: audit %d: %w", r.Sequence, err)
		}
		if before.Valid {
			r.Before = new(Finding)
			if err := json.Unmarshal([]byte(before.String), r.Before); err != nil {
				return nil, fmt.Errorf("review store: audit %d: %w", r.Sequence, err)
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

const auditColumns = `seq, finding_id, actor, action, at, before, after`

// Audit returns a finding's audit trail, oldest first.
func (s *SQLite) Audit(ctx context.Context, id string) ([]AuditRecord, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE finding_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	return scanAudit(rows)
}

// Changes returns audit records after a sequence number. SQLite commits one writer at a time,
// so sequence numbers become visible in order: a reader that resumes after the last number it
// saw misses nothing.
func (s *SQLite) Changes(ctx context.Context, after int64, limit int) ([]AuditRecord, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	return scanAudit(rows)
}

// LastSequence is the newest audit sequence number, 0 for an empty store.
func (s *SQLite) LastSequence(ctx context.Context) (int64, error) {
	var seq sql.NullInt64
	if err := s.read.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("review store: %w", err)
	}
	return seq.Int64, nil
}

// Counts returns findings per state and acceptance per model version.
func (s *SQLite) Counts(ctx context.Context, f Filter) (Counts, error) {
	c := Counts{ByState: map[State]int64{}}
	for _, st := range States {
		c.ByState[st] = 0
	}
	cond, args := where(f)
	rows, err := s.read.QueryContext(ctx, `SELECT state, COUNT(*) FROM findings WHERE `+cond+` GROUP BY state`, args...)
	if err != nil {
		return c, fmt.Errorf("review store: %w", err)
	}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return c, fmt.Errorf("review store: %w", err)
		}
		c.ByState[State(st)] = n
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return c, fmt.Errorf("review store: %w", err)
	}
	rows, err = s.read.QueryContext(ctx, `SELECT model_name, model_version, model_sha256,
		SUM(state = 'accepted'), SUM(state = 'amended'), SUM(state = 'rejected')
		FROM findings WHERE `+cond+` GROUP BY model_name, model_version, model_sha256 ORDER BY model_name, model_version`, args...)
	if err != nil {
		return c, fmt.Errorf("review store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m ModelAcceptance
		if err := rows.Scan(&m.Model.Name, &m.Model.Version, &m.Model.SHA256, &m.Accepted, &m.Amended, &m.Rejected); err != nil {
			return c, fmt.Errorf("review store: %w", err)
		}
		c.Models = append(c.Models, m)
	}
	return c, rows.Err()
}
