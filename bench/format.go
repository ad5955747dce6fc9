package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report for people: the machine, a table per section, the ratios
// against their targets, and the notes.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "machine   %s, %d cores (GOMAXPROCS %d), %s, %s\n", m.CPU, m.Cores, m.GOMAXPROCS, m.OS, m.Go)
	fmt.Fprintf(w, "runtime   ONNX Runtime %s, provider %s, %d workers x %d intra-op thread(s) per model\n", m.Runtime, m.Provider, m.Workers, m.IntraOpThreads)
	section := ""
	var tw *tabwriter.Writer
	flush := func() {
		if tw != nil {
			tw.Flush()
		}
	}
	for _, rw := range r.Rows {
		if rw.Section != section {
			flush()
			section = rw.Section
			fmt.Fprintf(w, "\n%s\n", strings.ToUpper(section))
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "path\tconc\tper\tn\tp50 ms\tp25-p75 ms\tp99 ms\tper s\t")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.2f\t%.2f-%.2f\t%.2f\t%.1f\t\n", rw.Path, max(rw.Concurrency, 1), rw.Unit, rw.Samples, rw.P50, rw.P25, rw.P75, rw.P99, rw.Throughput)
	}
	flush()
	fmt.Fprintf(w, "\nRATIOS\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, ra := range r.Ratios {
		target, met := ra.Target, "met"
		switch {
		case target == "":
			target, met = "-", "(measured, no target)"
		case !ra.Met:
			met = "MISSED"
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\n", ra.Name, ra.Value, target, met)
	}
	tw.Flush()
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "\nNOTES\n")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	return nil
}
