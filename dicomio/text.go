package dicomio

import (
	"fmt"
	"unicode/utf8"
)

// CheckText says what keeps s from being written as a value of vr (LO, SH, LT, ST or UT) in
// a file whose Specific Character Set is ISO_IR 192 (UTF-8), as Vigil's reports are: not
// UTF-8, a control character the VR does not allow (only the text VRs LT, ST and UT allow
// LF, FF and CR; dciodvfy refuses TAB), a backslash in a VR where it separates values, or more
// bytes than the VR holds. The error describes the value without repeating it.
func CheckText(vr, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not UTF-8")
	}
	text := vr == "LT" || vr == "ST" || vr == "UT"
	n := 0
	for _, r := range s {
		n++
		switch {
		case r == '\n' || r == '\f' || r == '\r':
			if !text {
				return fmt.Errorf("has a line break at character %d, which %s does not allow", n, vr)
			}
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("has a control character (U+%04X) at character %d", r, n)
		case r == '\\' && !text:
			return fmt.Errorf("has a backslash at character %d, which separates values in %s", n, vr)
		}
	}
	if limit, ok := maxBytes[vr]; ok && len(s) > limit {
		return fmt.Errorf("has %d bytes (%d characters), more than %s holds (%d bytes)", len(s), n, vr, limit)
	}
	return nil
}
