package dicomio

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-health/vigil/internal/testenv"
)

func sampleReport() Report {
	ref := ImageRef{SOPClassUID: "1.2.840.10008.5.1.4.1.1.3.1", SOPInstanceUID: "1.2.3.4.5.6.1", SeriesInstanceUID: "1.2.3.4.5.6", Frames: []int{3}, MultiFrame: true}
	return Report{
		StudyInstanceUID: "1.2.3.4.5",
		Time:             time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC),
		DeviceName:       "Vigil", DeviceUID: ImplementationClassUID,
		Groups: []MeasurementGroup{
			{
				TrackingID: "f-0123456789abcdef0123", Finding: LocalCode("hypoechoic lesion"),
				Measurements:  []Measurement{{"long axis", 12.25, "mm"}, {"area", 98.5, "mm2"}},
				Region:        []float32{10, 20, 40, 20, 40, 50, 10, 50, 10, 20},
				Image:         ref,
				Comment:       "accepted by dr.lee (confirmed)",
				AlgorithmName: "us-lesion-demo", AlgorithmVersion: "1",
			},
			{
				TrackingID: "f-0123456789abcdef0124", Finding: LocalCode("hyperechoic lesion"),
				Image:   ImageRef{SOPClassUID: "1.2.840.10008.5.1.4.1.1.6.1", SOPInstanceUID: "1.2.3.4.5.7.1", SeriesInstanceUID: "1.2.3.4.5.7"},
				Comment: "amended by dr.kim (wrong-label)",
			},
		},
	}
}

func writeSample(t *testing.T) (string, string) {
	t.Helper()
	data, uid, err := WriteSR(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report.dcm")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, uid
}

// TestSRPassesDciodvfy checks the report against the Comprehensive SR IOD with dicom3tools.
func TestSRPassesDciodvfy(t *testing.T) {
	path, _ := writeSample(t)
	testenv.Dciodvfy(t, path)
}

// TestSRMeasurementsInDsrdump reads the report back with dcmtk's dsrdump.
func TestSRMeasurementsInDsrdump(t *testing.T) {
	path, uid := writeSample(t)
	text := testenv.Dsrdump(t, path)
	for _, want := range []string{
		"Imaging Measurement Report", "Measurement Group", `"12.25" (mm,UCUM,"millimeter")`,
		`"98.5" (mm2,UCUM,"square millimeter")`, "Long Axis", "f-0123456789abcdef0123", "1.2.3.4.5.6.1",
		"accepted by dr.lee", "(103339001,SCT,\"Long Axis\")",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("dsrdump output lacks %q:\n%s", want, text)
		}
	}
	meta, err := exec.Command("dcmdump", "+P", "0008,0018", "+P", "0002,0010", path).CombinedOutput()
	if err != nil || !strings.Contains(string(meta), uid) || !strings.Contains(string(meta), "LittleEndianExplicit") {
		t.Errorf("dcmdump: SOP Instance UID %s and explicit little endian wanted:\n%s (%v)", uid, meta, err)
	}
}

func TestWriteSRRefusesEmptyAndIncomplete(t *testing.T) {
	if _, _, err := WriteSR(Report{StudyInstanceUID: "1.2"}); err != ErrEmptyReport {
		t.Errorf("no groups: got %v, want ErrEmptyReport", err)
	}
	r := sampleReport()
	r.Groups[0].Image.SeriesInstanceUID = ""
	if _, _, err := WriteSR(r); err == nil {
		t.Error("a group without its series was written")
	}
}

func TestDecimalString(t *testing.T) {
	for v, want := range map[float64]string{12.25: "12.25", 1.0 / 3: "0.33333333333333", 123456789012.5: "123456789012.5", -0.5: "-0.5"} {
		if got := decimalString(v); got != want || len(got) > 16 {
			t.Errorf("decimalString(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestSRLeavesOutValuesOfTheWrongForm: dates, a time and a sex copied from a source's header
// in forms their VR does not allow are left empty in the report (dciodvfy warned of them),
// and the ones in the right form are kept; dciodvfy finds no error or warning about them.
func TestSRLeavesOutValuesOfTheWrongForm(t *testing.T) {
	for _, tt := range []struct {
		name  string
		study Study
		p     Patient
		want  map[string]string // tag: value dcmdump shows
	}{
		{"wrong forms", Study{Date: "2026-12-05", Time: "9am"}, Patient{Name: "DOE^JANE", ID: "P1", BirthDate: "yesterday", Sex: "female"},
			map[string]string{"0008,0020": "(no value available)", "0008,0030": "(no value available)", "0010,0030": "(no value available)", "0010,0040": "(no value available)"}},
		{"right forms", Study{Date: "20261205", Time: "093000.25"}, Patient{Name: "DOE^JANE", ID: "P1", BirthDate: "19700101", Sex: "F"},
			map[string]string{"0008,0020": "[20261205]", "0008,0030": "[093000.25]", "0010,0030": "[19700101]", "0010,0040": "[F]"}},
	} {
		r := sampleReport()
		r.Study, r.Patient = tt.study, tt.p
		data, _, err := WriteSR(r)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "report.dcm")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("dcmdump", "+P", "0008,0020", "+P", "0008,0030", "+P", "0010,0030", "+P", "0010,0040", path).CombinedOutput()
		if err != nil {
			t.Fatalf("dcmdump: %v\n%s", err, out)
		}
		for tag, want := range tt.want {
			found := false
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "("+tag+")") && strings.Contains(line, want) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: (%s) is not %s in:\n%s", tt.name, tag, want, out)
			}
		}
		check, _ := exec.Command("dciodvfy", path).CombinedOutput()
		for _, line := range strings.Split(string(check), "\n") {
			// An empty Study Date or Time only draws the note that a DICOMDIR would want one.
			if (strings.HasPrefix(line, "Error") || strings.HasPrefix(line, "Warning")) && !strings.Contains(line, "DICOMDIR") &&
				(strings.Contains(line, "Date") || strings.Contains(line, "Time") || strings.Contains(line, "Sex")) {
				t.Errorf("%s: dciodvfy: %s", tt.name, line)
			}
		}
	}
}
