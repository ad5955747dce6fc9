// Package leakcheck fails a test binary whose tests leave ONNX Runtime handles behind. (The
// inference package checks its own tests itself: it cannot import this package.)
package leakcheck

import (
	"fmt"
	"os"
	"testing"

	"github.com/vigil-health/vigil/inference"
)

// Run runs a package's tests and fails the run when any native handle outlives them.
func Run(m *testing.M) {
	code := m.Run()
	if n := inference.LiveHandles(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d ONNX Runtime handles leaked (created and never destroyed)\n", n)
		code = 1
	}
	os.Exit(code)
}
