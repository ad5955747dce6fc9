//go:build unix

package fileperm

import "syscall"

func setUmask(mask int) { syscall.Umask(mask) }
