// Package panics turns a panic on a worker goroutine into an error. The gRPC interceptors
// recover panics on a handler's own goroutine; a goroutine that a handler starts (a chunk
// pump, a frame decoder, a pose worker) is outside them, and a panic there would end the whole
// process, for every user. Each such goroutine runs its work through Catch, and the handler
// ends its one call with the error.
package panics

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// Error is a recovered panic: the value and the goroutine's stack (code, never request data).
type Error struct {
	Site  string
	Value any
	Stack []byte
}

func (e *Error) Error() string { return fmt.Sprintf("panic in %s: %v", e.Site, e.Value) }

// Catch runs fn on the calling goroutine and returns its error, or the panic it raised as an
// *Error. site names the goroutine's kind for the log.
func Catch(site string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Site: site, Value: r, Stack: debug.Stack()}
		}
	}()
	if injected(site) {
		panic("injected by a test")
	}
	return fn()
}

// sites holds the sites at which Catch panics on purpose: tests use it to prove that each
// kind of worker goroutine is covered, through the real server.
var (
	sitesMu sync.Mutex
	sites   = map[string]bool{}
)

// InjectForTest makes every Catch at site panic before it runs its function, until the
// returned function is called. Only tests call it.
func InjectForTest(site string) (restore func()) {
	sitesMu.Lock()
	sites[site] = true
	sitesMu.Unlock()
	return func() {
		sitesMu.Lock()
		delete(sites, site)
		sitesMu.Unlock()
	}
}

func injected(site string) bool {
	sitesMu.Lock()
	defer sitesMu.Unlock()
	return len(sites) > 0 && sites[site]
}
