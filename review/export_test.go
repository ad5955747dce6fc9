package review

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
)

func TestExportReport(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		const study = "1.2.826.0.1.3680043.9.7"
		mk := func(label string, frames int) Finding {
			f := finding(study, 1)
			f.Label = label
			f.Source.SeriesInstanceUID = study + ".1"
			f.Source.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
			f.Source.NumberOfFrames = frames
			f.BestFrame = 4
			f.Context = &Context{PatientName: "MÜLLER^JÖRG", PatientID: "MRN-0042", PatientBirthDate: "19580302", PatientSex: "M",
				AccessionNumber: "ACC-9001", StudyDate: "20261202", StudyTime: "083000", StudyDescription: "Abdomen, liver",
				ReferringPhysician: "HOUSE^GREGORY", StudyID: "S1"}
			return f
		}
		fs := add(t, s, mk("accepted lesion", 8), mk("amended lesion", 1), mk("rejected lesion", 1), mk("pending lesion", 1))
		other := finding("1.2.3.999", 1)
		other.Source.SeriesInstanceUID, other.Source.SOPClassUID = "1.2.3.999.1", "1.2.840.10008.5.1.4.1.1.6.1"
		o := add(t, s, other)[0]
		if _, err := s.Decide(ctx, "dr.lee", o.ID, 1, Decision{Outcome: OutcomeAccept}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decide(ctx, "dr.lee", fs[0].ID, 1, Decision{Outcome: OutcomeAccept, Comment: "well defined"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decide(ctx, "dr.kim", fs[1].ID, 1, Decision{Outcome: OutcomeAmend, ReasonCode: "wrong-size",
			Amendment: &Amendment{Label: "simple cyst", Measurements: []Measurement{{Name: "long axis", Value: 9.75, Unit: "mm"}}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decide(ctx, "dr.kim", fs[2].ID, 1, Decision{Outcome: OutcomeReject, ReasonCode: "artefact"}); err != nil {
			t.Fatal(err)
		}

		r, err := ExportReport(ctx, s, study, "2.25.1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r.Findings != 2 {
			t.Errorf("report has %d findings, want the accepted and the amended one", r.Findings)
		}
		path := filepath.Join(t.TempDir(), "sr.dcm")
		os.WriteFile(path, r.Data, 0o644)
		testenv.Dciodvfy(t, path)
		text := testenv.Dsrdump(t, path)
		for _, want := range []string{fs[0].ID, fs[1].ID, `"12.5" (mm,UCUM,"millimeter")`, `"9.75" (mm,UCUM,"millimeter")`,
			`"simple cyst"`, "amended by dr.kim (wrong-size)", "accepted by dr.lee (confirmed): well defined", fs[0].Source.SOPInstanceUID} {
			if !strings.Contains(text, want) {
				t.Errorf("the report lacks %q:\n%s", want, text)
			}
		}
		// The patient and study modules are the source's, so that a PACS files the report in the
		// same patient's study, with the request it answers.
		dump, err := exec.Command("dcmdump", "+U8", path).CombinedOutput()
		if err != nil {
			t.Fatalf("dcmdump: %v: %s", err, dump)
		}
		for _, want := range []string{"(0010,0010) PN [MÜLLER^JÖRG]", "(0010,0020) LO [MRN-0042]", "(0010,0030) DA [19580302]",
			"(0010,0040) CS [M]", "(0008,0050) SH [ACC-9001]", "(0008,0020) DA [20261202]", "(0008,0090) PN [HOUSE^GREGORY]",
			"(0020,0010) SH [S1]", "(0008,1030) LO [Abdomen, liver]", "(0040,a370) SQ", "(0020,000d) UI [" + study + "]"} {
			if !strings.Contains(string(dump), want) {
				t.Errorf("the report lacks %s:\n%s", want, dump)
			}
		}
		// The amended finding's model value is replaced, not repeated; rejected, pending and other
		// studies' findings are absent.
		for _, absent := range []string{fs[2].ID, fs[3].ID, o.ID, "rejected lesion", "pending lesion", `"amended lesion"`} {
			if strings.Contains(text, absent) {
				t.Errorf("the report contains %q", absent)
			}
		}
		if strings.Count(text, `"12.5"`) != 1 {
			t.Errorf("want the model's 12.5 mm only for the accepted finding")
		}
		// The 8-frame source is referenced with its best frame; single-frame ones without frames.
		if !strings.Contains(text, `image,"`+fs[0].Source.SOPInstanceUID+`",4)`) {
			t.Errorf("the multi-frame reference lacks frame 4:\n%s", text)
		}

		if _, err := ExportReport(ctx, s, "1.2.3.404", "2.25.1", time.Now()); !errors.Is(err, ErrNothingToReport) {
			t.Errorf("a study with nothing decided: got %v, want ErrNothingToReport", err)
		}
		if _, err := ExportReport(ctx, s, "Robert'); DROP", "2.25.1", time.Now()); !errors.Is(err, ErrInvalid) {
			t.Errorf("a malformed UID: got %v, want ErrInvalid", err)
		}
	})
}
