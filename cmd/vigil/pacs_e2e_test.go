package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/internal/testenv"
	"github.com/vigil-health/vigil/pacs"
)

// orthanc is a real Orthanc (Debian's, with its DICOMweb plugin) on loopback ports, with a
// temporary configuration and storage.
type orthanc struct {
	http      string // http://127.0.0.1:port
	dicomPort int
}

func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

func startOrthanc(t *testing.T) *orthanc {
	t.Helper()
	if _, err := exec.LookPath("Orthanc"); err != nil {
		t.Fatal("Orthanc is not installed: run `make deps` (Debian packages orthanc and orthanc-dicomweb)")
	}
	dir := t.TempDir()
	httpPort, dicomPort := freePort(t), freePort(t)
	config := map[string]any{
		"Name": "VigilTest", "StorageDirectory": filepath.Join(dir, "storage"), "IndexDirectory": filepath.Join(dir, "index"),
		"HttpPort": httpPort, "DicomPort": dicomPort, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
		"AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true,
		"Plugins":  []string{"/usr/share/orthanc/plugins/libOrthancDicomWeb.so"},
		"DicomWeb": map[string]any{"Enable": true, "Root": "/dicom-web/"},
	}
	data, _ := json.Marshal(config)
	cfg := filepath.Join(dir, "orthanc.json")
	os.WriteFile(cfg, data, 0o600)
	cmd := exec.Command("Orthanc", cfg)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	o := &orthanc{http: fmt.Sprintf("http://127.0.0.1:%d", httpPort), dicomPort: dicomPort}
	for i := 0; ; i++ {
		if resp, err := http.Get(o.http + "/system"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return o
			}
		}
		if i > 300 {
			t.Fatalf("Orthanc did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (o *orthanc) getJSON(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Get(o.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// studySeries finds a study by its UID and lists its series: modality and instance IDs.
func (o *orthanc) studySeries(t *testing.T, studyUID string) (patientID string, series map[string][]string) {
	t.Helper()
	resp, err := http.Post(o.http+"/tools/find", "application/json",
		strings.NewReader(`{"Level":"Study","Query":{"StudyInstanceUID":"`+studyUID+`"},"Expand":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var studies []struct {
		ID                   string
		PatientMainDicomTags map[string]string
		Series               []string
	}
	json.NewDecoder(resp.Body).Decode(&studies)
	resp.Body.Close()
	if len(studies) != 1 {
		t.Fatalf("Orthanc has %d studies with UID %s, want 1", len(studies), studyUID)
	}
	series = map[string][]string{}
	for _, id := range studies[0].Series {
		var s struct {
			MainDicomTags map[string]string
			Instances     []string
		}
		o.getJSON(t, "/series/"+id, &s)
		series[s.MainDicomTags["Modality"]] = append(series[s.MainDicomTags["Modality"]], s.Instances...)
	}
	return studies[0].PatientMainDicomTags["PatientID"], series
}

// TestOrthancRoundTrip: ultrasound goes into Orthanc by C-STORE, as from a modality; `vigil
// pacs` picks it up and sends it to Vigil (and skips an MR no route takes); a reviewer
// accepts the findings with the CLI; the worker stores the report back into Orthanc: the same
// patient, the same study, a new SR series, valid by dciodvfy. A restart of the worker resumes
// and sends nothing twice, and storing the same report again leaves one.
func TestOrthancRoundTrip(t *testing.T) {
	vigild, vigil := binaries(t)
	d := startDaemon(t, vigild)
	o := startOrthanc(t)
	pacsToken := addToken(t, d.dataDir, "pacs-worker", "pacs-orthanc")
	reviewer := addToken(t, d.dataDir, "reviewer", "dr.orthanc")

	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 884001, Rows: 240, Cols: 320, Frames: 4, Lesions: 1})
	u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames, MMPerPixel: p.Truth.MMPerPixel,
		Region: p.Truth.Region, SeriesDescription: dicomio.PhantomSeriesDescription, StudyDescription: "Abdomen",
		Patient: dicomio.Patient{Name: "ROE^RICHARD", ID: "MRN-7001", BirthDate: "19620101", Sex: "M"},
		Study:   dicomio.Study{AccessionNumber: "ACC-7001", Date: "20261202", Time: "0900", ID: "1"}}
	data, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		t.Fatal(err)
	}
	us := filepath.Join(t.TempDir(), "us.dcm")
	os.WriteFile(us, data, 0o644)
	mr := testenv.Shared(t, "dicom/other/mr-1024-native16.dcm")
	for _, f := range []string{us, mr} {
		if out, err := exec.Command("storescu", "-aec", "ORTHANC", "127.0.0.1", fmt.Sprint(o.dicomPort), f).CombinedOutput(); err != nil {
			t.Fatalf("storescu %s: %v\n%s", filepath.Base(f), err, out)
		}
	}

	stateDir := t.TempDir()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	worker := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(vigil, "--server", d.grpc, "--token", pacsToken, "pacs", "--orthanc", o.http, "--state-dir", stateDir, "--poll", "300ms",
			"--metrics", metricsAddr)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, &logs
	}
	status := func() pacs.State {
		out, errOut, code := cli(t, "pacs", "status", "--state-dir", stateDir, "--json")
		var st pacs.State
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("pacs status: exit %d %s %s", code, out, errOut)
		}
		return st
	}
	eventually := func(what string, ok func() bool, logs *bytes.Buffer) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				out, _, _ := cli(t, "pacs", "status", "--state-dir", stateDir)
				t.Fatalf("never: %s\nworker state:\n%s\nworker log:\n%s", what, out, logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	w1, logs := worker()
	eventually("the ultrasound analysed and the MR skipped", func() bool {
		st := status()
		return len(st.Analysed) == 1 && st.Skipped == 1 && len(st.Studies[u.StudyInstanceUID].Findings) > 0
	}, logs)
	// kill -9 and a restart: the cursor holds, nothing is sent twice.
	w1.Process.Kill()
	w1.Wait()
	_, logs = worker()

	out, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "list", "--json")
	var list struct{ Findings []findingJSON }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Findings) == 0 {
		t.Fatalf("review list: exit %d %s", code, errOut)
	}
	for _, f := range list.Findings {
		if f.Patient == nil || f.Patient.ID != "MRN-7001" {
			t.Errorf("finding %s: patient %+v, want MRN-7001 from the archive's file", f.ID, f.Patient)
		}
		if _, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "accept", f.ID, "--version", fmt.Sprint(f.Version)); code != 0 {
			t.Fatalf("accept %s: %s", f.ID, errOut)
		}
	}
	eventually("the report stored in Orthanc", func() bool {
		st := status()
		return st.Studies[u.StudyInstanceUID] != nil && st.Studies[u.StudyInstanceUID].Stored
	}, logs)
	if st := status(); len(st.Analysed) != 1 {
		t.Errorf("after the restart the worker sent %d instances, want the one", len(st.Analysed))
	}
	if resp, err := http.Get("http://" + metricsAddr + "/metrics"); err != nil {
		t.Errorf("the worker's /metrics: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"vigil_pacs_reports_stored_total 1", "vigil_pacs_studies_pending 0"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("the worker's /metrics lacks %s:\n%s", want, body)
			}
		}
	}

	patientID, series := o.studySeries(t, u.StudyInstanceUID)
	if patientID != "MRN-7001" || len(series["US"]) != 1 || len(series["SR"]) != 1 {
		t.Fatalf("the study in Orthanc: patient %q, series %v; want MRN-7001 with one US and one SR instance", patientID, series)
	}
	resp, err := http.Get(o.http + "/instances/" + series["SR"][0] + "/file")
	if err != nil {
		t.Fatal(err)
	}
	sr, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srPath := filepath.Join(t.TempDir(), "sr.dcm")
	os.WriteFile(srPath, sr, 0o644)
	testenv.Dciodvfy(t, srPath)
	var tags map[string]any
	o.getJSON(t, "/instances/"+series["SR"][0]+"/simplified-tags", &tags)
	if tags["PatientID"] != "MRN-7001" || tags["StudyInstanceUID"] != u.StudyInstanceUID || tags["AccessionNumber"] != "ACC-7001" {
		t.Errorf("the SR's patient, study and accession: %q %q %q", tags["PatientID"], tags["StudyInstanceUID"], tags["AccessionNumber"])
	}
	// Storing the same report again keeps one: it has the same SOP Instance UID.
	if err := pacs.NewOrthanc(o.http, http.DefaultClient).Store(t.Context(), sr); err != nil {
		t.Fatal(err)
	}
	if _, again := o.studySeries(t, u.StudyInstanceUID); len(again["SR"]) != 1 {
		t.Errorf("after storing the same report again: %d SR instances, want 1", len(again["SR"]))
	}
}

// TestDICOMwebWorker: with --dicomweb, the worker finds the instance by QIDO-RS and fetches
// it by WADO-RS (Orthanc's DICOMweb plugin standing in for any archive), and Vigil analyses it.
func TestDICOMwebWorker(t *testing.T) {
	vigild, vigil := binaries(t)
	d := startDaemon(t, vigild)
	o := startOrthanc(t)
	files := phantomFiles(t, 884100, 1)
	if out, err := exec.Command("storescu", "-aec", "ORTHANC", "127.0.0.1", fmt.Sprint(o.dicomPort), files[0]).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	stateDir := t.TempDir()
	cmd := exec.Command(vigil, "--server", d.grpc, "--token", addToken(t, d.dataDir, "pacs-worker", "pacs-web"),
		"pacs", "--dicomweb", o.http+"/dicom-web", "--state-dir", stateDir, "--poll", "300ms")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := pacs.LoadState(stateDir)
		if err == nil && len(st.Analysed) == 1 && len(st.Studies) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker never analysed the instance: %+v\n%s", st, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	reviewer := addToken(t, d.dataDir, "reviewer", "dr.web-pacs")
	if out, _, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "list", "--json"); code != 0 || !strings.Contains(out, `"id": "f-`) {
		t.Errorf("no findings from the DICOMweb worker:\n%s", out)
	}
}
