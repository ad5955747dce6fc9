package vigilv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the Go code from the .proto files with the pinned
// plugins in ./bin and fails when it differs from what is committed: edit the .proto, run
// `make proto`, commit both.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		if _, err := os.Stat(filepath.Join(root, "bin", plugin)); err != nil {
			t.Fatalf("%s is not in ./bin: run `make deps` (%v)", plugin, err)
		}
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatalf("protoc is not on PATH: run `make deps` (apt-get install protobuf-compiler libprotobuf-dev)")
	}
	protos, err := filepath.Glob(filepath.Join(root, "proto/vigil/v1/*.proto"))
	if err != nil || len(protos) == 0 {
		t.Fatalf("no .proto files found (%v)", err)
	}
	out := t.TempDir()
	args := []string{"-I", filepath.Join(root, "proto"), "-I", "/usr/include",
		"--go_out=" + out, "--go_opt=paths=source_relative",
		"--go-grpc_out=" + out, "--go-grpc_opt=paths=source_relative"}
	cmd := exec.Command("protoc", append(args, protos...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, msg)
	}
	generated, err := filepath.Glob(filepath.Join(out, "vigil/v1/*.go"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("protoc generated nothing (%v)", err)
	}
	committed, _ := filepath.Glob(filepath.Join(root, "proto/vigil/v1/*.pb.go"))
	if len(committed) != len(generated) {
		t.Errorf("got %d committed .pb.go files, regeneration gives %d: run `make proto`", len(committed), len(generated))
	}
	for _, g := range generated {
		want, _ := os.ReadFile(g)
		name := filepath.Base(g)
		got, err := os.ReadFile(filepath.Join(root, "proto/vigil/v1", name))
		if err != nil {
			t.Errorf("%s: not committed: run `make proto`", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what `make proto` generates: run `make proto` and commit", name)
		}
	}
}
