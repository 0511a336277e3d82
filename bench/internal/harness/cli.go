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
	def := DefaultConfig()
	quick := fs.Bool("quick", false, "short smoke run (1 rep, short windows, fewer connections); explicit flags still win")
	reps := fs.Int("reps", def.Reps, "repetitions per side and scenario (median reported)")
	dur := fs.Duration("duration", def.Duration, "measured window per measurement")
	warm := fs.Duration("warmup", def.Warmup, "warm-up before each measured window")
	conns := fs.String("conns", "50,500", "connection counts for the request/response scenario")
	pipeConns := fs.Int("pipe-conns", def.PipeConns, "connections in the in-flight scenario")
	depth := fs.Int("depth", def.PipeDepth, "calls in flight per connection in the in-flight scenario")
	memConns := fs.Int("mem-conns", def.MemConns, "connections held in the memory scenario")
	memSettle := fs.Duration("mem-settle", def.MemSettle, "idle time before each memory reading with connections held (longer than the heartbeat interval)")
	pongConns := fs.String("pong-conns", "1,50", "connection counts for the PONG-delay scenario")
	pongSlow := fs.Int("pong-slow", def.PongSlow, "sleep calls kept running per connection in the PONG-delay scenario")
	pongSleep := fs.Duration("pong-sleep", def.PongSleep, "duration of each sleep call in the PONG-delay scenario")
	pingEvery := fs.Duration("ping-every", def.PongEvery, "PING interval per connection in the PONG-delay scenario")
	pongWindow := fs.Duration("pong-window", def.PongWindow, "measured window of each PONG-delay phase (after -warmup)")
	burstConns := fs.Int("burst-conns", def.BurstConns, "connections in the burst scenario")
	burstSeed := fs.Uint64("burst-seed", def.BurstSeed, "seed of the burst scenario's idle gaps")
	tlsConns := fs.Int("tls-conns", def.TLSConns, "connections in the request/response scenario over TLS")
	only := fs.String("only", "", "comma-separated scenario families to run: "+strings.Join(families, ", ")+" (default all)")
	rawBuf := fs.Bool("raw-bufwrite", false, "raw server coalesces echoes with a bufio.Writer (a tougher baseline)")
	prof := fs.String("cpuprofile", "", "write CPU profiles of each measured window, server child and load generator (and a heap profile in the memory scenario), into this directory")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	strict := fs.Bool("strict", false, "exit with status 3 when a target is missed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tcpprobench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := def
	if *quick {
		cfg = QuickConfig()
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["reps"] {
		cfg.Reps = *reps
	}
	if set["duration"] {
		cfg.Duration = *dur
	}
	if set["warmup"] {
		cfg.Warmup = *warm
	}
	for name, dst := range map[string]*[]int{"conns": &cfg.RRConns, "pong-conns": &cfg.PongConns} {
		if !set[name] {
			continue
		}
		v := *conns
		if name == "pong-conns" {
			v = *pongConns
		}
		*dst = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				fmt.Fprintf(stderr, "tcpprobench: -%s: %v\n", name, err)
				return 2
			}
			*dst = append(*dst, n)
		}
	}
	if set["pipe-conns"] {
		cfg.PipeConns = *pipeConns
	}
	if set["depth"] {
		cfg.PipeDepth = *depth
	}
	if set["mem-conns"] {
		cfg.MemConns = *memConns
	}
	if set["mem-settle"] {
		cfg.MemSettle = *memSettle
	}
	if set["pong-slow"] {
		cfg.PongSlow = *pongSlow
	}
	if set["pong-sleep"] {
		cfg.PongSleep = *pongSleep
	}
	if set["ping-every"] {
		cfg.PongEvery = *pingEvery
	}
	if set["pong-window"] {
		cfg.PongWindow = *pongWindow
	}
	if set["burst-conns"] {
		cfg.BurstConns = *burstConns
	}
	if set["burst-seed"] {
		cfg.BurstSeed = *burstSeed
	}
	if set["tls-conns"] {
		cfg.TLSConns = *tlsConns
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	cfg.RawBufWrite = *rawBuf
	cfg.CPUProfileDir = *prof

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
	if *asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			fmt.Fprintln(stderr, "tcpprobench:", err)
			return 1
		}
	} else {
		rep.WriteTable(stdout)
	}
	switch {
	case rep.Verdict == "ERROR":
		return 1
	case rep.Verdict == "FAIL" && *strict:
		return 3
	}
	return 0
}
