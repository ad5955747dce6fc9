package main

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"

	"github.com/vigil-health/vigil/review"
)

// openStore opens the review store the config names: PostgreSQL for a URL (its schema brought
// up to date first), else SQLite in the data folder.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (review.Store, error) {
	if cfg.Store == "" {
		path := filepath.Join(cfg.DataDir, review.SQLiteFile)
		log.Info("review store", slog.String("kind", "sqlite"), slog.String("path", path))
		return review.OpenSQLite(path)
	}
	log.Info("review store", slog.String("kind", "postgres"), slog.String("url", redactURL(cfg.Store)),
		slog.Int("schema_version", review.SchemaVersion))
	return review.OpenPostgres(ctx, cfg.Store)
}

// redactURL hides a password a URL carries, for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
