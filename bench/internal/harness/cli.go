package harness

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// Main is the tcpprobench command: flags in, exit status out.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcpprobench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := DefaultConfig()
	bindFlags(fs, &cfg)
	quick := fs.Bool("quick", false, "short smoke run (1 rep, short windows, fewer connections); explicit flags still win")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	outFile := fs.String("out", "", "also write the report as JSON to this file")
	svgDir := fs.String("svg", "", "also write one SVG chart per scenario (headline metrics, grouped bars per side) into this directory")
	strict := fs.Bool("strict", false, "exit with status 3 when a target is missed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tcpprobench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *quick {
		// The quick run's values, with the flags given on the command line
		// set again on top.
		q := QuickConfig()
		qs := flag.NewFlagSet("quick", flag.ContinueOnError)
		bindFlags(qs, &q)
		fs.Visit(func(f *flag.Flag) {
			if qs.Lookup(f.Name) != nil {
				_ = qs.Set(f.Name, f.Value.String()) // parsed once already
			}
		})
		cfg = q
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once; the children then see stdin EOF and exit
	}()
	rep, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "tcpprobench:", err)
		return 2
	}
	failed := false
	if *outFile != "" {
		if err := writeFile(*outFile, rep.WriteJSON); err != nil {
			fmt.Fprintln(stderr, "tcpprobench:", err)
			failed = true
		}
	}
	if *svgDir != "" {
		files, err := rep.WriteSVGs(*svgDir)
		if err != nil {
			fmt.Fprintln(stderr, "tcpprobench:", err)
			failed = true
		}
		for _, f := range files {
			fmt.Fprintln(stderr, "wrote", f)
		}
	}
	if *asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintln(stderr, "tcpprobench:", err)
			return 1
		}
	} else {
		rep.WriteTable(stdout)
	}
	switch {
	case rep.Verdict == "ERROR" || failed:
		return 1
	case rep.Verdict == "FAIL" && *strict:
		return 3
	}
	return 0
}

// bindFlags defines the flags of the scenarios' configuration on fs, each
// writing into cfg, with cfg's values as defaults.
func bindFlags(fs *flag.FlagSet, cfg *Config) {
	fs.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions per side and scenario (median reported)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured window per measurement")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "warm-up before each measured window")
	fs.Var((*intList)(&cfg.RRConns), "conns", "connection counts for the request/response scenario")
	fs.IntVar(&cfg.PipeConns, "pipe-conns", cfg.PipeConns, "connections in the in-flight scenario")
	fs.IntVar(&cfg.PipeDepth, "depth", cfg.PipeDepth, "calls in flight per connection in the in-flight scenario")
	fs.IntVar(&cfg.MemConns, "mem-conns", cfg.MemConns, "connections held in the memory scenario")
	fs.DurationVar(&cfg.MemSettle, "mem-settle", cfg.MemSettle, "idle time before each memory reading with connections held (longer than the heartbeat interval)")
	fs.Var((*intList)(&cfg.PongConns), "pong-conns", "connection counts for the PONG-delay scenario")
	fs.IntVar(&cfg.PongSlow, "pong-slow", cfg.PongSlow, "sleep calls kept running per connection in the PONG-delay scenario")
	fs.DurationVar(&cfg.PongSleep, "pong-sleep", cfg.PongSleep, "duration of each sleep call in the PONG-delay scenario")
	fs.DurationVar(&cfg.PongEvery, "ping-every", cfg.PongEvery, "PING interval per connection in the PONG-delay scenario")
	fs.DurationVar(&cfg.PongWindow, "pong-window", cfg.PongWindow, "measured window of each PONG-delay phase (after -warmup)")
	fs.IntVar(&cfg.BurstConns, "burst-conns", cfg.BurstConns, "connections in the burst scenario")
	fs.Uint64Var(&cfg.BurstSeed, "burst-seed", cfg.BurstSeed, "seed of the burst scenario's idle gaps")
	fs.IntVar(&cfg.TLSConns, "tls-conns", cfg.TLSConns, "connections in the request/response scenario over TLS")
	fs.IntVar(&cfg.HBConns, "hb-conns", cfg.HBConns, "idle connections held in the heartbeat-CPU scenario")
	fs.DurationVar(&cfg.HBInterval, "hb-interval", cfg.HBInterval, "heartbeat interval of tcppro (Session.HeartbeatInterval) and grpc (server keepalive Time) in the heartbeat-CPU scenario (>= 1s)")
	fs.DurationVar(&cfg.HBSettle, "hb-settle", cfg.HBSettle, "wait after every connection is up, before the heartbeat-CPU window (longer than -hb-interval)")
	fs.DurationVar(&cfg.HBWindow, "hb-window", cfg.HBWindow, "measured window of the heartbeat-CPU scenario")
	fs.IntVar(&cfg.HolderConns, "holder-conns", cfg.HolderConns, "most connections per holder process (memory and heartbeat scenarios); more are spread over several holders")
	fs.Var((*stringList)(&cfg.Sides), "sides", "comma-separated sides to run: "+strings.Join(allSides, ", ")+" (default all)")
	fs.Var((*stringList)(&cfg.Only), "only", "comma-separated scenario families to run: "+strings.Join(families, ", ")+" (default all)")
	fs.BoolVar(&cfg.RawBufWrite, "raw-bufwrite", cfg.RawBufWrite, "raw server coalesces echoes with a bufio.Writer (a tougher baseline)")
	fs.StringVar(&cfg.CPUProfileDir, "cpuprofile", cfg.CPUProfileDir, "write CPU profiles of each measured window, server child and load generator (and a heap profile in the memory scenario), into this directory")
}

// writeFile writes a file through write, reporting the first error.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// intList is a flag of comma-separated integers.
type intList []int

func (l *intList) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	var ns []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		ns = append(ns, n)
	}
	*l = ns
	return nil
}

// stringList is a flag of comma-separated words.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = nil
	if v != "" {
		*l = strings.Split(v, ",")
	}
	return nil
}
