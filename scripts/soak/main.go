// Command soak holds vigild under steady load for several minutes and says whether it stayed
// healthy: ghz sends a bounded count of ultrasound loops to AnalyzeInstance at concurrency 16
// (each a new instance; 8 a second were measured on 2 cores, so --minutes sets the count),
// eight `vigil bridge` processes stream the walkers clip to Ward at once until ghz is done,
// and the server's resident memory is sampled every second. It fails when memory grows (the
// last minute's peak more than 10% over the first minute's after a minute of warm-up) or when
// any call fails with an error other than a limit's own.
//
//	make soak                      # 5 minutes
//	SOAK_MINUTES=10 make soak
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/testenv"
)

func main() {
	bin := flag.String("bin", "bin", "folder with vigild, vigil and ghz")
	minutes := flag.Float64("minutes", 5, "about how long to hold the load: 8 analyses a second are sent, minutes x 480 in all")
	shared := flag.String("shared", testenv.SharedDir(), "the shared data folder, for the walkers clip (also VIGIL_SHARED_DATA)")
	mirror := flag.String("mirror", os.Getenv("VIGIL_MODEL_MIRROR"), "model mirror (default <shared>/models)")
	flag.Parse()
	if err := run(*bin, time.Duration(*minutes*float64(time.Minute)), *shared, *mirror); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

var servingLine = regexp.MustCompile(`msg="vigild serving" grpc=(\S+) http=(\S+)`)

func run(bin string, duration time.Duration, shared, mirror string) error {
	if duration < 3*time.Minute {
		return errors.New("--minutes must be 3 or more: a minute of warm-up, and a first and a last minute to compare")
	}
	if mirror == "" {
		mirror = filepath.Join(shared, "models")
	}
	clip := filepath.Join(shared, "video", "walkers-vtest.avi")
	if _, err := os.Stat(clip); err != nil {
		return fmt.Errorf("the walkers clip: %w (set VIGIL_SHARED_DATA)", err)
	}
	dir, err := os.MkdirTemp("", "vigil-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "data")

	token := func(role, name string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, "vigil"), "token", "add", "--data-dir", dataDir, "--role", role, "--principal", name).Output()
		return strings.TrimSpace(string(out)), err
	}
	pacs, err := token("pacs-worker", "soak-pacs")
	if err != nil {
		return fmt.Errorf("token add: %w", err)
	}
	bridge, err := token("ward-bridge", "soak-bridge")
	if err != nil {
		return fmt.Errorf("token add: %w", err)
	}

	vigild := exec.Command(filepath.Join(bin, "vigild"), "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--model-cache", filepath.Join(dir, "cache"), "--model-mirror", mirror)
	stderr, _ := vigild.StderrPipe()
	if err := vigild.Start(); err != nil {
		return err
	}
	defer func() { vigild.Process.Kill(); vigild.Wait() }()
	addrs := make(chan []string, 1)
	var logMu sync.Mutex
	var serverLog bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			serverLog.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1:]
			}
		}
	}()
	var grpcAddr string
	select {
	case a := <-addrs:
		grpcAddr = a[0]
	case <-time.After(2 * time.Minute):
		return errors.New("vigild did not start")
	}
	fmt.Printf("vigild %d serving on %s; %d analyses at concurrency 16 (about %s) and 8 cameras\n", vigild.Process.Pid, grpcAddr, int(duration.Seconds()*8), duration)

	dataFile := filepath.Join(dir, "ghz-data.json")
	if err := writeGhzData(dataFile); err != nil {
		return err
	}

	// Resident memory, every second.
	var rss []int64
	var rssMu sync.Mutex
	stopSampling := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			if kb, err := residentKB(vigild.Process.Pid); err == nil {
				rssMu.Lock()
				rss = append(rss, kb)
				rssMu.Unlock()
			}
		}
	}()

	// Eight cameras, each streaming the clip in real time, again and again, until ghz is done;
	// then each is stopped as an operator would, with SIGINT.
	ghzDone := make(chan struct{})
	type bridgeResult struct{ runs, failures int }
	results := make([]bridgeResult, 8)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ghzDone:
					return
				default:
				}
				cmd := exec.Command(filepath.Join(bin, "vigil"), "--server", grpcAddr, "--token", bridge, "bridge", "--source", clip,
					"--camera", fmt.Sprintf("soak-%d", i), "--realtime", "--json")
				var errOut bytes.Buffer
				cmd.Stdout, cmd.Stderr = nil, &errOut
				results[i].runs++
				if err := cmd.Start(); err != nil {
					results[i].failures++
					continue
				}
				exited := make(chan error, 1)
				go func() { exited <- cmd.Wait() }()
				var err error
				select {
				case err = <-exited:
				case <-ghzDone:
					cmd.Process.Signal(os.Interrupt)
					if err = <-exited; err != nil && strings.Contains(errOut.String(), "context canceled") {
						err = nil // stopped by the soak, not failed
					}
				}
				if err != nil {
					results[i].failures++
					fmt.Fprintf(os.Stderr, "bridge %d: %v: %s\n", i, err, errOut.String())
				}
			}
		}()
	}

	ghzOut := filepath.Join(dir, "ghz.json")
	ghz := exec.Command(filepath.Join(bin, "ghz"), "--insecure", "--call", "vigil.v1.Imaging/AnalyzeInstance",
		"--data-file", dataFile, "--metadata", `{"authorization":"Bearer `+pacs+`"}`, "--reflect-metadata", `{"authorization":"Bearer `+pacs+`"}`,
		"--concurrency", "16", "--connections", "2", "--total", strconv.Itoa(int(duration.Seconds()*8)), "--timeout", "120s",
		"--format", "json", "--output", ghzOut, grpcAddr)
	ghz.Stderr = os.Stderr
	started := time.Now()
	err = ghz.Run()
	close(stopSampling)
	close(ghzDone)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("ghz: %w", err)
	}
	duration = time.Since(started)

	// The report.
	var rep struct {
		Count   int64   `json:"count"`
		Average int64   `json:"average"`
		Rps     float64 `json:"rps"`
		Latency []struct {
			Percentage int
			Latency    int64
		} `json:"latencyDistribution"`
		StatusCodes map[string]int64 `json:"statusCodeDistribution"`
		ErrorDist   map[string]int64 `json:"errorDistribution"`
	}
	data, err := os.ReadFile(ghzOut)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("ghz report: %w", err)
	}
	fmt.Printf("\nAnalyzeInstance (ghz, concurrency 16, %s): %d calls, %.1f/s\n", duration.Round(time.Second), rep.Count, rep.Rps)
	for _, l := range rep.Latency {
		if slices.Contains([]int{50, 90, 99}, l.Percentage) {
			fmt.Printf("  p%d %s\n", l.Percentage, time.Duration(l.Latency).Round(time.Millisecond))
		}
	}
	failed := false
	for code, n := range rep.StatusCodes {
		fmt.Printf("  %s: %d\n", code, n)
		if code != "OK" && code != "ResourceExhausted" {
			failed = true
		}
	}
	for msg, n := range rep.ErrorDist {
		fmt.Printf("  error %q: %d\n", msg, n)
	}
	runs, failures := 0, 0
	for _, r := range results {
		runs, failures = runs+r.runs, failures+r.failures
	}
	fmt.Printf("Ward: 8 cameras, %d bridge runs, %d failed\n", runs, failures)
	if failures > 0 {
		failed = true
	}
	rssMu.Lock()
	samples := slices.Clone(rss)
	rssMu.Unlock()
	minute := func(from int) int64 {
		var peak int64
		for _, v := range samples[min(from, len(samples)):min(from+60, len(samples))] {
			peak = max(peak, v)
		}
		return peak
	}
	first, last := minute(60), minute(len(samples)-60)
	growth := float64(last)/float64(first) - 1
	fmt.Printf("RSS: start %d MB, first minute after warm-up peak %d MB, last minute peak %d MB (%+.1f%%), %d samples\n",
		samples[0]>>10, first>>10, last>>10, 100*growth, len(samples))
	if growth > 0.10 {
		fmt.Println("FAIL: resident memory grew more than 10%")
		failed = true
	}
	logMu.Lock()
	panics := strings.Count(serverLog.String(), "panicked")
	logMu.Unlock()
	if panics > 0 {
		fmt.Printf("FAIL: the server log has %d panics\n", panics)
		failed = true
	}
	if failed {
		return errors.New("the soak failed (see above)")
	}
	fmt.Println("soak: passed")
	return nil
}

// placeholderUID is the SOP Instance UID the template file carries; ghz writes each call's
// own in its place, of the same length.
const placeholderUID = "1.2.826.0.1.3680043.10.1111.000000000000"

// writeGhzData writes a client stream for ghz: a phantom loop in chunks, with its SOP Instance
// UID (in the file meta and the data set) templated on the request number, so that every call
// is a new instance for the pipeline, not a stored result.
func writeGhzData(path string) error {
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 4242, Rows: 240, Cols: 320, Frames: 6, Lesions: 1})
	t := p.Truth
	u := dicomio.GreyUltrasound{Width: t.Cols, Height: t.Rows, Frames: p.Frames, MMPerPixel: t.MMPerPixel, Region: t.Region,
		Manufacturer: "Vigil soak", SeriesDescription: dicomio.PhantomSeriesDescription, SOPInstanceUID: placeholderUID}
	file, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		return err
	}
	parts := bytes.Split(file, []byte(placeholderUID))
	if len(parts) < 2 {
		return errors.New("the placeholder UID is not in the file")
	}
	// ghz applies the template to the JSON text: the format string is a raw string, so that
	// no JSON escape lands inside it.
	uid := "{{ printf `1.2.826.0.1.3680043.10.1111.%012d` .RequestNumber | b64enc }}"
	var msgs []map[string]string
	for i, part := range parts {
		if i > 0 {
			msgs = append(msgs, map[string]string{"chunk": uid})
		}
		for len(part) > 0 { // chunks of at most 64 KB
			n := min(len(part), 64<<10)
			msgs = append(msgs, map[string]string{"chunk": base64.StdEncoding.EncodeToString(part[:n])})
			part = part[n:]
		}
	}
	data, err := json.Marshal(msgs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// residentKB reads a process's resident set size.
func residentKB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}
