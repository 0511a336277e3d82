package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/verify"
)

func init() {
	register("verify", "run the fault scenarios on this machine (root) and measure them", runVerify)
}

// runArg makes `tcppro verify` the child that runs the scenarios (see
// superviseVerify).
const runArg = "__run"

// runVerify runs the scenarios and prints the table (or JSON) on stdout,
// progress on stderr. Exit status: 0 every row passes, 1 any fails, 2 on a
// usage error or where the lab cannot run (not root, no ip or nft), 130
// when interrupted.
func runVerify(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case verify.AgentArgs[1]:
			// The client agent the scenarios start inside their client
			// namespaces.
			return verify.AgentMain(args[1:])
		case runArg:
			return runVerifyScenarios(args[1:])
		}
	}
	// Usage errors and -h are answered here, before any child starts.
	if _, code, ok := parseVerifyFlags(args); !ok {
		return code
	}
	return superviseVerify(args)
}

// superviseVerify runs the scenarios in a child process (this program as
// `tcppro verify __run ARGS`) and, whatever way it ends, removes the labs
// it leaves: the scenarios run tcppro's server and client code in that
// process, and a panic in one of their goroutines, or a SIGKILL, ends it
// without its own cleanup. Ctrl-C reaches the child too (it removes its
// labs and exits 130); SIGTERM sent to this process is passed on.
func superviseVerify(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify: finding this program:", err)
		return 2
	}
	cmd := exec.Command(exe, append([]string{"verify", runArg}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	go func() {
		for sig := range sigs {
			// A terminal's Ctrl-C reaches the child already; a second
			// signal only confirms it.
			_ = cmd.Process.Signal(sig)
		}
	}()
	err = cmd.Wait()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		code = 2
	}
	// The child's TLS files (--tls) are named after its pid too: a crash
	// leaves them behind.
	removeTLSDirs(cmd.Process.Pid)
	// The child's labs are named after its pid: any still there were left
	// by a crash. CleanStale kills what runs in them and deletes them.
	prefix := fmt.Sprintf("tcpprofl-%d-", cmd.Process.Pid)
	if left := labsWithPrefix(prefix); len(left) > 0 {
		cerr := faultnet.CleanStale()
		if still := labsWithPrefix(prefix); len(still) > 0 || cerr != nil {
			fmt.Fprintf(os.Stderr, "tcppro verify: the run ended abnormally (status %d) and its labs could not all be removed: %v %v\n", code, still, cerr)
		} else {
			fmt.Fprintf(os.Stderr, "tcppro verify: the run ended abnormally (status %d); the %d namespaces it left have been removed\n", code, len(left))
		}
		if code == 0 {
			code = 2
		}
	}
	return code
}

// labsWithPrefix lists the named network namespaces (`ip netns list`)
// whose name starts with prefix.
func labsWithPrefix(prefix string) []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// tlsDirPattern is the os.MkdirTemp pattern of the TLS files of the run
// in process pid.
func tlsDirPattern(pid int) string { return fmt.Sprintf("tcppro-verify-tls-%d-", pid) }

// removeTLSDirs removes the TLS directories the run in process pid left.
func removeTLSDirs(pid int) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tlsDirPattern(pid)+"*"))
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// verifyFlags are the command's settings.
type verifyFlags struct {
	asJSON      bool
	scenarios   []verify.Scenario
	baselineCap time.Duration
	serial      bool
	tls         bool
	// soak, when set, runs the soak instead of the scenarios.
	soak *verify.SoakOptions
}

// parseVerifyFlags parses the command line; when ok is false the command
// ends with code (after -h, or a usage error it has reported).
func parseVerifyFlags(args []string) (f verifyFlags, code int, ok bool) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tcppro verify [--json] [--scenario NAME[,NAME...]] [--baseline-cap D] [--serial] [--tls]\n"+
			"       tcppro verify --soak DURATION [--json] [--seed N] [--transport T] [--soak-conns N] [--soak-rate R] [--heartbeat-timeout D]\n\n"+
			"Runs tcppro's fault scenarios on this machine and measures them: each builds a\n"+
			"lab of network namespaces (addresses in 198.18.0.0/15; nothing outside the lab is\n"+
			"touched), runs a tcppro server and client on separate hosts of it with heartbeat\n"+
			"interval 1s and timeout 2s, produces a real fault and checks tcppro's bound.\n"+
			"Rows 1-4 also measure a plain net.Conn on the kernel's defaults. Rows 9-15 run a\n"+
			"fleet (4 or 5 servers, 20 for subsetting) with etcd or dnsmasq where the row needs\n"+
			"them, and measure the clients' discovery and balancing. With --tls every\n"+
			"scenario runs over TLS (a throwaway CA and certificate, deleted at the end). Needs root.\n"+
			"Everything it creates is removed when it ends, fails or is interrupted.\n"+
			"Exit status: 0 every row passes (or is skipped: a program it needs, etcd or dnsmasq, is\n"+
			"missing), 1 any fails, 2 usage error or unsupported host.\n\n"+
			"With --soak DURATION (1m to 30m) it runs the soak instead: one `tcppro serve` (the\n"+
			"event loop by default, --transport to choose) holding --soak-conns connections (19000)\n"+
			"from client agents on 4 or more hosts (one connection per client, at most 4750 per\n"+
			"agent), heartbeats every 1s (timeout --heartbeat-timeout, 10s), --soak-rate calls/s (200)\n"+
			"on clients picked at random, and faults from a schedule seeded with --seed (printed;\n"+
			"the same seed replays the same faults): a client host's link cut, its agent frozen\n"+
			"(SIGSTOP/SIGCONT), its agent killed and replaced, one at a time. It passes when the\n"+
			"server's descriptors, goroutines and RSS in the last minute (fault-free) are flat\n"+
			"against the first minute after the ramp, every call ended (success or typed error,\n"+
			"within its deadline), and no client untouched by a fault failed a call or lost its\n"+
			"connection. The server needs an open-file limit above the connections.\n\n"+
			"scenarios:\n")
		for _, s := range verify.Scenarios() {
			fmt.Fprintf(fs.Output(), "  %-18s %s\n", s.Name, s.Description)
		}
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print the results as a JSON array of {scenario, bound_ms, measured_ms, baseline_ms, pass, ...}")
	only := fs.String("scenario", "", "run only these scenarios, comma-separated (default: all)")
	baselineCap := fs.Duration("baseline-cap", verify.DefaultBaselineCap, "how long a plain connection is watched before its row says \"> cap\"")
	serial := fs.Bool("serial", false, "run the scenarios one after the other (default: all at once, each in its own lab)")
	useTLS := fs.Bool("tls", false, "run every scenario over TLS between the clients and the service (a CA and a certificate are generated for the run into a temporary directory, removed at the end)")
	soakFor := fs.Duration("soak", 0, "run the soak for this long once every connection is up (1m to 30m) instead of the scenarios")
	seed := fs.Uint64("seed", 0, "--soak: the fault schedule's seed (0: drawn at random and printed)")
	transport := fs.String("transport", string(netx.TransportEpoll), "--soak: the server's transport: epoll (the event loop), netconn (a goroutine per connection) or auto")
	soakConns := fs.Int("soak-conns", verify.DefaultSoakConns, "--soak: connections the server holds, one per client")
	soakRate := fs.Float64("soak-rate", verify.DefaultSoakRate, "--soak: calls per second across all the connections")
	soakHBTimeout := fs.Duration("heartbeat-timeout", verify.DefaultSoakHeartbeatTimeout, "--soak: the server's and the clients' heartbeat timeout (the interval is 1s); the calls' deadline is 1s more")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, 0, false
		}
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return f, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tcppro verify: unexpected argument %q\n", fs.Arg(0))
		return f, 2, false
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	if *soakFor == 0 {
		for _, name := range []string{"seed", "transport", "soak-conns", "soak-rate", "heartbeat-timeout"} {
			if given[name] {
				fmt.Fprintf(os.Stderr, "tcppro verify: --%s is a --soak flag\n", name)
				return f, 2, false
			}
		}
	} else {
		for _, name := range []string{"scenario", "baseline-cap", "serial", "tls"} {
			if given[name] {
				fmt.Fprintf(os.Stderr, "tcppro verify: --%s does not apply to --soak\n", name)
				return f, 2, false
			}
		}
		so := verify.SoakOptions{Duration: *soakFor, Seed: *seed, Transport: netx.Transport(*transport), Conns: *soakConns, Rate: *soakRate, HeartbeatTimeout: *soakHBTimeout}
		if err := so.Validate(); err != nil {
			fmt.Fprintln(os.Stderr, "tcppro verify:", strings.TrimPrefix(err.Error(), "verify: "))
			return f, 2, false
		}
		return verifyFlags{asJSON: *asJSON, soak: &so}, 0, true
	}
	if *baselineCap <= 0 {
		fmt.Fprintf(os.Stderr, "tcppro verify: --baseline-cap=%v: must be positive\n", *baselineCap)
		return f, 2, false
	}
	scenarios := verify.Scenarios()
	if *only != "" {
		scenarios = nil
		for _, name := range strings.Split(*only, ",") {
			s, ok := verify.Lookup(strings.TrimSpace(name))
			if !ok {
				fmt.Fprintf(os.Stderr, "tcppro verify: no scenario %q; the scenarios are: %s\n", name, strings.Join(verify.Names(), ", "))
				return f, 2, false
			}
			scenarios = append(scenarios, s)
		}
	}
	return verifyFlags{asJSON: *asJSON, scenarios: scenarios, baselineCap: *baselineCap, serial: *serial, tls: *useTLS}, 0, true
}

// runVerifyScenarios is the child: it runs the scenarios and prints the
// report.
func runVerifyScenarios(args []string) int {
	f, code, ok := parseVerifyFlags(args)
	if !ok {
		return code
	}
	scenarios := f.scenarios

	// Ctrl-C or SIGTERM cancels the context, which closes every lab: its
	// processes are killed, its namespaces, links and nftables tables
	// deleted.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := verify.Check(ctx); err != nil {
		if errors.Is(err, faultnet.ErrUnsupported) {
			fmt.Fprintf(os.Stderr, "tcppro verify: cannot run the fault lab here: %v\n"+
				"It needs root (network namespaces and nftables), `ip` (iproute2) and `nft` (nftables): run it as `sudo tcppro verify`.\n", err)
			return 2
		}
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	if f.soak != nil {
		return runSoak(ctx, stop, f)
	}
	var tlsFiles *verify.TLSFiles
	transport := "plain TCP"
	if f.tls {
		dir, err := os.MkdirTemp("", tlsDirPattern(os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro verify: --tls:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		if tlsFiles, err = verify.NewTLSFiles(dir); err != nil {
			fmt.Fprintln(os.Stderr, "tcppro verify: --tls:", err)
			return 2
		}
		transport = "TLS (a CA and a certificate for " + verify.TLSServerName + " in " + dir + ", removed at the end)"
	}
	fmt.Fprintf(os.Stderr, "tcppro verify: running %d scenario(s)%s over %s; plain-TCP baselines capped at %v\n",
		len(scenarios), map[bool]string{true: " one after the other", false: " at once, each in its own lab"}[f.serial], transport, f.baselineCap)
	start := time.Now()
	results, err := verify.RunAll(ctx, scenarios, verify.Options{
		BaselineCap: f.baselineCap,
		Progress:    os.Stderr,
		Parallel:    !f.serial,
		TLS:         tlsFiles,
	})
	return finishRun(ctx, stop, f, "done", start, results, err)
}

// runSoak runs the soak and prints its rows.
func runSoak(ctx context.Context, stop func(), f verifyFlags) int {
	o := *f.soak
	o.Progress = os.Stderr
	start := time.Now()
	rows, err := verify.RunSoak(ctx, o)
	return finishRun(ctx, stop, f, "soak done", start, rows, err)
}

// finishRun reports how a run started at start ended — interrupted, failed,
// or done and its rows printed — and returns the exit status.
func finishRun(ctx context.Context, stop func(), f verifyFlags, done string, start time.Time, rows []verify.Result, err error) int {
	if ctx.Err() != nil {
		stop()
		fmt.Fprintln(os.Stderr, "tcppro verify: interrupted; every lab has been removed")
		return 130
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "tcppro verify: %s in %v\n", done, time.Since(start).Round(100*time.Millisecond))
	return writeResults(f, rows)
}

// writeResults prints the rows as a table or as JSON; the exit status is
// 1 when a row fails.
func writeResults(f verifyFlags, results []verify.Result) int {
	var err error
	if f.asJSON {
		err = verify.WriteJSON(os.Stdout, results)
	} else {
		err = verify.WriteTable(os.Stdout, results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	for _, r := range results {
		if !r.Pass && r.Skipped == "" {
			return 1
		}
	}
	return 0
}
