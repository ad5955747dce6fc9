package testenv

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNativeLibrariesHaveOneOwner keeps native code in one package each: only inference/
// imports onnxruntime_go, only vision/ imports gocv (tests included), and no package but
// server/ imports gRPC's status codes among the domain packages.
func TestNativeLibrariesHaveOneOwner(t *testing.T) {
	owners := map[string]string{
		"github.com/yalue/onnxruntime_go": "inference",
		"gocv.io/x/gocv":                  "vision",
	}
	domain := []string{"inference", "models", "vision", "auth", "dicomio", "pipelines", "review"}
	root := RepoRoot()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".deps" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if owner, ok := owners[p]; ok && top != owner {
				t.Errorf("%s imports %s; only %s/ may", rel, p, owner)
			}
			if p == "google.golang.org/grpc/codes" || p == "google.golang.org/grpc/status" {
				for _, pkg := range domain {
					if top == pkg {
						t.Errorf("%s imports %s; domain packages return errors and server/ maps them", rel, p)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
