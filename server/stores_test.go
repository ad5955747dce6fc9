package server

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/vigil-health/vigil/internal/pgtest"
	"github.com/vigil-health/vigil/review"
)

// The Review service's tests run on both stores: SQLite (startServer's own) and a real
// PostgreSQL, started once for the package at first use.

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pgtest.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// forEachStore runs test on SQLite and on PostgreSQL; store is the option that gives the
// server the store of the run.
func forEachStore(t *testing.T, test func(t *testing.T, store func(*Options))) {
	t.Run("sqlite", func(t *testing.T) { test(t, func(*Options) {}) })
	t.Run("postgres", func(t *testing.T) {
		url, err := pgtest.NewSharedDatabase("server")
		if err != nil {
			t.Fatal(err)
		}
		s, err := review.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		test(t, func(o *Options) { o.Review = s })
	})
}
