package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/testenv"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
	"github.com/vigil-health/vigil/vision"
)

// dialAs connects to a daemon with a bearer token.
func dialAs(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer{token: token}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// phantomFiles writes n distinct phantom loops.
func phantomFiles(t *testing.T, seed uint64, n int) []string {
	t.Helper()
	dir := t.TempDir()
	files := make([]string, n)
	for i := range files {
		p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: seed + uint64(i), Rows: 240, Cols: 320, Frames: 4, Lesions: 1})
		data, err := dicomio.PhantomDICOM(&p)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		os.WriteFile(files[i], data, 0o644)
	}
	return files
}

// TestKill9UnderLoad kills vigild with SIGKILL while PACS workers upload, cameras stream and
// reviewers decide, all at once. After a restart, every analysis and decision acknowledged
// before the kill is there as acknowledged, and the audit chain holds.
func TestKill9UnderLoad(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 800)
	d := startDaemonIn(t, dataDir, vigild)
	pacs := dialAs(t, d.grpc, addToken(t, dataDir, "pacs-worker", "pacs-load"))
	reviewer := dialAs(t, d.grpc, addToken(t, dataDir, "reviewer", "dr.load"))
	bridge := dialAs(t, d.grpc, addToken(t, dataDir, "ward-bridge", "bridge-load"))
	files := phantomFiles(t, 880000, 60)
	frames := walkersJPEGs(t, 40)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var mu sync.Mutex
	analysed := map[string][]string{} // SOP Instance UID -> finding IDs, as acknowledged
	decided := map[string]vigilv1.FindingState{}
	wardFrames := 0
	var wg sync.WaitGroup
	g := &globals{timeout: 60 * time.Second}
	for w := range 3 { // PACS workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(files) && ctx.Err() == nil; i += 3 {
				resp, err := analyzeFile(g, vigilv1.NewImagingClient(pacs), files[i], "us-lesion-demo", false)
				if err != nil {
					return
				}
				mu.Lock()
				for _, f := range resp.Findings {
					analysed[resp.Source.SopInstanceUid] = append(analysed[resp.Source.SopInstanceUid], f.Id)
				}
				if len(resp.Findings) == 0 {
					analysed[resp.Source.SopInstanceUid] = nil
				}
				mu.Unlock()
			}
		}()
	}
	for w := range 2 { // reviewers
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := vigilv1.NewReviewClient(reviewer)
			for i := w; i < len(seeded) && ctx.Err() == nil; i += 2 {
				resp, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[i].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
				if err != nil {
					return
				}
				mu.Lock()
				decided[seeded[i].ID] = resp.Finding.State
				mu.Unlock()
			}
		}()
	}
	for c := range 2 { // cameras
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := vigilv1.NewWardClient(bridge).StreamCamera(ctx)
			if err != nil {
				return
			}
			stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Config{Config: &vigilv1.StreamConfig{
				CameraId: fmt.Sprintf("load-%d", c), FrameRate: 10, Policy: vigilv1.FramePolicy_FRAME_POLICY_REALTIME}}})
			go func() {
				for {
					if _, err := stream.Recv(); err != nil {
						return
					}
					mu.Lock()
					wardFrames++
					mu.Unlock()
				}
			}()
			for i := 0; ctx.Err() == nil; i++ {
				if stream.Send(&vigilv1.WardRequest{Message: &vigilv1.WardRequest_Frame{Frame: &vigilv1.Frame{Sequence: int64(i + 1),
					Encoding: vigilv1.FrameEncoding_FRAME_ENCODING_JPEG, Data: frames[i%len(frames)]}}}) != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	// Kill once every kind of load has had acknowledgements.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		ready := len(analysed) >= 5 && len(decided) >= 40 && wardFrames >= 10
		counts := fmt.Sprintf("%d analyses, %d decisions, %d ward events", len(analysed), len(decided), wardFrames)
		mu.Unlock()
		if ready {
			t.Logf("kill -9 under load after %s", counts)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load never got going: %s", counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	stop()
	wg.Wait()
	if len(analysed) >= len(files) || len(decided) >= len(seeded) {
		t.Fatal("the load finished before the kill; the test proves nothing")
	}

	d2 := startDaemonIn(t, dataDir, vigild)
	reader := dialAs(t, d2.grpc, addToken(t, dataDir, "reviewer", "dr.after"))
	rc := vigilv1.NewReviewClient(reader)
	for id, state := range decided {
		got, err := rc.Get(context.Background(), &vigilv1.GetRequest{Id: id})
		if err != nil || got.Finding.State != state {
			t.Errorf("decision on %s: after restart %v %v, acknowledged %v", id, got.GetFinding().GetState(), err, state)
		}
	}
	for sop, ids := range analysed {
		for _, id := range ids {
			got, err := rc.Get(context.Background(), &vigilv1.GetRequest{Id: id})
			if err != nil || got.Finding.GetDicom().GetSopInstanceUid() != sop {
				t.Errorf("finding %s of %s: after restart %v", id, sop, err)
			}
		}
	}
	if out, errOut, code := cli(t, "audit", "verify", "--data-dir", dataDir); code != 0 || !strings.Contains(out, "holds") {
		t.Errorf("audit verify after kill -9: exit %d: %s %s", code, out, errOut)
	}
}

// walkersJPEGs returns the first n frames of the shared walkers clip as JPEG.
func walkersJPEGs(t *testing.T, n int) [][]byte {
	t.Helper()
	v, err := vision.OpenVideo(testenv.Shared(t, "video/walkers-vtest.avi"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out [][]byte
	for len(out) < n {
		f, err := v.Read()
		if err != nil {
			t.Fatal(err)
		}
		jpg, err := vision.EncodeJPEG(f, 85)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, jpg)
	}
	return out
}

// smallDisk mounts a tmpfs of the given size on a new folder for the test: a disk the test
// can fill and remount read-only. It needs root, which make test has on the CI machine.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs to fill it: run it as root (the CI machine does)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file until the disk has no room left, and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			break
		}
	}
	for { // the last blocks, byte by byte
		if _, err := f.Write(block[:512]); err != nil {
			break
		}
	}
	return path
}

// TestFullDisk runs vigild on a small disk that fills up: writes are refused with a code that
// says so, reads go on, and once space is back the server writes again without a restart.
// Nothing acknowledged is missing.
func TestFullDisk(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := smallDisk(t, "24m")
	seeded := seedStore(t, dataDir, 40)
	reviewerToken := addToken(t, dataDir, "reviewer", "dr.disk")
	pacsToken := addToken(t, dataDir, "pacs-worker", "pacs-disk")
	d := startDaemonIn(t, dataDir, vigild)
	rc := vigilv1.NewReviewClient(dialAs(t, d.grpc, reviewerToken))
	imaging := vigilv1.NewImagingClient(dialAs(t, d.grpc, pacsToken))
	files := phantomFiles(t, 881000, 4)
	g := &globals{timeout: 60 * time.Second}
	ctx := context.Background()
	acked := map[string]vigilv1.FindingState{}
	decide := func(i int) error {
		resp, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[i].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
		if err == nil {
			acked[seeded[i].ID] = resp.Finding.State
		}
		return err
	}
	if err := decide(0); err != nil {
		t.Fatal(err)
	}

	filler := fill(t, dataDir)
	// The WAL may still have room in pages it already holds: write until the disk says no.
	var err error
	i := 1
	for ; i < 30; i++ {
		if err = decide(i); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("a decision on a full disk: got %v, want ResourceExhausted saying the disk is full", err)
	}
	if _, err := analyzeFile(g, imaging, files[0], "us-lesion-demo", false); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("an analysis on a full disk: got %v, want ResourceExhausted", err)
	}
	if list, err := rc.List(ctx, &vigilv1.ListRequest{PageSize: 100}); err != nil || len(list.Findings) == 0 {
		t.Errorf("reading the worklist on a full disk: %v", err)
	}
	os.Remove(filler)
	if err := decide(i); err != nil {
		t.Errorf("a decision once space is back, without a restart: %v", err)
	}
	if _, err := analyzeFile(g, imaging, files[1], "us-lesion-demo", false); err != nil {
		t.Errorf("an analysis once space is back: %v", err)
	}

	for id, state := range acked {
		got, err := rc.Get(ctx, &vigilv1.GetRequest{Id: id})
		if err != nil || got.Finding.State != state {
			t.Errorf("acknowledged decision on %s: now %v, %v", id, got.GetFinding().GetState(), err)
		}
	}
	if out, errOut, code := cli(t, "audit", "verify", "--data-dir", dataDir); code != 0 {
		t.Errorf("audit verify after the faults: exit %d: %s %s", code, out, errOut)
	}
	if !strings.Contains(d.logs(), "disk is full") {
		t.Errorf("the server log does not say the disk was full")
	}
}

// ext4Disk makes an ext4 file system in a file, mounted through a loop device with
// errors=remount-ro, as a server's data disk is. It returns the mount point and a function
// that makes the file system fail as a failing disk does: ext4 records an error and turns
// read-only.
func ext4Disk(t *testing.T) (string, func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts an ext4 file system on a loop device: run it as root (the CI machine does)")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, cmd := range [][]string{{"mkfs.ext4", "-q", img}, {"mount", "-o", "loop,errors=remount-ro", img, dir}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Base(strings.TrimSpace(string(out)))
	return dir, func() {
		if err := os.WriteFile("/sys/fs/ext4/"+dev+"/trigger_fs_error", []byte("1"), 0o200); err != nil {
			t.Fatalf("ext4 error trigger: %v", err)
		}
	}
}

// TestStoreTurnsReadOnly runs vigild on an ext4 disk that fails and turns read-only under it:
// writes are refused with Unavailable saying the store cannot be written, reads and the
// server go on, and every decision acknowledged before is there.
func TestStoreTurnsReadOnly(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir, fail := ext4Disk(t)
	seeded := seedStore(t, dataDir, 20)
	d := startDaemonIn(t, dataDir, vigild)
	rc := vigilv1.NewReviewClient(dialAs(t, d.grpc, addToken(t, dataDir, "reviewer", "dr.ro")))
	ctx := context.Background()
	acked := map[string]vigilv1.FindingState{}
	for i := range 5 {
		resp, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[i].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
		if err != nil {
			t.Fatal(err)
		}
		acked[seeded[i].ID] = resp.Finding.State
	}
	fail()
	_, err := rc.Decide(ctx, &vigilv1.DecideRequest{Id: seeded[10].ID, Version: 1, Outcome: vigilv1.Outcome_OUTCOME_ACCEPT})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "cannot be written") {
		t.Errorf("a decision on a read-only store: got %v, want Unavailable saying it cannot be written", err)
	}
	for id, state := range acked {
		got, err := rc.Get(ctx, &vigilv1.GetRequest{Id: id})
		if err != nil || got.Finding.State != state {
			t.Errorf("acknowledged decision on %s, read on the read-only store: %v, %v", id, got.GetFinding().GetState(), err)
		}
	}
	if list, err := rc.List(ctx, &vigilv1.ListRequest{PageSize: 100}); err != nil || len(list.Findings) != 20 {
		t.Errorf("the worklist on the read-only store: %d findings, %v; want all 20", len(list.GetFindings()), err)
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "health"); code != 0 {
		t.Errorf("health on a read-only store: %s", errOut)
	}
}
