package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vigil-health/vigil/review"
)

// storeFlags are the flags of the commands that work on the store itself, beside a running
// server or without one: the SQLite file in the data folder, or the PostgreSQL database.
func storeFlags(name string, stderr io.Writer) (fs *flag.FlagSet, dataDir, store *string) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir = fs.String("data-dir", envOr("VIGIL_DATA_DIR", "data"), "the server's data folder (also VIGIL_DATA_DIR)")
	store = fs.String("store", os.Getenv("VIGIL_STORE"), "the server's PostgreSQL store, postgres://USER@HOST:PORT/DB (also VIGIL_STORE); empty: the SQLite file in --data-dir")
	return fs, dataDir, store
}

// runMigrate brings a PostgreSQL store's schema to this build's version. vigild does the same
// at start; this is for an operator who wants it done before replicas roll out.
func runMigrate(_ *globals, args []string, stdout, stderr io.Writer) error {
	fs, _, store := storeFlags("migrate", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !review.IsPostgresURL(*store) {
		return usageError{"usage: vigil migrate --store postgres://USER@HOST:PORT/DB (a SQLite store is brought up to date when vigild opens it)"}
	}
	if err := review.Migrate(context.Background(), *store); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema at version %d\n", review.SchemaVersion)
	return nil
}

// runAudit verifies the audit's hash chain: exit 0 when it holds, 1 naming the first record
// that does not follow.
func runAudit(_ *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError{"usage: vigil audit verify --data-dir DIR"}
	}
	fs, dataDir, store := storeFlags("audit verify", stderr)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	where := filepath.Join(*dataDir, review.SQLiteFile)
	if *store != "" {
		where = *store
	}
	rep, err := verifyStore(where)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "audit chain holds: %d audit records (head %s), %d refusals (head %s)",
		rep.AuditRecords, short(rep.AuditHead), rep.Refusals, short(rep.RefusalHead))
	if rep.RefusalsPruned > 0 {
		fmt.Fprintf(stdout, ", verified from the retention's checkpoint after record %d", rep.RefusalsPruned)
	}
	fmt.Fprintln(stdout)
	return nil
}

// verifyStore walks the chains of the SQLite file at path, or of the PostgreSQL database a
// postgres:// URL names.
func verifyStore(path string) (review.ChainReport, error) {
	var s interface {
		VerifyChains(context.Context) (review.ChainReport, error)
		Close() error
	}
	var err error
	if review.IsPostgresURL(path) {
		s, err = review.ConnectPostgres(context.Background(), path)
	} else {
		s, err = review.OpenSQLiteReadOnly(path)
	}
	if err != nil {
		return review.ChainReport{}, err
	}
	defer s.Close()
	rep, err := s.VerifyChains(context.Background())
	if ce := (*review.ChainError)(nil); errors.As(err, &ce) {
		return rep, fmt.Errorf("the audit chain is broken at %s", ce)
	}
	return rep, err
}

func short(h string) string {
	if h == "" {
		return "none"
	}
	return h[:16]
}

// runBackup copies the store, consistently, while the server writes, and checks the copy.
func runBackup(_ *globals, args []string, stdout, stderr io.Writer) error {
	fs, dataDir, store := storeFlags("backup", stderr)
	out := fs.String("out", "", "the copy to write (must not exist), and FILE"+tokensSuffix+" beside it; restore both with vigil restore")
	tokensFile := fs.String("tokens-file", os.Getenv("VIGIL_TOKENS_FILE"), "the server's tokens file (default <data-dir>/tokens.json; also VIGIL_TOKENS_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"usage: vigil backup --data-dir DIR --out FILE"}
	}
	if *store != "" {
		return usageError{"vigil backup copies a SQLite store; back a PostgreSQL store up with pg_dump (or the database's own backups), then check the restored copy with vigil audit verify --store; copy the tokens file apart"}
	}
	if *tokensFile == "" {
		*tokensFile = filepath.Join(*dataDir, "tokens.json")
	}
	s, err := review.OpenSQLiteReadOnly(filepath.Join(*dataDir, review.SQLiteFile))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Backup(context.Background(), *out); err != nil {
		return err
	}
	rep, err := verifyStore(*out)
	if err != nil {
		return fmt.Errorf("the copy in %s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "backup written to %s: %d audit records (head %s), %d refusals; its chain holds\n",
		*out, rep.AuditRecords, short(rep.AuditHead), rep.Refusals)
	// Without its tokens and revocations, a restored server would refuse every caller, and a
	// revoked principal's certificate would work again.
	switch err := copyNew(*tokensFile, *out+tokensSuffix); {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stdout, "no tokens file at %s: none copied\n", *tokensFile)
	case err != nil:
		return fmt.Errorf("tokens: %w", err)
	default:
		fmt.Fprintf(stdout, "tokens and revocations written to %s\n", *out+tokensSuffix)
	}
	return nil
}

// tokensSuffix names a backup's copy of the tokens file.
const tokensSuffix = ".tokens.json"

// runRestore puts a backup (the store and its tokens) into an empty data folder.
func runRestore(_ *globals, args []string, stdout, stderr io.Writer) error {
	fs, dataDir, _ := storeFlags("restore", stderr)
	from := fs.String("from", "", "the backup vigil backup wrote (FILE, and FILE"+tokensSuffix+" when there were tokens)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" {
		return usageError{"usage: vigil restore --from FILE --data-dir DIR (a folder with no store in it)"}
	}
	if _, err := verifyStore(*from); err != nil {
		return fmt.Errorf("the backup %s: %w", *from, err)
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	db := filepath.Join(*dataDir, review.SQLiteFile)
	if err := copyNew(*from, db); err != nil {
		return fmt.Errorf("restore the store: %w (restore into a folder with no %s)", err, review.SQLiteFile)
	}
	fmt.Fprintf(stdout, "store restored to %s\n", db)
	switch err := copyNew(*from+tokensSuffix, filepath.Join(*dataDir, "tokens.json")); {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(stdout, "the backup has no tokens: add them with vigil token add\n")
	case err != nil:
		return fmt.Errorf("restore the tokens: %w", err)
	default:
		fmt.Fprintf(stdout, "tokens and revocations restored to %s\n", filepath.Join(*dataDir, "tokens.json"))
	}
	return nil
}

// copyNew copies src to dst, which must not exist, private to this user, synced.
func copyNew(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
