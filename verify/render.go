package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report: one row per scenario (scenario, bound,
// measured, plain-TCP baseline, pass/fail), then each scenario's details.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tBOUND\tMEASURED\tPLAIN TCP\tRESULT")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.boundCell(), r.measuredCell(), r.baselineCell(), r.verdict())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	pass, skipped, overTLS := 0, 0, 0
	for _, r := range results {
		if r.Pass {
			pass++
		}
		if r.Skipped != "" {
			skipped++
		}
		if r.TLS {
			overTLS++
		}
	}
	over := ""
	if overTLS > 0 && overTLS == len(results) {
		over = " over TLS"
	}
	skip := ""
	if skipped > 0 {
		skip = fmt.Sprintf(" (%d skipped: a program they need is missing)", skipped)
	}
	fmt.Fprintf(w, "\n%d of %d scenarios pass%s%s.\n", pass, len(results), over, skip)
	fmt.Fprintln(w, "\nDetails:")
	for _, r := range results {
		fmt.Fprintf(w, "\n%s (%s, took %s):\n", r.Scenario, r.verdict(), fmtMS(r.DurationMS))
		if r.Metric != "" {
			fmt.Fprintf(w, "  measured: %s\n", r.Metric)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", r.Error)
		}
		if r.Skipped != "" {
			fmt.Fprintf(w, "  skipped: %s\n", r.Skipped)
		}
		for _, d := range strings.Split(r.Detail, "\n") {
			if d != "" {
				fmt.Fprintf(w, "  - %s\n", d)
			}
		}
	}
	return nil
}

// WriteJSON writes the results as a JSON array of objects with the fields
// scenario, bound_ms, measured_ms, baseline_ms (-1 where no baseline
// applies) and pass, plus the explanatory fields of Result.
func WriteJSON(w io.Writer, results []Result) error {
	if results == nil {
		results = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(results)
}

func (r Result) verdict() string {
	switch {
	case r.Skipped != "":
		return "skipped"
	case r.Error != "":
		return "ERROR"
	case r.Pass:
		return "pass"
	}
	return "FAIL"
}

func (r Result) boundCell() string {
	if r.Bound != "" {
		return r.Bound
	}
	return "<= " + fmtMS(r.BoundMS)
}

func (r Result) measuredCell() string {
	if r.Error != "" || r.Skipped != "" {
		return "-"
	}
	if r.Measured != "" {
		return r.Measured
	}
	return fmtMS(r.MeasuredMS)
}

func (r Result) baselineCell() string {
	switch {
	case r.Baseline != "":
		return r.Baseline
	case r.BaselineCapped:
		return "> " + fmtMS(r.BaselineMS)
	case r.BaselineMS < 0:
		return "n/a"
	}
	return fmtMS(r.BaselineMS)
}

// fmtMS formats milliseconds: "45 ms", "2.08 s", "60 s".
func fmtMS(v float64) string {
	return fmtDur(time.Duration(v * float64(time.Millisecond)))
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	case d < 100*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}
