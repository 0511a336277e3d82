package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/doctor"
	"github.com/tcppro/tcppro/sysinfo"
)

func init() {
	register("doctor", "audit this host against the TCP practices", runDoctor)
}

// doctorPorts is the repeatable --port flag; one value may also list
// several ports separated by commas, which is how TCPPRO_PORT sets more
// than one.
type doctorPorts []int

func (p *doctorPorts) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (p *doctorPorts) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q is not a TCP port (1-65535)", f)
		}
		*p = append(*p, n)
	}
	return nil
}

// runDoctor prints one row per check and exits 0 when all are ok, 1 on any
// warn, 2 on any fail (and 2 on a usage error).
func runDoctor(args []string) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tcppro doctor [--json] [--port N]... [--backlog N]\n\n"+
			"Audits this host against the TCP practices: one row per check with what was\n"+
			"found, why it matters and the exact fix. Exit status: 0 all ok, 1 any warn,\n"+
			"2 any fail. Run as root to see every process's sockets.\n\nflags:")
		fs.PrintDefaults()
	}
	var ports doctorPorts
	asJSON := fs.Bool("json", false, "print the report as JSON: {checks: [{id, status, found, why, fix}], summary}")
	fs.Var(&ports, "port", "a port someone plans to listen on; repeatable, or comma-separated")
	backlog := fs.Int("backlog", 0, "the listen backlog a planned service will ask for (0: do not check)")
	verbose := fs.Bool("verbose", false, "also print why for checks that are ok")
	root := fs.String("root", "/", "root of the /proc tree to audit (a fixture tree, for tests)")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "tcppro doctor: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tcppro doctor: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *backlog < 0 {
		fmt.Fprintf(os.Stderr, "tcppro doctor: --backlog=%d: must not be negative\n", *backlog)
		return 2
	}

	r := doctor.Run(doctor.Options{FS: sysinfo.FS{Root: *root}, Ports: ports, Backlog: *backlog})
	var err error
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		err = enc.Encode(r)
	} else {
		err = r.WriteText(os.Stdout, doctor.TextOptions{Colour: useColour(os.Stdout), Verbose: *verbose})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tcppro doctor: %v\n", err)
		return 2
	}
	return r.ExitCode()
}

// useColour is true when f is a terminal and NO_COLOR is unset
// (https://no-color.org).
func useColour(f *os.File) bool {
	if _, ok := os.LookupEnv("NO_COLOR"); ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
