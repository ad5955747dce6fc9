// Package fileperm keeps the files Vigil writes (the store, its backups, SR exports, overlays,
// tokens) readable by the user that runs it alone: they hold patient data or credentials.
package fileperm

import (
	"errors"
	"io/fs"
	"os"
)

// Private makes every file and folder this process creates from now on private to its user
// (umask 077), whatever mode the code or a library (SQLite) asks for.
func Private() { setUmask(0o077) }

// Tighten takes group and other permissions off those of paths that exist, and returns the
// ones it changed: files left readable by an earlier version or by hand.
func Tighten(paths ...string) (changed []string, err error) {
	for _, p := range paths {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return changed, err
		}
		if st.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(p, st.Mode().Perm()&^0o077); err != nil {
			return changed, err
		}
		changed = append(changed, p)
	}
	return changed, nil
}
