package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/verify"
)

func init() {
	register("verify", "run the fault scenarios on this machine (root) and measure them", runVerify)
}

// runVerify runs the scenarios and prints the table (or JSON) on stdout,
// progress on stderr. Exit status: 0 every row passes, 1 any fails, 2 on a
// usage error or where the lab cannot run (not root, no ip or nft), 130
// when interrupted.
func runVerify(args []string) int {
	// The client agent the scenarios start inside their client namespaces.
	if len(args) > 0 && args[0] == verify.AgentArgs[1] {
		return verify.AgentMain(args[1:])
	}
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tcppro verify [--json] [--scenario NAME[,NAME...]] [--baseline-cap D] [--serial]\n\n"+
			"Runs tcppro's fault scenarios on this machine and measures them: each builds a\n"+
			"lab of network namespaces (addresses in 198.18.0.0/15; nothing outside the lab is\n"+
			"touched), runs a tcppro server and client on separate hosts of it with heartbeat\n"+
			"interval 1s and timeout 1s, produces a real fault and checks tcppro's bound.\n"+
			"Rows 1-4 also measure a plain net.Conn on the kernel's defaults. Needs root.\n"+
			"Everything it creates is removed when it ends, fails or is interrupted.\n"+
			"Exit status: 0 every row passes, 1 any fails, 2 usage error or unsupported host.\n\n"+
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
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tcppro verify: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *baselineCap <= 0 {
		fmt.Fprintf(os.Stderr, "tcppro verify: --baseline-cap=%v: must be positive\n", *baselineCap)
		return 2
	}
	scenarios := verify.Scenarios()
	if *only != "" {
		scenarios = nil
		for _, name := range strings.Split(*only, ",") {
			s, ok := verify.Lookup(strings.TrimSpace(name))
			if !ok {
				fmt.Fprintf(os.Stderr, "tcppro verify: no scenario %q; the scenarios are: %s\n", name, strings.Join(verify.Names(), ", "))
				return 2
			}
			scenarios = append(scenarios, s)
		}
	}

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
	fmt.Fprintf(os.Stderr, "tcppro verify: running %d scenario(s)%s; plain-TCP baselines capped at %v\n",
		len(scenarios), map[bool]string{true: " one after the other", false: " at once, each in its own lab"}[*serial], *baselineCap)
	start := time.Now()
	results, err := verify.RunAll(ctx, scenarios, verify.Options{
		BaselineCap: *baselineCap,
		Progress:    os.Stderr,
		Parallel:    !*serial,
	})
	if ctx.Err() != nil {
		stop()
		fmt.Fprintln(os.Stderr, "tcppro verify: interrupted; every lab has been removed")
		return 130
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "tcppro verify: done in %v\n", time.Since(start).Round(100*time.Millisecond))
	if *asJSON {
		err = verify.WriteJSON(os.Stdout, results)
	} else {
		err = verify.WriteTable(os.Stdout, results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro verify:", err)
		return 2
	}
	for _, r := range results {
		if !r.Pass {
			return 1
		}
	}
	return 0
}
