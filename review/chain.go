package review

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"
)

// The audit and the refusals are hash chains: each record carries the sha256 of its own
// fields and of the record before it. A record edited, inserted or deleted in the file (with
// the append-only triggers dropped) breaks the chain at that record, and VerifyChains names
// it. Deleting the newest records leaves a shorter chain that still holds: compare the head
// with one kept elsewhere (a backup, `vigil audit verify`'s last output) to see that.

// ErrChainBroken means an audit or refusal record does not follow from the one before it.
var ErrChainBroken = errors.New("review store: audit chain broken")

// ChainError names the first record at which a chain breaks.
type ChainError struct {
	Table  string // "audit" or "refusals"
	Seq    int64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("%s record %d: %s", e.Table, e.Seq, e.Reason)
}

func (e *ChainError) Unwrap() error { return ErrChainBroken }

// ChainReport is what a verification saw: the records and the head of each chain.
type ChainReport struct {
	AuditRecords, Refusals int64
	AuditHead, RefusalHead string
	// RefusalsPruned is the last refusal record pruned (0 when none was): the refusals are
	// verified from its checkpoint.
	RefusalsPruned int64
}

// chainHasher writes fields length-prefixed, so that no two records hash alike by moving a
// separator between fields.
type chainHasher struct{ h hash.Hash }

func newChainHasher(prev string) chainHasher {
	c := chainHasher{sha256.New()}
	c.field(prev)
	return c
}

func (c chainHasher) field(v string) {
	c.h.Write([]byte(strconv.Itoa(len(v))))
	c.h.Write([]byte{':'})
	c.h.Write([]byte(v))
}

func (c chainHasher) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// auditRow is an audit record as stored.
type auditRow struct {
	seq                      int64
	findingID, actor, action string
	at                       int64
	before                   sql.NullString
	after, stored            string
}

func (r auditRow) hash(prev string) string {
	c := newChainHasher(prev)
	for _, v := range []string{strconv.FormatInt(r.seq, 10), r.findingID, r.actor, r.action, strconv.FormatInt(r.at, 10), strconv.FormatBool(r.before.Valid), r.before.String, r.after} {
		c.field(v)
	}
	return c.sum()
}

// Refusal is a call refused to a principal: who, what and why. Calls without a valid
// principal (no token, an unknown one) are logged and counted, not stored: anyone could
// write those without end.
type Refusal struct {
	Time      time.Time
	Principal string
	Role      string
	Method    string
	Code      string
	Reason    string
}

type refusalRow struct {
	seq int64
	Refusal
	at int64
}

func (r refusalRow) hash(prev string) string {
	c := newChainHasher(prev)
	for _, v := range []string{strconv.FormatInt(r.seq, 10), strconv.FormatInt(r.at, 10), r.Principal, r.Role, r.Method, r.Code, r.Reason} {
		c.field(v)
	}
	return c.sum()
}

type execQuerier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// chainHead is the newest record's sequence number and hash (0 and "" for an empty chain).
func chainHead(ctx context.Context, q execQuerier, table string) (int64, string, error) {
	var seq int64
	var h string
	err := q.QueryRowContext(ctx, `SELECT seq, hash FROM `+table+` ORDER BY seq DESC LIMIT 1`).Scan(&seq, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("review store: %s head: %w", table, err)
	}
	return seq, h, nil
}

// RecordRefusal appends a refused call to the refusals chain.
func (s *sqlStore) RecordRefusal(ctx context.Context, r Refusal) error {
	return s.update(ctx, func(tx txn) error {
		if err := tx.d.lockChain(ctx, tx, "refusals"); err != nil {
			return fmt.Errorf("review store: %w", err)
		}
		seq, prev, err := chainHead(ctx, tx, "refusals")
		if err != nil {
			return err
		}
		row := refusalRow{seq: seq + 1, Refusal: r, at: r.Time.UnixNano()}
		_, err = tx.ExecContext(ctx, `INSERT INTO refusals (seq, at, principal, role, method, code, reason, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			row.seq, row.at, r.Principal, r.Role, r.Method, r.Code, r.Reason, row.hash(prev))
		if err != nil {
			return fmt.Errorf("review store: write refusal: %w", err)
		}
		return nil
	})
}

// PruneRefusals deletes the refusals recorded before the given time, all but the newest
// record, and returns how many it deleted. It first writes a checkpoint (the last deleted
// record's number and hash), from which VerifyChains then starts: what remains still
// verifies, and the checkpoints (append-only) say what was pruned. Records are pruned
// from the oldest in number order, up to the newest one older than before.
func (s *sqlStore) PruneRefusals(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.update(ctx, func(tx txn) error {
		if err := tx.d.lockChain(ctx, tx, "refusals"); err != nil {
			return fmt.Errorf("review store: %w", err)
		}
		head, _, err := chainHead(ctx, tx, "refusals")
		if err != nil {
			return err
		}
		var seq int64
		var h string
		err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM refusals WHERE at < ? AND seq < ? ORDER BY seq DESC LIMIT 1`,
			before.UnixNano(), head).Scan(&seq, &h)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("review store: refusals to prune: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO refusals_pruned (seq, hash, pruned_at) VALUES (?, ?, ?)`, seq, h, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("review store: refusal checkpoint: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM refusals WHERE seq <= ?`, seq)
		if err != nil {
			return fmt.Errorf("review store: prune refusals: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Refusals returns up to limit refusals after sequence, oldest first.
func (s *sqlStore) Refusals(ctx context.Context, after int64, limit int) ([]Refusal, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT at, principal, role, method, code, reason FROM refusals WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("review store: %w", err)
	}
	defer rows.Close()
	var out []Refusal
	for rows.Next() {
		var r Refusal
		var at int64
		if err := rows.Scan(&at, &r.Principal, &r.Role, &r.Method, &r.Code, &r.Reason); err != nil {
			return nil, fmt.Errorf("review store: %w", err)
		}
		r.Time = time.Unix(0, at).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// VerifyChains walks both chains from their first record in one read transaction (a
// consistent snapshot while the server writes) and returns a *ChainError at the first record
// that does not follow.
func (s *sqlStore) VerifyChains(ctx context.Context) (ChainReport, error) {
	var rep ChainReport
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: s.d.snapshot})
	if err != nil {
		return rep, fmt.Errorf("review store: %w", err)
	}
	defer tx.tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT seq, finding_id, actor, action, at, before, after, hash FROM audit ORDER BY seq`)
	if err != nil {
		return rep, fmt.Errorf("review store: %w", err)
	}
	var prev string
	var last int64
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.seq, &r.findingID, &r.actor, &r.action, &r.at, &r.before, &r.after, &r.stored); err != nil {
			rows.Close()
			return rep, fmt.Errorf("review store: %w", err)
		}
		if err := link("audit", last, r.seq, r.stored, r.hash(prev)); err != nil {
			rows.Close()
			return rep, err
		}
		prev, last = r.stored, r.seq
		rep.AuditRecords++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("review store: %w", err)
	}
	rep.AuditHead = prev

	// The refusals are verified from the newest checkpoint, where pruning left them.
	prev, last = "", 0
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM refusals_pruned ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return rep, fmt.Errorf("review store: refusal checkpoint: %w", err)
	}
	rep.RefusalsPruned = last
	rows, err = tx.QueryContext(ctx, `SELECT seq, at, principal, role, method, code, reason, hash FROM refusals ORDER BY seq`)
	if err != nil {
		return rep, fmt.Errorf("review store: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r refusalRow
		var stored string
		if err := rows.Scan(&r.seq, &r.at, &r.Principal, &r.Role, &r.Method, &r.Code, &r.Reason, &stored); err != nil {
			return rep, fmt.Errorf("review store: %w", err)
		}
		if err := link("refusals", last, r.seq, stored, r.hash(prev)); err != nil {
			return rep, err
		}
		prev, last = stored, r.seq
		rep.Refusals++
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("review store: %w", err)
	}
	rep.RefusalHead = prev
	return rep, nil
}

// link checks that record seq follows record last, and that its stored hash is the one its
// fields and the record before give.
func link(table string, last, seq int64, stored, want string) error {
	switch {
	case seq != last+1:
		return &ChainError{Table: table, Seq: last + 1, Reason: fmt.Sprintf("missing: the next record is %d", seq)}
	case stored != want:
		return &ChainError{Table: table, Seq: seq, Reason: "its hash does not match its contents and the record before it (edited, or a record before it was)"}
	}
	return nil
}

// migrate brings a store made before the audit was chained up to date: it adds the hash
// column and chains the existing records, in one transaction, with the append-only trigger
// lifted only for that transaction.
func migrate(db *sql.DB) error {
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'`).Scan(&n); err != nil || n == 0 {
		return err // a new store: the schema makes the table with its hash
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM pragma_table_info('audit') WHERE name = 'hash'`).Scan(&n); err != nil || n > 0 {
		return err
	}
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{`ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''`, `DROP TRIGGER IF EXISTS audit_no_update`} {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	rows, err := tx.Query(`SELECT seq, finding_id, actor, action, at, before, after FROM audit ORDER BY seq`)
	if err != nil {
		return err
	}
	var all []auditRow
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.seq, &r.findingID, &r.actor, &r.action, &r.at, &r.before, &r.after); err != nil {
			rows.Close()
			return err
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// The numbers have no gaps: AUTOINCREMENT's counter rolls back with a failed insert, and
	// the triggers kept deletes out.
	prev := ""
	for _, r := range all {
		h := r.hash(prev)
		if _, err := tx.Exec(`UPDATE audit SET hash = ? WHERE seq = ?`, h, r.seq); err != nil {
			return err
		}
		prev = h
	}
	if _, err := tx.Exec(`CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
	BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END`); err != nil {
		return err
	}
	return tx.Commit()
}

// Backup writes a consistent copy of the store to out (which must not exist) while the server
// goes on writing: SQLite's VACUUM INTO reads one snapshot.
func (s *SQLite) Backup(ctx context.Context, out string) error {
	if _, err := s.read.ExecContext(ctx, `VACUUM INTO ?`, out); err != nil {
		return fmt.Errorf("review store: backup to %s: %w", out, err)
	}
	return nil
}
