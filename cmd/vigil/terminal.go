package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// tt makes a value that came from outside (a DICOM header, an archive, a reviewer's comment)
// safe to print on a terminal: control characters (escape sequences, carriage returns, new
// lines that would forge a line), the C1 controls, the bidirectional overrides and bytes that
// are not UTF-8 are written as Go escapes (\x1b, \n, \u202e). Everything else is left as it is.
func tt(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unsafeRune(r):
			q := fmt.Sprintf("%+q", string(r)) // "\x1b", "\n", "\u202e"
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if unsafeRune(r) {
			return true
		}
	}
	return false
}

// unsafeRune is a rune a terminal may act on rather than show.
func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f
}
