//go:build !unix

package fileperm

// setUmask does nothing where there is no umask: there, the folder's access rules decide.
func setUmask(int) {}
