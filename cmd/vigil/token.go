package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/vigil-health/vigil/auth"
)

const tokenUsage = `usage:
  vigil token add --data-dir DIR --role ROLE --principal NAME [--expires 24h]
  vigil token list --data-dir DIR [--json]
  vigil token revoke --data-dir DIR --principal NAME`

// runToken manages the tokens file directly (no server needed): the server re-reads the file
// when it changes, so a new token works at once and a revoked one stops within a second or two.
func runToken(_ *globals, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{tokenUsage}
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("VIGIL_DATA_DIR", "data"), "the server's data folder (also VIGIL_DATA_DIR)")
	tokensFile := fs.String("tokens-file", os.Getenv("VIGIL_TOKENS_FILE"), "tokens file (default <data-dir>/tokens.json; also VIGIL_TOKENS_FILE)")
	path := func() string {
		if *tokensFile != "" {
			return *tokensFile
		}
		return filepath.Join(*dataDir, "tokens.json")
	}
	switch args[0] {
	case "add":
		role := fs.String("role", "", fmt.Sprintf("one of %v", auth.Roles))
		principal := fs.String("principal", "", "who the token is for, such as a user or a host name (one token per name)")
		expires := fs.Duration("expires", 0, "the token stops working after this long, such as 24h (default: never)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *role == "" || *principal == "" {
			return usageError{"--role and --principal are required"}
		}
		if *expires < 0 {
			return usageError{"--expires must be positive"}
		}
		var until time.Time
		if *expires > 0 {
			until = time.Now().Add(*expires)
		}
		token, err := auth.AddTokenUntil(path(), auth.Role(*role), *principal, until)
		if err != nil {
			return usageError{err.Error()}
		}
		fmt.Fprintln(stdout, token)
		when := "it does not expire"
		if !until.IsZero() {
			when = "it expires at " + until.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stderr, "token for %s (%s) added to %s; %s; it is shown only now\n", *principal, *role, path(), when)
		return nil
	case "list":
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		tokens, err := auth.ListTokens(path(), time.Now())
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"tokens": tokens})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PRINCIPAL\tROLE\tCREATED\tEXPIRES")
		for _, t := range tokens {
			exp := "never"
			if t.Expires != nil {
				exp = t.Expires.UTC().Format(time.RFC3339)
				if t.Expired {
					exp += " (expired)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Principal, t.Role, t.Created.UTC().Format(time.RFC3339), exp)
		}
		return tw.Flush()
	case "revoke":
		principal := fs.String("principal", "", "whose token to revoke; a client certificate in this name is refused too")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *principal == "" {
			return usageError{"--principal is required"}
		}
		n, err := auth.Revoke(path(), *principal)
		if err != nil {
			return usageError{err.Error()}
		}
		fmt.Fprintf(stdout, "revoked %s: %d token(s) removed; its open streams end and client certificates in its name are refused\n", *principal, n)
		return nil
	}
	return usageError{tokenUsage}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
