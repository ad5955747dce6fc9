package review

import (
	"errors"
	"math"
	"testing"
)

// TestAmendedMeasurementsMustBePlausible: a NaN, an infinity, an absurd value or an unknown unit
// in an amendment is refused as invalid, before it reaches the store or a report.
func TestAmendedMeasurementsMustBePlausible(t *testing.T) {
	for _, m := range []Measurement{
		{Name: "HC", Value: math.NaN(), Unit: "mm"},
		{Name: "HC", Value: math.Inf(1), Unit: "mm"},
		{Name: "long axis", Value: -1e300, Unit: "mm"},
		{Name: "long axis", Value: 12, Unit: "furlong"},
	} {
		d := &Decision{Outcome: OutcomeAmend, ReasonCode: "wrong-size", Amendment: &Amendment{Measurements: []Measurement{m}}}
		if err := validateDecision(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("amendment %+v: %v, want invalid", m, err)
		}
	}
	ok := &Decision{Outcome: OutcomeAmend, ReasonCode: "wrong-size", Amendment: &Amendment{Measurements: []Measurement{{Name: "HC", Value: 171.5, Unit: "mm"}, {Name: "GA", Value: 20.1, Unit: "wk"}}}}
	if err := validateDecision(ok); err != nil {
		t.Errorf("a plausible amendment: %v", err)
	}
}
