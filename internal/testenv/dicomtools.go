package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

// Dciodvfy checks a DICOM file against its IOD with dicom3tools and fails the test for every
// error it reports, and when it exits with a failure. Warnings are logged.
func Dciodvfy(t testing.TB, path string) {
	t.Helper()
	if _, err := exec.LookPath("dciodvfy"); err != nil {
		t.Fatal("dciodvfy is not installed: run `make deps` (Debian package dicom3tools)")
	}
	out, err := exec.Command("dciodvfy", path).CombinedOutput()
	t.Logf("dciodvfy %s:\n%s", path, out)
	// It exits 0 with warnings; anything else (an abort, a file it cannot read) fails.
	if err != nil {
		t.Errorf("dciodvfy %s: %v", path, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Error") {
			t.Errorf("dciodvfy: %s", line)
		}
	}
}

// Dsrdump returns dcmtk's rendering of a structured report, with every code and referenced
// SOP Instance UID printed.
func Dsrdump(t testing.TB, path string) string {
	t.Helper()
	if _, err := exec.LookPath("dsrdump"); err != nil {
		t.Fatal("dsrdump is not installed: run `make deps` (Debian package dcmtk)")
	}
	out, err := exec.Command("dsrdump", "-Ee", "+Pu", "+Pc", "+Pl", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dsrdump %s: %v\n%s", path, err, out)
	}
	return string(out)
}
