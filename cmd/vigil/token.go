package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vigil-health/vigil/auth"
)

// runToken manages the tokens file directly (no server needed): the server re-reads the file
// when it changes, so a new token works at once.
func runToken(g *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add" {
		return usageError{"usage: vigil token add --data-dir DIR --role ROLE --principal NAME"}
	}
	fs := flag.NewFlagSet("token add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("VIGIL_DATA_DIR", "data"), "the server's data folder (also VIGIL_DATA_DIR)")
	tokensFile := fs.String("tokens-file", os.Getenv("VIGIL_TOKENS_FILE"), "tokens file (default <data-dir>/tokens.json; also VIGIL_TOKENS_FILE)")
	role := fs.String("role", "", fmt.Sprintf("one of %v", auth.Roles))
	principal := fs.String("principal", "", "who the token is for, such as a user or a host name")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *role == "" || *principal == "" {
		return usageError{"--role and --principal are required"}
	}
	path := *tokensFile
	if path == "" {
		path = filepath.Join(*dataDir, "tokens.json")
	}
	token, err := auth.AddToken(path, auth.Role(*role), *principal)
	if err != nil {
		return usageError{err.Error()}
	}
	fmt.Fprintln(stdout, token)
	fmt.Fprintf(stderr, "token for %s (%s) added to %s; it is shown only now\n", *principal, *role, path)
	return nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
