//go:build !linux

package server

// backgroundThread does nothing where thread priorities are not set per thread.
func backgroundThread() {}
