package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestFindingTextIsTerminalSafe: header values and a comment carrying escape sequences (clear
// the screen, set the window title), a carriage return and a new line that forges a line print
// as visible escapes; the output holds no control byte but its own new lines, and exactly
// the lines printFinding writes.
func TestFindingTextIsTerminalSafe(t *testing.T) {
	hostile := "Doe^Jane\x1b[2J\x1b]0;pwned\x07\r\n  ACCEPTED by chief at 09:00 \u202eevil\xff"
	f := findingJSON{ID: "f-1", Label: "lesion\x1b[31m", Pipeline: "triage",
		Patient:  &patientJSON{Name: hostile, ID: "ID\u009b2J", BirthDate: "19700101", Sex: "F"},
		Study:    &studyJSON{Date: "20261205", AccessionNumber: "A\n1", Description: hostile},
		Evidence: []string{"evidence\x1bc"},
		Decision: &decisionJSON{Outcome: "rejected", Reviewer: "dr\x1b[8m", Comment: hostile, ReasonCode: "other"},
	}
	var out bytes.Buffer
	printFinding(&out, f)
	text := out.String()
	for i := 0; i < len(text); i++ {
		if c := text[i]; (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("control byte %#x at %d in:\n%s", c, i, text)
		}
	}
	for _, bad := range []string{"\u202e", "\xff", "\u009b"} {
		if strings.Contains(text, bad) {
			t.Errorf("output holds %q:\n%s", bad, text)
		}
	}
	if got := strings.Count(text, "\n"); got != 7 {
		t.Errorf("%d lines, want 7 (a forged line got through?):\n%s", got, text)
	}
	for _, want := range []string{`Doe^Jane\x1b[2J\x1b]0;pwned\a\r\n`, `\u202eevil\xff`, `ID\u009b2J`, `A\n1`} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks the escaped %s:\n%s", want, text)
		}
	}
}

func TestTerminalSafeLeavesTextAlone(t *testing.T) {
	for _, s := range []string{"", "Müller^Anna", "胎儿头围", `C:\scans`, "plain text, 12.5 mm"} {
		if got := tt(s); got != s {
			t.Errorf("tt(%q) = %q, want it unchanged", s, got)
		}
	}
}
