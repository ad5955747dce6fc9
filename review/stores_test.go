package review

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/pgtest"
)

// The review suite runs every test of the Store against both stores: SQLite in a temporary
// file, and a real PostgreSQL (Debian's postgresql-15, started once for the package on a
// loopback port) with a new database per test.

var ctx = context.Background()

// testStore is a Store with what the tests reach past the interface for.
type testStore interface {
	Store
	SetClock(func() time.Time)
	VerifyChains(ctx context.Context) (ChainReport, error)
	raw(q string) error
}

func (s *sqlStore) raw(q string) error {
	_, err := s.write.db.ExecContext(ctx, q)
	return err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pgtest.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// postgresURL is a new empty database on the package's PostgreSQL, started at first use.
func postgresURL(t testing.TB) string {
	t.Helper()
	url, err := pgtest.NewSharedDatabase("review")
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// forEachStore runs test once on SQLite and once on PostgreSQL. reopen closes the store and
// opens it again from what it wrote.
func forEachStore(t *testing.T, test func(t *testing.T, s testStore, reopen func() testStore)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "vigil.db")
		open := func() testStore {
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		s := open()
		test(t, s, func() testStore { s.Close(); return open() })
	})
	t.Run("postgres", func(t *testing.T) {
		url := postgresURL(t)
		open := func() testStore {
			s, err := OpenPostgres(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		s := open()
		test(t, s, func() testStore { s.Close(); return open() })
	})
}

// openStore is a SQLite store in a temporary file, for what only SQLite has (its file, its
// backup).
func openStore(t testing.TB) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vigil.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}
