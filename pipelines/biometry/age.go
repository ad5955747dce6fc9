package biometry

// GestationalAge is an estimate of the menstrual age from a measurement.
type GestationalAge struct {
	Weeks float64
	// InRange says whether the measurement is inside the range the formula was made on;
	// outside it the estimate is not given.
	InRange bool
	// Formula names the published formula.
	Formula string
}

// Hadlock 1984's range: a cross-sectional study of 361 fetuses from 14 to 42 menstrual weeks.
const (
	hadlockMinWeeks = 14
	hadlockMaxWeeks = 42
)

// Hadlock1984 estimates the menstrual age from the head circumference in mm with Hadlock's
// cubic: GA (weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm (F. P. Hadlock, R. L. Deter,
// R. B. Harrist, S. K. Park, "Estimating fetal age: computer-assisted analysis of multiple
// fetal growth parameters", Radiology 152(2):497-501, 1984). It is valid from 14 to 42 weeks
// (HC about 93 to 359 mm).
func Hadlock1984(hcMM float64) GestationalAge {
	hc := hcMM / 10
	weeks := 8.96 + 0.540*hc + 0.0003*hc*hc*hc
	return GestationalAge{Weeks: weeks, InRange: weeks >= hadlockMinWeeks && weeks <= hadlockMaxWeeks,
		Formula: "Hadlock 1984: GA = 8.96 + 0.540 HC + 0.0003 HC^3 (HC in cm), 14-42 weeks"}
}
