package main

import (
	"bytes"
	"encoding/base64"
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

	"github.com/vigil-health/vigil/review"
)

// webDriver is a minimal W3C WebDriver client for Debian's chromedriver and headless Chromium.
type webDriver struct {
	t       *testing.T
	base    string
	session string
}

// startBrowser starts headless Chromium under chromedriver; args are more Chromium flags.
func startBrowser(t *testing.T, args ...string) *webDriver {
	t.Helper()
	for _, bin := range []string{"chromedriver", "chromium"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: run `make deps` (Debian packages chromium and chromium-driver)", bin)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	driver := exec.Command("chromedriver", fmt.Sprintf("--port=%d", port))
	if err := driver.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { driver.Process.Kill(); driver.Wait() })
	wd := &webDriver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	for i := 0; ; i++ {
		resp, err := http.Get(wd.base + "/status")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 200 {
			t.Fatalf("chromedriver did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": "/usr/bin/chromium",
			"args": append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
				"--no-first-run", "--window-size=1400,900", "--user-data-dir=" + t.TempDir()}, args...),
		},
	}}}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	wd.call("POST", "/session", caps, &created)
	if created.SessionID == "" {
		t.Fatal("chromedriver gave no session")
	}
	wd.session = "/session/" + created.SessionID
	t.Cleanup(func() { wd.call("DELETE", wd.session, nil, nil) })
	return wd
}

func (wd *webDriver) call(method, path string, body, out any) {
	wd.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, wd.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		wd.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		wd.t.Fatalf("webdriver %s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		var env struct{ Value json.RawMessage }
		json.Unmarshal(data, &env)
		if err := json.Unmarshal(env.Value, out); err != nil && path != "/session" {
			wd.t.Fatalf("webdriver %s %s: %v: %s", method, path, err, data)
		}
		if path == "/session" {
			json.Unmarshal(env.Value, out)
		}
	}
}

func (wd *webDriver) open(url string) {
	wd.call("POST", wd.session+"/url", map[string]string{"url": url}, nil)
}

func (wd *webDriver) element(css string) string {
	var el map[string]string
	wd.call("POST", wd.session+"/element", map[string]string{"using": "css selector", "value": css}, &el)
	for _, id := range el {
		return id
	}
	wd.t.Fatalf("no element %s", css)
	return ""
}

func (wd *webDriver) typeInto(css, text string) {
	wd.call("POST", wd.session+"/element/"+wd.element(css)+"/value", map[string]string{"text": text}, nil)
}

func (wd *webDriver) click(css string) {
	wd.call("POST", wd.session+"/element/"+wd.element(css)+"/click", map[string]any{}, nil)
}

// press sends one key to the page, as a person would.
func (wd *webDriver) press(key string) {
	wd.call("POST", wd.session+"/actions", map[string]any{"actions": []any{map[string]any{
		"type": "key", "id": "keyboard",
		"actions": []any{map[string]string{"type": "keyDown", "value": key}, map[string]string{"type": "keyUp", "value": key}},
	}}}, nil)
}

func (wd *webDriver) eval(script string, out any) {
	wd.call("POST", wd.session+"/execute/sync", map[string]any{"script": script, "args": []any{}}, out)
}

// waitFor polls a JavaScript condition until it is true, failing with a screenshot when it
// does not come true within a generous bound (a stuck page, not a slow one).
func (wd *webDriver) waitFor(what, condition string) {
	wd.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		wd.eval("return !!("+condition+");", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			wd.t.Fatalf("the page never showed %s (%s); screenshot: %s", what, condition, wd.screenshot())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (wd *webDriver) screenshot() string {
	var b64 string
	wd.call("GET", wd.session+"/screenshot", nil, &b64)
	data, _ := base64.StdEncoding.DecodeString(b64)
	path := filepath.Join(os.TempDir(), fmt.Sprintf("vigil-review-page-%d.png", time.Now().UnixNano()))
	os.WriteFile(path, data, 0o644)
	return path
}

const rowsJS = `document.querySelectorAll('#worklist tbody tr')`

// TestReviewerPageInChromium signs in with a reviewer token, accepts one finding with "a",
// rejects the next with "r" once a reason is chosen, checks the store, and sees a decision made elsewhere arrive live.
func TestReviewerPageInChromium(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	seeded := seedStore(t, dataDir, 3)
	d := startDaemonIn(t, dataDir, vigild)
	token := addToken(t, dataDir, "reviewer", "dr.web")
	other := addToken(t, dataDir, "reviewer", "dr.cli")
	wd := startBrowser(t)

	wd.open("http://" + d.http + "/")
	wd.typeInto("#token", token)
	wd.click("#signin-button")
	wd.waitFor("three findings and the first one open",
		rowsJS+`.length === 3 && !document.querySelector('#finding').hidden && document.querySelector('#f-overlay').naturalWidth === 320 && document.querySelector('#signin').hidden`)
	var first, second string
	wd.eval(`return `+rowsJS+`[0].dataset.id;`, &first)
	wd.eval(`return `+rowsJS+`[1].dataset.id;`, &second)
	wd.waitFor("the first finding's audit", `document.querySelector('#finding').dataset.id === '`+first+`' && document.querySelectorAll('#f-audit li').length === 1`)
	wd.waitFor("the finding's evidence", `document.querySelectorAll('#f-evidence li').length === 1 && document.querySelector('#f-evidence li').textContent.includes('evidence in plain words')`)
	// An imaging finding's score is the model's, not a heuristic, in the detail and the list.
	wd.waitFor("the model score", `document.querySelector('#f-meta').textContent.startsWith('model score ') && !`+rowsJS+`[0].textContent.includes('heuristic')`)

	wd.press("a")
	wd.waitFor("the accepted finding leaving the open worklist", rowsJS+`.length === 2 && document.querySelector('#finding').dataset.id === '`+second+`'`)
	// A rejection needs a reason the reviewer chose: without one the page asks and sends nothing.
	wd.press("r")
	wd.waitFor("the page asking for a reason", `document.querySelector('#decide-error').textContent.includes('Choose the reason') && `+rowsJS+`.length === 2`)
	wd.eval(`document.querySelector('#reason').value = 'artefact'; document.querySelector('#reason').blur(); return true;`, nil)
	wd.press("r")
	wd.waitFor("the rejected finding leaving the open worklist", rowsJS+`.length === 1`)
	t.Logf("after accept and reject: %s", wd.screenshot())

	// The store has both decisions, by the signed-in reviewer.
	s, err := review.OpenSQLite(filepath.Join(dataDir, "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for id, want := range map[string]review.State{first: review.StateAccepted, second: review.StateRejected} {
		f, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if f.State != want || f.Decision == nil || f.Decision.Reviewer != "dr.web" {
			t.Errorf("%s: state %s decision %+v; want %s by dr.web", id, f.State, f.Decision, want)
		}
	}
	if f, _ := s.Get(t.Context(), first); f.Decision != nil && f.Decision.ReasonCode != "confirmed" {
		t.Errorf("the acceptance's reason is %q, want confirmed (none chosen)", f.Decision.ReasonCode)
	}
	if f, _ := s.Get(t.Context(), second); f.Decision != nil && f.Decision.ReasonCode != "artefact" {
		t.Errorf("the rejection's reason is %q, want artefact, the one chosen", f.Decision.ReasonCode)
	}

	// A colleague decides the last one from the CLI: the page hears it through Watch.
	var last string
	for _, f := range seeded {
		if f.ID != first && f.ID != second {
			last = f.ID
		}
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", other, "review", "accept", last); code != 0 {
		t.Fatalf("accept from the CLI: %s", errOut)
	}
	wd.waitFor("the colleague's decision, live", rowsJS+`.length === 0 && document.querySelector('#live').className === 'on'`)

	// The decided view shows all three with their audit trail.
	wd.eval(`const s = document.querySelector('#state-filter'); s.value = 'decided'; s.dispatchEvent(new Event('change')); return true;`, nil)
	wd.waitFor("the decided findings", rowsJS+`.length === 3`)
	var states string
	wd.eval(`return Array.from(`+rowsJS+`).map(r => r.dataset.state).sort().join(',');`, &states)
	if states != "accepted,accepted,rejected" {
		t.Errorf("decided view states %q, want accepted,accepted,rejected", states)
	}
	if !strings.HasPrefix(first, "f-") {
		t.Errorf("row ids %q are not finding ids", first)
	}
}

// TestReviewerPageRefusesAPACSToken signs in with a token whose role may not review.
func TestReviewerPageRefusesAPACSToken(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	pacs := addToken(t, d.dataDir, "pacs-worker", "pacs-1")
	wd := startBrowser(t)
	wd.open("http://" + d.http + "/")
	wd.typeInto("#token", pacs)
	wd.click("#signin-button")
	wd.waitFor("the refusal", `document.querySelector('#signin-error').textContent.includes('not a reviewer')`)
	var hidden bool
	wd.eval(`return document.querySelector('#app').hidden;`, &hidden)
	if !hidden {
		t.Error("the worklist is shown to a PACS worker")
	}
}

// TestWorklistByStudyInChromium: the page shows the patient and study of the finding open,
// links the study to the configured viewer, and groups the worklist by study with the patient,
// accession, date, description and number of findings.
func TestWorklistByStudyInChromium(t *testing.T) {
	vigild, _ := binaries(t)
	dataDir := t.TempDir()
	s, err := review.OpenSQLite(filepath.Join(dataDir, review.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	overlay := overlayPNG(t)
	var batch []review.Finding
	for i, p := range []struct{ study, name, accession string }{
		{"1.2.826.0.1.3680043.2.7", "MÜLLER^JÖRG", "ACC-1"}, {"1.2.826.0.1.3680043.2.8", "DOE^JANE", "ACC-2"}, {"1.2.826.0.1.3680043.2.7", "MÜLLER^JÖRG", "ACC-1"},
	} {
		batch = append(batch, review.Finding{Pipeline: review.PipelineTriage, Label: "hypoechoic lesion", Score: 0.8, Priority: 3 - i,
			Model: review.ModelRef{Name: "us-lesion-demo", Version: "1", SHA256: "cafe"},
			Source: review.Source{StudyInstanceUID: p.study, SeriesInstanceUID: p.study + ".1", SOPInstanceUID: fmt.Sprintf("%s.1.%d", p.study, i),
				SOPClassUID: "1.2.840.10008.5.1.4.1.1.6.1", Modality: "US", NumberOfFrames: 1},
			Context: &review.Context{PatientName: p.name, PatientID: "MRN-" + p.accession, AccessionNumber: p.accession, StudyDate: "20261202",
				StudyDescription: "Abdomen"},
			Overlay: &review.Image{MediaType: "image/png", Data: overlay, Width: 320, Height: 240}})
	}
	if _, err := s.Add(t.Context(), "pacs-1", batch); err != nil {
		t.Fatal(err)
	}
	s.Close()
	d := startDaemonIn(t, dataDir, vigild, "--viewer-url", "https://viewer.example/ohif/viewer?StudyInstanceUIDs={study}")
	token := addToken(t, dataDir, "reviewer", "dr.study")
	wd := startBrowser(t)
	wd.open("http://" + d.http + "/")
	wd.typeInto("#token", token)
	wd.click("#signin-button")
	wd.waitFor("the first finding with its patient and a viewer link", rowsJS+`.length === 3 && document.querySelector('#f-patient').textContent.includes('MÜLLER, JÖRG · ID MRN-ACC-1 · accession ACC-1 · 2026-12-02 · Abdomen') && `+
		`document.querySelector('#f-patient a').href === 'https://viewer.example/ohif/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.2.7'`)
	wd.click("#group-by-study")
	wd.waitFor("two studies, the first with two findings", `document.querySelectorAll('#worklist tr.study').length === 2 && `+
		`document.querySelectorAll('#worklist tr.study')[0].textContent.includes('MÜLLER, JÖRG · ID MRN-ACC-1 · accession ACC-1 · 2026-12-02 · Abdomen · 2 findings') && `+
		`document.querySelectorAll('#worklist tr.study')[1].textContent.includes('DOE, JANE') && `+
		`document.querySelectorAll('#worklist tbody tr')[2].dataset.id !== undefined && document.querySelectorAll('#worklist tbody tr')[3].className === 'study'`)
}
