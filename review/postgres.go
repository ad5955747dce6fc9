package review

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Postgres is the Store on a PostgreSQL database, which several vigild replicas share. Rows
// are locked where they change (claims skip the locked ones), appends to the audit and the
// refusals take the chain's advisory lock until they commit, and every change NOTIFYs the
// replicas, whose watchers then read on from their last sequence number.
type Postgres struct {
	sqlStore
	stopListen context.CancelFunc
	listening  chan struct{}
}

// notifyChannel is the PostgreSQL channel a committed change is announced on.
const notifyChannel = "vigil_review"

// Advisory lock keys: the migrations' session lock, and one transaction lock per chain.
const (
	lockMigrate  = 0x76_69_67_00 // "vig\0"
	lockAudit    = 0x76_69_67_01
	lockRefusals = 0x76_69_67_02
)

var postgresDialect = &dialect{
	numbered:   true,
	lockRow:    " FOR UPDATE",
	skipLocked: " FOR UPDATE SKIP LOCKED",
	snapshot:   sql.LevelRepeatableRead,
	lockChain: func(ctx context.Context, tx txn, table string) error {
		key := lockAudit
		if table == "refusals" {
			key = lockRefusals
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, key)
		return err
	},
	beforeCommit: func(ctx context.Context, tx txn) error {
		// Delivered at commit, once per transaction (PostgreSQL folds equal notifications).
		_, err := tx.ExecContext(ctx, `SELECT pg_notify('`+notifyChannel+`', '')`)
		return err
	},
	storage: pgStorage,
}

// IsPostgresURL says whether a --store value names a PostgreSQL database.
func IsPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// OpenPostgres connects to the database at dsn (postgres://user@host:port/db?…), brings its
// schema up to date (see Migrate) and starts listening for the other replicas' changes.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	if err := Migrate(ctx, dsn); err != nil {
		return nil, err
	}
	return ConnectPostgres(ctx, dsn)
}

// ConnectPostgres connects to a database whose schema is already this build's version,
// changing nothing until asked: for `vigil audit verify` beside running replicas.
func ConnectPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("review store: the PostgreSQL URL: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		db.Close()
		return nil, pgStorage(fmt.Errorf("review store: the schema version (run vigil migrate first): %w", err))
	}
	if have != SchemaVersion {
		db.Close()
		return nil, fmt.Errorf("review store: the database's schema is version %d, this build's %d: run vigil migrate with the newer build", have, SchemaVersion)
	}
	p := &Postgres{sqlStore: newSQLStore(db, db, postgresDialect), listening: make(chan struct{})}
	lctx, cancel := context.WithCancel(context.Background())
	p.stopListen = cancel
	go p.listen(lctx, cfg)
	return p, nil
}

// Close stops listening and closes the pool.
func (p *Postgres) Close() error {
	p.stopListen()
	<-p.listening
	return p.sqlStore.Close()
}

// listen holds one connection that LISTENs for changes and wakes this replica's watchers at
// each. When the connection drops it reconnects with backoff and wakes the watchers once,
// so that they read whatever was committed meanwhile from their last sequence number.
func (p *Postgres) listen(ctx context.Context, cfg *pgx.ConnConfig) {
	defer close(p.listening)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_, err = c.Exec(ctx, "LISTEN "+notifyChannel)
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			p.notify()
			for err == nil {
				_, err = c.WaitForNotification(ctx)
				if err == nil {
					p.notify()
				}
			}
		}
		if c != nil {
			c.Close(context.Background())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// ErrStoreUnreachable means the database did not answer: the call was not made (or its outcome
// is unknown, when the connection broke at commit), and it may be retried.
var ErrStoreUnreachable = errors.New("review store: the database cannot be reached; retry")

// pgStorage names PostgreSQL's errors: a full disk (53100), a database that cannot be
// written (read-only transaction, shutting down, out of resources), or one that cannot be
// reached at all.
func pgStorage(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "53100":
			return fmt.Errorf("%w: %w", ErrStoreFull, err)
		case pe.Code == "25006", strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "58"):
			return fmt.Errorf("%w: %w", ErrStoreUnwritable, err)
		case strings.HasPrefix(pe.Code, "57P"), strings.HasPrefix(pe.Code, "08"):
			return fmt.Errorf("%w: %w", ErrStoreUnreachable, err)
		}
		return err
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", ErrStoreUnreachable, err)
	}
	return err
}

// migrations are the PostgreSQL schema's versions, applied in order, each once, in its own
// transaction. Never edit one that has shipped: add the next.
var migrations = []string{
	// 1: findings, overlays, analyses, the audit and the refusals; the audit and the refusals
	// refuse UPDATE, DELETE and TRUNCATE.
	`
CREATE TABLE findings (
	id               TEXT PRIMARY KEY,
	pipeline         TEXT NOT NULL,
	label            TEXT NOT NULL,
	priority         INTEGER NOT NULL,
	state            TEXT NOT NULL,
	version          BIGINT NOT NULL,
	created_at       BIGINT NOT NULL,
	lease_expires_at BIGINT NOT NULL DEFAULT 0,
	modality         TEXT NOT NULL DEFAULT '',
	camera_id        TEXT NOT NULL DEFAULT '',
	study_uid        TEXT NOT NULL DEFAULT '',
	model_name       TEXT NOT NULL,
	model_version    TEXT NOT NULL,
	model_sha256     TEXT NOT NULL,
	body             TEXT NOT NULL
);
CREATE INDEX findings_worklist ON findings (state, priority DESC, created_at, id);
CREATE INDEX findings_study ON findings (study_uid);
CREATE INDEX findings_leases ON findings (state, lease_expires_at);
CREATE TABLE overlays (
	finding_id TEXT PRIMARY KEY REFERENCES findings (id),
	media_type TEXT NOT NULL,
	width      INTEGER NOT NULL,
	height     INTEGER NOT NULL,
	data       BYTEA NOT NULL
);
CREATE TABLE analyses (
	sop_instance_uid TEXT PRIMARY KEY,
	body             TEXT NOT NULL
);
CREATE TABLE audit (
	seq        BIGINT PRIMARY KEY,
	finding_id TEXT NOT NULL,
	actor      TEXT NOT NULL,
	action     TEXT NOT NULL,
	at         BIGINT NOT NULL,
	before     TEXT,
	after      TEXT NOT NULL,
	hash       TEXT NOT NULL
);
CREATE INDEX audit_finding ON audit (finding_id, seq);
CREATE TABLE refusals (
	seq       BIGINT PRIMARY KEY,
	at        BIGINT NOT NULL,
	principal TEXT NOT NULL,
	role      TEXT NOT NULL,
	method    TEXT NOT NULL,
	code      TEXT NOT NULL,
	reason    TEXT NOT NULL,
	hash      TEXT NOT NULL
);
CREATE FUNCTION vigil_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '% records are append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER refusals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON refusals
	FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
`,
	// 2: the refusals' retention. A checkpoint keeps the last pruned record's number and
	// hash, so the chain is verified from there; records up to the newest checkpoint may be
	// deleted, no others, and checkpoints never.
	`
CREATE TABLE refusals_pruned (
	seq       BIGINT PRIMARY KEY,
	hash      TEXT NOT NULL,
	pruned_at BIGINT NOT NULL
);
CREATE TRIGGER refusals_pruned_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON refusals_pruned
	FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
DROP TRIGGER refusals_append_only ON refusals;
CREATE TRIGGER refusals_append_only BEFORE UPDATE OR TRUNCATE ON refusals
	FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
CREATE FUNCTION vigil_refusals_prune_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.seq > (SELECT COALESCE(MAX(seq), 0) FROM refusals_pruned) THEN
		RAISE EXCEPTION 'refusal records are append-only: only those up to the last checkpoint are pruned';
	END IF;
	RETURN OLD;
END
$$;
CREATE TRIGGER refusals_prune_only BEFORE DELETE ON refusals
	FOR EACH ROW EXECUTE FUNCTION vigil_refusals_prune_only();
`,
}

// SchemaVersion is the PostgreSQL schema version this build writes.
var SchemaVersion = len(migrations)

// Migrate brings the database at dsn to SchemaVersion. It holds a session advisory lock
// while it works, so replicas starting together apply each version once: the first applies
// it, the others wait and then find it applied. A database at a newer version than this build
// knows is refused, so that an old replica never writes a schema it does not understand.
func Migrate(ctx context.Context, dsn string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return pgStorage(fmt.Errorf("review store: connect to PostgreSQL: %w", err))
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockMigrate); err != nil {
		return fmt.Errorf("review store: migration lock: %w", err)
	}
	defer c.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, lockMigrate)
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("review store: schema_migrations: %w", err)
	}
	var have int
	if err := c.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("review store: schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("review store: the database's schema is version %d, newer than this vigild's %d: upgrade vigild", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			return fmt.Errorf("review store: migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("review store: migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("review store: migration %d: %w", v, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("review store: migration %d: %w", v, err)
		}
	}
	return nil
}
