package fileperm

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPrivateAndTighten(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644) // whatever the test's umask
	Private()
	made := filepath.Join(dir, "made")
	if err := os.WriteFile(made, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(made); st.Mode().Perm() != 0o600 {
		t.Errorf("a file created 0666 after Private is %v, want 0600", st.Mode().Perm())
	}
	changed, err := Tighten(open, made, filepath.Join(dir, "absent"))
	if err != nil || len(changed) != 1 || changed[0] != open {
		t.Fatalf("Tighten changed %v, %v; want only %s", changed, err, open)
	}
	if st, _ := os.Stat(open); st.Mode().Perm() != 0o600 {
		t.Errorf("after Tighten: %v, want 0600", st.Mode().Perm())
	}
}
