package main

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"

	"github.com/vigil-health/vigil/review"
)

// watchTail is how many of the newest audit records the change feed keeps for watchers.
const watchTail = 4096

// openStore opens the review store the config names: PostgreSQL for a URL (its schema brought
// up to date first), else SQLite in the data folder. Watchers share one reader of its changes.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (review.Store, error) {
	var store review.Store
	var err error
	if cfg.Store == "" {
		path := filepath.Join(cfg.DataDir, review.SQLiteFile)
		log.Info("review store", slog.String("kind", "sqlite"), slog.String("path", path))
		store, err = review.OpenSQLite(path)
	} else {
		log.Info("review store", slog.String("kind", "postgres"), slog.String("url", redactURL(cfg.Store)),
			slog.Int("schema_version", review.SchemaVersion))
		store, err = review.OpenPostgres(ctx, cfg.Store)
	}
	if err != nil {
		return nil, err
	}
	return review.NewChangeFeed(store, watchTail), nil
}

// redactURL hides a password a URL carries, for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
