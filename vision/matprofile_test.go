//go:build matprofile

package vision

import (
	"os"
	"testing"

	"gocv.io/x/gocv"
)

// With -tags matprofile, gocv counts live Mats: every test must leave none behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := gocv.MatProfile.Count(); n != 0 {
		os.Stderr.WriteString("FAIL: OpenCV Mats leaked, created at:\n")
		gocv.MatProfile.WriteTo(os.Stderr, 1)
		code = 1
	}
	os.Exit(code)
}
