package models

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltinRoutes(t *testing.T) {
	var manifests []*Manifest
	for _, e := range Builtin() {
		if e.Err != nil {
			t.Fatal(e.Err)
		}
		manifests = append(manifests, e.Manifest)
	}
	for _, tc := range []struct {
		name string
		exam Exam
		want string // "" for no model
	}{
		{"obstetric study", Exam{Modality: "US", StudyDescription: "OB 2nd trimester"}, "fetal-head"},
		{"fetal series", Exam{Modality: "US", SeriesDescription: "Fetal biometry"}, "fetal-head"},
		{"obstetrics spelled out", Exam{Modality: "us", StudyDescription: "US OBSTETRIC COMPLETE"}, "fetal-head"},
		{"OB/GYN", Exam{Modality: "US", StudyDescription: "OB/GYN"}, "fetal-head"},
		{"phantom", Exam{Modality: "US", SeriesDescription: "Vigil synthetic phantom"}, "us-lesion-demo"},
		{"cardiac", Exam{Modality: "US", StudyDescription: "US Dopler"}, ""},
		{"a word that only contains ob", Exam{Modality: "US", StudyDescription: "Lobe of liver"}, ""},
		{"no description", Exam{Modality: "US"}, ""},
		{"fetal MR is not ultrasound", Exam{Modality: "MR", StudyDescription: "Fetal brain"}, ""},
	} {
		m, route, ok := Choose(manifests, tc.exam)
		got := ""
		if ok {
			got = m.Name
		}
		if got != tc.want {
			t.Errorf("%s: chose %q (route %s), want %q", tc.name, got, route.String(), tc.want)
		}
	}
}

func TestMoreSpecificRouteWins(t *testing.T) {
	broad := &Manifest{Name: "a-broad", Routes: []Route{{Modality: []string{"US"}}}}
	narrow := &Manifest{Name: "b-narrow", Routes: []Route{{Modality: []string{"US"}, BodyPart: []string{"HEART"}}}}
	if m, _, _ := Choose([]*Manifest{broad, narrow}, Exam{Modality: "US", BodyPart: "HEART"}); m != narrow {
		t.Errorf("chose %s for a heart, want the route that names the body part", m.Name)
	}
	if m, _, _ := Choose([]*Manifest{broad, narrow}, Exam{Modality: "US", BodyPart: "LIVER"}); m != broad {
		t.Errorf("chose %s for a liver", m.Name)
	}
}

func TestBadRoutesAreRefused(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("fetal-head", ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, routes := range map[string]string{
		"empty route":   "routes:\n  - {}\n",
		"bad pattern":   "routes:\n  - description: '(unclosed'\n",
		"unknown field": "routes:\n  - modalities: [US]\n",
	} {
		text := string(data)
		text = text[:strings.Index(text, "routes:")] + routes
		if _, err := ParseManifest([]byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
