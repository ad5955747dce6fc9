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

// hadlockFormula is Hadlock's cubic and the range it was made on, in weeks and in HC (the HC
// that the cubic maps to 14 and to 42 weeks, HadlockHC's figures rounded outwards).
const hadlockFormula = "Hadlock 1984: GA = 8.96 + 0.540 HC + 0.0003 HC^3 (HC in cm), made on 14-42 weeks (HC 89-358 mm)"

func hadlockWeeks(hcMM float64) float64 {
	hc := hcMM / 10
	return 8.96 + 0.540*hc + 0.0003*hc*hc*hc
}

// HadlockHC is the head circumference in mm that Hadlock's cubic maps to the given weeks (the
// cubic rises everywhere, so there is one), to a hundredth of a mm.
func HadlockHC(weeks float64) float64 {
	lo, hi := 0.0, 1000.0
	for hi-lo > 0.01 {
		mid := (lo + hi) / 2
		if hadlockWeeks(mid) < weeks {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// Hadlock1984 estimates the menstrual age from the head circumference in mm with Hadlock's
// cubic: GA (weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm (F. P. Hadlock, R. L. Deter,
// R. B. Harrist, S. K. Park, "Estimating fetal age: computer-assisted analysis of multiple
// fetal growth parameters", Radiology 152(2):497-501, 1984). It is given over the whole range
// the formula was made on, 14 to 42 weeks (HC 89.4 to 357.7 mm), and not outside it.
func Hadlock1984(hcMM float64) GestationalAge {
	weeks := hadlockWeeks(hcMM)
	return GestationalAge{Weeks: weeks, InRange: weeks >= hadlockMinWeeks && weeks <= hadlockMaxWeeks, Formula: hadlockFormula}
}
