package models

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Route says which DICOM instances a model runs on when a request names no model. Every
// condition it sets must hold; a route that sets none is refused.
type Route struct {
	// Modality, SOPClass and BodyPart list accepted values (any one of them).
	Modality []string `yaml:"modality,omitempty"`
	SOPClass []string `yaml:"sop_class,omitempty"`
	BodyPart []string `yaml:"body_part,omitempty"`
	// Description is a regular expression (RE2, case-insensitive) that the Study Description
	// or the Series Description must contain.
	Description string `yaml:"description,omitempty"`

	description *regexp.Regexp
}

// Exam is what a route looks at in an instance.
type Exam struct {
	Modality, SOPClassUID, BodyPart     string
	StudyDescription, SeriesDescription string
}

func (r *Route) compile() error {
	if r.conditions() == 0 {
		return errors.New("a route must set modality, sop_class, body_part or description")
	}
	if r.Description == "" {
		return nil
	}
	re, err := regexp.Compile("(?i)" + r.Description)
	if err != nil {
		return fmt.Errorf("description %q: %v", r.Description, err)
	}
	r.description = re
	return nil
}

// conditions counts what the route sets: the more, the more specific.
func (r *Route) conditions() int {
	n := 0
	for _, set := range []bool{len(r.Modality) > 0, len(r.SOPClass) > 0, len(r.BodyPart) > 0, r.Description != ""} {
		if set {
			n++
		}
	}
	return n
}

// Match says whether the exam meets every condition of the route.
func (r *Route) Match(e Exam) bool {
	oneOf := func(list []string, v string) bool {
		return len(list) == 0 || slices.ContainsFunc(list, func(w string) bool { return strings.EqualFold(w, strings.TrimSpace(v)) })
	}
	if !oneOf(r.Modality, e.Modality) || !oneOf(r.SOPClass, e.SOPClassUID) || !oneOf(r.BodyPart, e.BodyPart) {
		return false
	}
	if r.Description != "" {
		re := r.description
		if re == nil { // a Route built in Go rather than parsed
			if r.compile() != nil {
				return false
			}
			re = r.description
		}
		return re.MatchString(e.StudyDescription) || re.MatchString(e.SeriesDescription)
	}
	return true
}

// String is the route in a line, for `vigil models` and the routing reason of an analysis.
func (r *Route) String() string {
	var parts []string
	if len(r.Modality) > 0 {
		parts = append(parts, "modality "+strings.Join(r.Modality, "|"))
	}
	if len(r.SOPClass) > 0 {
		parts = append(parts, "SOP class "+strings.Join(r.SOPClass, "|"))
	}
	if len(r.BodyPart) > 0 {
		parts = append(parts, "body part "+strings.Join(r.BodyPart, "|"))
	}
	if r.Description != "" {
		parts = append(parts, fmt.Sprintf("study or series description matches /%s/i", r.Description))
	}
	return strings.Join(parts, ", ")
}

// Choose picks the model for an exam among manifests: of those with a route that matches,
// the one whose matching route sets the most conditions (the most specific), the first by
// name on a tie. ok is false when no route matches.
func Choose(manifests []*Manifest, e Exam) (m *Manifest, route Route, ok bool) {
	best := -1
	sorted := slices.Clone(manifests)
	slices.SortStableFunc(sorted, func(a, b *Manifest) int { return strings.Compare(a.Name, b.Name) })
	for _, man := range sorted {
		for i := range man.Routes {
			r := &man.Routes[i]
			if n := r.conditions(); n > best && r.Match(e) {
				m, route, ok, best = man, *r, true, n
			}
		}
	}
	return m, route, ok
}
