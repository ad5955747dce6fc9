package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/vigil-health/vigil/review"
)

// storeFlags are the flags of the commands that work on the store file itself, beside a
// running server or without one.
func storeFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("data-dir", envOr("VIGIL_DATA_DIR", "data"), "the server's data folder (also VIGIL_DATA_DIR)")
}

// runAudit verifies the audit's hash chain: exit 0 when it holds, 1 naming the first record
// that does not follow.
func runAudit(_ *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError{"usage: vigil audit verify --data-dir DIR"}
	}
	fs, dataDir := storeFlags("audit verify", stderr)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	rep, err := verifyStore(filepath.Join(*dataDir, review.SQLiteFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "audit chain holds: %d audit records (head %s), %d refusals (head %s)\n",
		rep.AuditRecords, short(rep.AuditHead), rep.Refusals, short(rep.RefusalHead))
	return nil
}

func verifyStore(path string) (review.ChainReport, error) {
	s, err := review.OpenSQLiteReadOnly(path)
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
	fs, dataDir := storeFlags("backup", stderr)
	out := fs.String("out", "", "the copy to write (must not exist); put it in an empty data folder as "+review.SQLiteFile+" to restore")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"usage: vigil backup --data-dir DIR --out FILE"}
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
	return nil
}
