package review

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// SQLite is the Store on a SQLite file in WAL mode with synchronous=FULL: a committed change is
// on disk before the call returns. Writes go through one connection (SQLite has one writer);
// reads use a pool of their own and never wait for writes.
type SQLite struct{ sqlStore }

// sqliteDialect: one writer, so no row locks; a change wakes the watchers of this process.
var sqliteDialect = &dialect{
	snapshot:  sql.LevelDefault,
	lockChain: func(context.Context, txn, string) error { return nil },
	storage:   storage,
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
CREATE INDEX IF NOT EXISTS findings_leases ON findings (state, lease_expires_at);
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
DROP TRIGGER IF EXISTS refusals_no_delete;
CREATE TABLE IF NOT EXISTS refusals_pruned (
	seq       INTEGER PRIMARY KEY,
	hash      TEXT NOT NULL,
	pruned_at INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS refusals_pruned_no_update BEFORE UPDATE ON refusals_pruned
	BEGIN SELECT RAISE(ABORT, 'refusal checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS refusals_pruned_no_delete BEFORE DELETE ON refusals_pruned
	BEGIN SELECT RAISE(ABORT, 'refusal checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS refusals_prune_only BEFORE DELETE ON refusals
	WHEN OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM refusals_pruned)
	BEGIN SELECT RAISE(ABORT, 'refusal records are append-only: only those up to the last checkpoint are pruned'); END;
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
	return &SQLite{newSQLStore(write, read, sqliteDialect)}, nil
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
	return &SQLite{newSQLStore(read, read, sqliteDialect)}, nil
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
