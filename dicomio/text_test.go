package dicomio

import (
	"strings"
	"testing"
)

func TestCheckText(t *testing.T) {
	for _, tc := range []struct {
		vr, s, want string // want: part of the error, "" for none
	}{
		{"LO", "simple cyst", ""},
		{"LO", strings.Repeat("é", 32), ""},
		{"LO", strings.Repeat("é", 33), "66 bytes (33 characters), more than LO holds (64 bytes)"},
		{"LO", "cyst\\fibroadenoma", "backslash at character 5"},
		{"LO", "cyst\nsecond line", "line break"},
		{"PN", strings.Repeat("é", 200), "400 bytes"},
		{"UT", "first line\r\nsecond line", ""},
		{"UT", "a\ttab", "control character (U+0009)"},
		{"UT", "a \\ b", ""},
		{"UT", "nul\x00here", "control character (U+0000) at character 4"},
		{"UT", "escape\x1b[31m", "control character (U+001B)"},
		{"LO", string([]byte{0xc3}), "not UTF-8"},
		{"LO", strings.Repeat("é", 32)[:63], "not UTF-8"}, // cut in the middle of a character
	} {
		err := CheckText(tc.vr, tc.s)
		if cut := CutToVR(tc.vr, tc.s); tc.want == "" && cut != tc.s || len(cut) > 64 && tc.vr == "LO" {
			t.Errorf("CutToVR(%s, %q) = %q", tc.vr, tc.s, cut)
		}
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s %q: %v, want %q", tc.vr, tc.s, err, tc.want)
		}
	}
}

func TestCutToVRKeepsWholeCharacters(t *testing.T) {
	for _, tc := range []struct {
		vr, s, want string
	}{
		{"LO", strings.Repeat("é", 40), strings.Repeat("é", 32)},
		{"LO", "a" + strings.Repeat("é", 40), "a" + strings.Repeat("é", 31)},
		{"SH", strings.Repeat("x", 20), strings.Repeat("x", 16)},
		{"UT", strings.Repeat("x", 5000), strings.Repeat("x", 5000)},
	} {
		if got := CutToVR(tc.vr, tc.s); got != tc.want {
			t.Errorf("CutToVR(%s, %d bytes) = %d bytes %q, want %d bytes", tc.vr, len(tc.s), len(got), got, len(tc.want))
		}
	}
}
