package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-health/vigil/dicomio"
)

// TestReviewListShowsThePatient: a reviewer's `review list --json` carries each finding's
// patient and study, as the instance had them; a PACS worker cannot list, and the server log
// carries neither.
func TestReviewListShowsThePatient(t *testing.T) {
	vigild, _ := binaries(t)
	d := startDaemon(t, vigild)
	pacs := addToken(t, d.dataDir, "pacs-worker", "pacs-ctx")
	reviewer := addToken(t, d.dataDir, "reviewer", "dr.ctx")
	p := dicomio.MakePhantom(dicomio.PhantomSpec{Seed: 883001, Rows: 240, Cols: 320, Frames: 4, Lesions: 1})
	u := dicomio.GreyUltrasound{Width: p.Truth.Cols, Height: p.Truth.Rows, Frames: p.Frames, MMPerPixel: p.Truth.MMPerPixel,
		Region: p.Truth.Region, SeriesDescription: dicomio.PhantomSeriesDescription, StudyDescription: "Abdomen, liver",
		Patient: dicomio.Patient{Name: "MÜLLER^JÖRG", ID: "MRN-0042", BirthDate: "19580302", Sex: "M"},
		Study:   dicomio.Study{AccessionNumber: "ACC-9001", Date: "20261202", Time: "0830", ReferringPhysician: "HOUSE^GREGORY", ID: "S1"}}
	data, err := dicomio.UltrasoundDICOM(&u)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "liver.dcm")
	os.WriteFile(file, data, 0o644)
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", pacs, "analyze", file); code != 0 {
		t.Fatalf("analyze: %s", errOut)
	}
	out, errOut, code := cli(t, "--server", d.grpc, "--token", reviewer, "review", "list", "--json")
	if code != 0 {
		t.Fatalf("review list: %s", errOut)
	}
	var list struct{ Findings []findingJSON }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Findings) == 0 {
		t.Fatalf("review list --json: %v\n%s", err, out)
	}
	for _, f := range list.Findings {
		if f.Patient == nil || f.Patient.Name != "MÜLLER^JÖRG" || f.Patient.ID != "MRN-0042" {
			t.Errorf("finding %s: patient %+v", f.ID, f.Patient)
		}
		if f.Study == nil || f.Study.AccessionNumber != "ACC-9001" || f.Study.Description != "Abdomen, liver" || f.Study.Date != "20261202" {
			t.Errorf("finding %s: study %+v", f.ID, f.Study)
		}
	}
	if _, errOut, code := cli(t, "--server", d.grpc, "--token", pacs, "review", "list", "--json"); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("a PACS worker listing: exit %d %s", code, errOut)
	}
	for _, secret := range []string{"MÜLLER", "MRN-0042", "19580302", "ACC-9001"} {
		if strings.Contains(d.logs(), secret) {
			t.Errorf("the server log carries %q", secret)
		}
	}
}
