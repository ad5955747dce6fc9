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
	"strconv"
	"strings"
	"sync"
	"time"
)

// sqlStore is the Store on a SQL database: the findings, overlays, analyses, the audit and
// the refusals. SQLite and PostgreSQL share it; a dialect says where they differ (placeholders,
// row locks, how a change wakes watchers, what a full disk looks like).
type sqlStore struct {
	write conn // the pool that changes things (one connection on SQLite, which has one writer)
	read  conn // the pool for reads (the same pool on PostgreSQL)
	d     *dialect
	now   func() time.Time

	changedMu sync.Mutex
	changed   chan struct{}
}

// dialect is what differs between the databases under sqlStore.
type dialect struct {
	// numbered placeholders ($1, $2, …) instead of ?.
	numbered bool
	// lockRow follows a SELECT of the row a write transaction is about to change: nothing on
	// SQLite, whose write transactions run one at a time; FOR UPDATE on PostgreSQL.
	lockRow string
	// skipLocked follows a SELECT that picks rows to claim or expire: FOR UPDATE SKIP LOCKED
	// on PostgreSQL, so that replicas claiming at once never wait on or take the same row.
	skipLocked string
	// snapshot is the isolation of a read that must see one moment (verifying the chains).
	snapshot sql.IsolationLevel
	// lockChain serialises appends to a hash chain ("audit" or "refusals") until the
	// transaction ends, so that sequence numbers become visible in order and without gaps.
	lockChain func(ctx context.Context, tx txn, table string) error
	// beforeCommit runs last in every write transaction (PostgreSQL: NOTIFY the replicas).
	beforeCommit func(ctx context.Context, tx txn) error
	// storage names the database's own errors (a full disk, a store that cannot be written or
	// reached) with this package's.
	storage func(error) error
}

// bind rewrites ? placeholders for the dialect. The queries here have no ? inside literals.
func (d *dialect) bind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// conn is a pool whose queries are written with ? and bound for its dialect.
type conn struct {
	db *sql.DB
	d  *dialect
}

func (c conn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return c.db.QueryRowContext(ctx, c.d.bind(q), args...)
}

func (c conn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return c.db.QueryContext(ctx, c.d.bind(q), args...)
}

func (c conn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return c.db.ExecContext(ctx, c.d.bind(q), args...)
}

func (c conn) BeginTx(ctx context.Context, opts *sql.TxOptions) (txn, error) {
	tx, err := c.db.BeginTx(ctx, opts)
	return txn{tx, c.d}, err
}

// txn is a transaction whose queries are bound like conn's.
type txn struct {
	tx *sql.Tx
	d  *dialect
}

func (t txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.bind(q), args...)
}

func (t txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.bind(q), args...)
}

func (t txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.d.bind(q), args...)
}

func newSQLStore(write, read *sql.DB, d *dialect) sqlStore {
	return sqlStore{write: conn{write, d}, read: conn{read, d}, d: d, now: time.Now, changed: make(chan struct{})}
}

// SetClock replaces the store's clock, for tests of leases.
func (s *sqlStore) SetClock(now func() time.Time) { s.now = now }

// Close closes both pools.
func (s *sqlStore) Close() error {
	if s.read.db == s.write.db {
		return s.read.db.Close()
	}
	return errors.Join(s.read.db.Close(), s.write.db.Close())
}

// Changed returns a channel closed at the next committed change.
func (s *sqlStore) Changed() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

func (s *sqlStore) notify() {
	s.changedMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.changedMu.Unlock()
}

// update runs fn in a write transaction and, once it has committed, wakes the watchers.
func (s *sqlStore) update(ctx context.Context, fn func(tx txn) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.d.storage(fmt.Errorf("review store: %w", err))
	}
	if err := fn(tx); err != nil {
		tx.tx.Rollback()
		return s.d.storage(err)
	}
	if s.d.beforeCommit != nil {
		if err := s.d.beforeCommit(ctx, tx); err != nil {
			tx.tx.Rollback()
			return s.d.storage(fmt.Errorf("review store: %w", err))
		}
	}
	if err := tx.tx.Commit(); err != nil {
		return s.d.storage(fmt.Errorf("review store: commit: %w", err))
	}
	s.notify()
	return nil
}

// reading names the database's errors on a read, like update does on a write.
func (s *sqlStore) reading(err *error) {
	if *err != nil {
		*err = s.d.storage(*err)
	}
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
func put(ctx context.Context, tx txn, f *Finding, insert bool) error {
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	args := []any{f.Pipeline, f.Label, f.Priority, f.State, f.Version, nanos(f.CreatedAt), nanos(f.LeaseExpiresAt),
		f.Source.Modality, f.Source.CameraID, f.Source.StudyInstanceUID, f.Model.Name, f.Model.Version, f.Model.SHA256, string(body), f.ID}
	q := `UPDATE findings SET pipeline=?, label=?, priority=?, state=?, version=?, created_at=?, lease_expires_at=?,
		modality=?, camera_id=?, study_uid=?, model_name=?, model_version=?, model_sha256=?, body=? WHERE id=? AND version=?`
	if !insert {
		// Every change raises the version by one: the row must still be at the one before,
		// or another writer changed it after it was read.
		args = append(args, f.Version-1)
	} else {
		q = `INSERT INTO findings (pipeline, label, priority, state, version, created_at, lease_expires_at,
			modality, camera_id, study_uid, model_name, model_version, model_sha256, body, id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	}
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("review store: write finding: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("review store: write finding: %w", err)
	} else if n != 1 {
		return fmt.Errorf("%w: %s changed while it was being written", ErrStale, f.ID)
	}
	return nil
}

func audit(ctx context.Context, tx txn, actor, action string, at time.Time, before, after *Finding) error {
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
	if err := tx.d.lockChain(ctx, tx, "audit"); err != nil {
		return fmt.Errorf("review store: %w", err)
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
	return loadLocked(ctx, db, id, "")
}

// loadForChange reads a finding in a write transaction, locking its row where the database
// has row locks.
func loadForChange(ctx context.Context, tx txn, id string) (Finding, error) {
	return loadLocked(ctx, tx, id, tx.d.lockRow)
}

func loadLocked(ctx context.Context, db querier, id, lock string) (Finding, error) {
	var body string
	err := db.QueryRowContext(ctx, `SELECT body FROM findings WHERE id = ?`+lock, id).Scan(&body)
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
func (s *sqlStore) Add(ctx context.Context, actor string, findings []Finding) ([]Finding, error) {
	out, err := s.prepare(findings)
	if err != nil {
		return nil, err
	}
	err = s.update(ctx, func(tx txn) error { return insertFindings(ctx, tx, actor, out) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// prepare validates new findings and fills their ID, state, version and times.
func (s *sqlStore) prepare(findings []Finding) ([]Finding, error) {
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

func insertFindings(ctx context.Context, tx txn, actor string, fs []Finding) error {
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
func (s *sqlStore) AddAnalysis(ctx context.Context, actor string, a Analysis, findings []Finding) (Analysis, bool, error) {
	if !ValidUID(a.SOPInstanceUID) {
		return Analysis{}, false, invalid("the instance's SOP Instance UID is not a DICOM UID")
	}
	out, err := s.prepare(findings)
	if err != nil {
		return Analysis{}, false, err
	}
	a.SubmittedBy = actor
	a.FindingIDs = make([]string, 0, len(out))
	for _, f := range out {
		a.FindingIDs = append(a.FindingIDs, f.ID)
	}
	a.CreatedAt = s.now().UTC()
	body, err := json.Marshal(a)
	if err != nil {
		return Analysis{}, false, err
	}
	existed := false
	err = s.update(ctx, func(tx txn) error {
		// The analysis row goes first: of two replicas given the same instance at once, one
		// inserts it and the other waits for that one to commit, then finds it.
		res, err := tx.ExecContext(ctx, `INSERT INTO analyses (sop_instance_uid, body) VALUES (?, ?)
			ON CONFLICT (sop_instance_uid) DO NOTHING`, a.SOPInstanceUID, string(body))
		if err != nil {
			return fmt.Errorf("review store: write analysis: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("review store: write analysis: %w", err)
		} else if n == 0 {
			prev, err := loadAnalysis(ctx, tx, a.SOPInstanceUID)
			a, existed = prev, true
			return err
		}
		return insertFindings(ctx, tx, actor, out)
	})
	if err != nil {
		return Analysis{}, false, err
	}
	return a, existed, nil
}

// GetAnalysis returns the analysis of an instance, or ErrNotFound.
func (s *sqlStore) GetAnalysis(ctx context.Context, sopInstanceUID string) (_ Analysis, err error) {
	defer s.reading(&err)
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
func (s *sqlStore) Get(ctx context.Context, id string) (_ Finding, err error) {
	defer s.reading(&err)
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
		return "1 = 1", nil
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
		return pageKey{}, invalid("the page token (%d bytes, not repeated here) is not one this server gave: ask without it for the first page", len(tok))
	}
	p, err1 := strconv.Atoi(parts[0])
	c, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return pageKey{}, invalid("the page token (%d bytes, not repeated here) is not one this server gave: ask without it for the first page", len(tok))
	}
	return pageKey{p, c, parts[2]}, nil
}

// MaxPageSize bounds one List page.
const MaxPageSize = 500

// MaxPageBytes bounds one page of List by size as well as by count: a page ends before the
// finding that would take its stored bodies over 1 MiB (it always holds at least one), so a
// reply fits a client's 4 MiB message limit whatever the findings hold.
const MaxPageBytes = 1 << 20

// List returns the worklist: priority first, then the oldest.
func (s *sqlStore) List(ctx context.Context, q Query) (_ []Finding, _ string, err error) {
	defer s.reading(&err)
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
	total, full := 0, false
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, "", fmt.Errorf("review store: %w", err)
		}
		if len(out) > 0 && total+len(body) > MaxPageBytes {
			full = true
			break
		}
		total += len(body)
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
	if len(out) > size || full {
		out = out[:min(len(out), size)]
		last := out[len(out)-1]
		next = pageKey{last.Priority, last.CreatedAt.UnixNano(), last.ID}.token()
	}
	return out, next, nil
}

// expire returns lapsed claims to the queue, inside tx.
func (s *sqlStore) expire(ctx context.Context, tx txn, now time.Time) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM findings WHERE state = ? AND lease_expires_at <= ?`+tx.d.skipLocked,
		string(StateClaimed), now.UnixNano())
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
func (s *sqlStore) ExpireLeases(ctx context.Context) (int, error) {
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
	err = s.update(ctx, func(tx txn) error {
		n, err = s.expire(ctx, tx, now)
		return err
	})
	return n, err
}

// ClaimNext leases the most urgent pending finding to actor.
func (s *sqlStore) ClaimNext(ctx context.Context, actor string, f Filter, lease time.Duration) (Finding, bool, error) {
	if lease <= 0 {
		return Finding{}, false, invalid("lease must be positive")
	}
	if actor == "" {
		return Finding{}, false, invalid("a claim needs a reviewer")
	}
	f.States = []State{StatePending}
	var claimed Finding
	var found bool
	err := s.update(ctx, func(tx txn) error {
		now := s.now().UTC()
		if _, err := s.expire(ctx, tx, now); err != nil {
			return err
		}
		cond, args := where(f)
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM findings WHERE `+cond+
			` ORDER BY priority DESC, created_at ASC, id ASC LIMIT 1`+tx.d.skipLocked, args...).Scan(&id)
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
func (s *sqlStore) change(ctx context.Context, actor, id string, version int64, action string, fn func(now time.Time, f *Finding) error) (Finding, error) {
	var after Finding
	err := s.update(ctx, func(tx txn) error {
		now := s.now().UTC()
		before, err := loadForChange(ctx, tx, id)
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
func (s *sqlStore) Decide(ctx context.Context, actor, id string, version int64, d Decision) (Finding, error) {
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
func (s *sqlStore) Release(ctx context.Context, actor, id string, version int64) (Finding, error) {
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
func (s *sqlStore) Audit(ctx context.Context, id string) (_ []AuditRecord, err error) {
	defer s.reading(&err)
	rows, err := s.read.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE finding_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	return scanAudit(rows)
}

// Changes returns audit records after a sequence number. SQLite commits one writer at a time,
// so sequence numbers become visible in order: a reader that resumes after the last number it
// saw misses nothing.
func (s *sqlStore) Changes(ctx context.Context, after int64, limit int) (_ []AuditRecord, err error) {
	defer s.reading(&err)
	rows, err := s.read.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	return scanAudit(rows)
}

// LastSequence is the newest audit sequence number, 0 for an empty store.
func (s *sqlStore) LastSequence(ctx context.Context) (_ int64, err error) {
	defer s.reading(&err)
	var seq sql.NullInt64
	if err := s.read.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("review store: %w", err)
	}
	return seq.Int64, nil
}

// Counts returns findings per state and acceptance per model version.
func (s *sqlStore) Counts(ctx context.Context, f Filter) (_ Counts, err error) {
	defer s.reading(&err)
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
		SUM(CASE WHEN state = 'accepted' THEN 1 ELSE 0 END), SUM(CASE WHEN state = 'amended' THEN 1 ELSE 0 END),
		SUM(CASE WHEN state = 'rejected' THEN 1 ELSE 0 END)
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
