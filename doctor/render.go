package doctor

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// TextOptions controls WriteText.
type TextOptions struct {
	// Colour marks statuses with ANSI colours; set it only when writing to
	// a terminal.
	Colour bool
	// Verbose also prints why for checks that are ok.
	Verbose bool
}

var colours = map[Status]string{OK: "\x1b[32m", Warn: "\x1b[33m", Fail: "\x1b[1;31m"}

const reset = "\x1b[0m"

// WriteText writes r as an aligned table, one row per check (status,
// check, what was found), with why and fix beneath every check that is not
// ok, then a summary line:
//
//	STATUS  CHECK         FOUND
//	warn    syn-retries   tcp_syn_retries=6: connect() ... gives up after 127 s
//	                      why: ...
//	                      fix: sysctl -w net.ipv4.tcp_syn_retries=3 ...
//	ok      somaxconn     somaxconn=4096, ...
//
//	13 checks: 9 ok, 3 warn, 1 fail
func (r Report) WriteText(w io.Writer, o TextOptions) error {
	bw := bufio.NewWriter(w)
	idw := len("CHECK")
	for _, c := range r.Checks {
		idw = max(idw, utf8.RuneCountInString(c.ID))
	}
	const stw = len("STATUS")
	indent := strings.Repeat(" ", stw+2+idw+2)
	paint := func(s Status, text string) string {
		if !o.Colour {
			return text
		}
		return colours[s] + text + reset
	}
	fmt.Fprintf(bw, "%-*s  %-*s  %s\n", stw, "STATUS", idw, "CHECK", "FOUND")
	for _, c := range r.Checks {
		// Pad before colouring: escape codes have no width.
		st := paint(c.Status, fmt.Sprintf("%-*s", stw, c.Status))
		fmt.Fprintf(bw, "%s  %-*s  %s\n", st, idw, c.ID, oneLine(c.Found))
		if c.Status != OK || o.Verbose {
			fmt.Fprintf(bw, "%swhy: %s\n", indent, oneLine(c.Why))
		}
		if c.Fix != "" && c.Status != OK {
			fmt.Fprintf(bw, "%sfix: %s\n", indent, oneLine(c.Fix))
		}
	}
	s := r.Summary
	line := fmt.Sprintf("%d checks: %d ok, %d warn, %d fail", s.Total, s.OK, s.Warn, s.Fail)
	fmt.Fprintf(bw, "\n%s\n", paint(s.Status, line))
	return bw.Flush()
}

// oneLine keeps a field on its row even if a file contributed a newline.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
