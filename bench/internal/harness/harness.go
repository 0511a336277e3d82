// Package harness is the side-by-side benchmark of tcppro against a minimal
// goroutine-per-connection std-net echo server. Both servers run as separate
// child processes (this executable re-exec'd, see ChildEnv), so their CPU time
// (/proc/PID/stat utime+stime) and memory (/proc/PID/status VmRSS, runtime
// heap+stack reported by the child itself) are theirs alone; the load
// generator runs in the parent, on 127.0.0.1 only. Repetitions alternate the
// order of the two sides (raw first on odd reps, tcppro first on even ones)
// so a noisy shared machine affects both alike, and each figure is the median
// over the repetitions.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// fdLimit is the per-process open-file limit of the target machines; no
// process of the harness may need more descriptors than this.
const fdLimit = 20000

// Config is one benchmark run.
type Config struct {
	Reps          int           `json:"reps"`
	Duration      time.Duration `json:"duration_ns"`
	Warmup        time.Duration `json:"warmup_ns"`
	RRConns       []int         `json:"rr_conns"`
	PipeConns     int           `json:"pipe_conns"`
	PipeDepth     int           `json:"pipe_depth"`
	MemConns      int           `json:"mem_conns"`
	MemSettle     time.Duration `json:"mem_settle_ns"`
	Only          []string      `json:"only,omitempty"` // scenario families: rr, pipe, mem
	RawBufWrite   bool          `json:"raw_bufwrite"`
	CPUProfileDir string        `json:"cpuprofile_dir,omitempty"`
	Quick         bool          `json:"quick"`
}

// DefaultConfig is the full run.
func DefaultConfig() Config {
	return Config{
		Reps:      3,
		Duration:  3 * time.Second,
		Warmup:    time.Second,
		RRConns:   []int{50, 500},
		PipeConns: 50,
		PipeDepth: 32,
		MemConns:  9000,
		// Longer than the default heartbeat interval (5s), so every held
		// connection has been through a PING/PONG before each reading.
		MemSettle: 6 * time.Second,
	}
}

// QuickConfig is a short smoke run.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Quick = true
	c.Reps = 1
	c.Duration = 500 * time.Millisecond
	c.Warmup = 200 * time.Millisecond
	c.RRConns = []int{10, 50}
	c.PipeConns = 10
	c.MemConns = 500
	c.MemSettle = 100 * time.Millisecond
	return c
}

func (c *Config) validate() error {
	var errs []error
	if c.Reps < 1 {
		errs = append(errs, fmt.Errorf("reps: %d, want >= 1", c.Reps))
	}
	if c.Duration <= 0 || c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("duration %v / warmup %v: want > 0 / >= 0", c.Duration, c.Warmup))
	}
	limit := fdLimit - 200 // the process's own descriptors and some slack
	for _, n := range append(slices.Clone(c.RRConns), c.PipeConns, c.MemConns) {
		if n < 1 || n > limit {
			errs = append(errs, fmt.Errorf("connections: %d, want 1..%d (open-file limit %d per process)", n, limit, fdLimit))
		}
	}
	if c.PipeDepth < 2 {
		errs = append(errs, fmt.Errorf("depth: %d, want >= 2", c.PipeDepth))
	}
	for _, o := range c.Only {
		if o != "rr" && o != "pipe" && o != "mem" {
			errs = append(errs, fmt.Errorf("only: unknown scenario family %q (rr, pipe, mem)", o))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) wants(family string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, family)
}

// scenario is one comparison.
type scenario struct {
	name     string
	family   string // rr, pipe, mem
	title    string
	conns    int
	inflight int
	rpsMin   float64 // tcppro/raw req/s must be >= this
	cpuMax   float64 // tcppro/raw CPU per request must be <= this (0: no target)
}

func (c *Config) scenarios() []scenario {
	var out []scenario
	if c.wants("rr") {
		for _, n := range c.RRConns {
			out = append(out, scenario{
				name: fmt.Sprintf("rr-%d", n), family: "rr",
				title: fmt.Sprintf("req/resp %dB, %d conns x1", msgSize, n),
				conns: n, inflight: 1, rpsMin: 0.95, cpuMax: 1.10,
			})
		}
	}
	if c.wants("pipe") {
		out = append(out, scenario{
			name: fmt.Sprintf("pipe-%dx%d", c.PipeConns, c.PipeDepth), family: "pipe",
			title: fmt.Sprintf("%d in flight, %d conns", c.PipeDepth, c.PipeConns),
			conns: c.PipeConns, inflight: c.PipeDepth, rpsMin: 0.90,
		})
	}
	if c.wants("mem") {
		out = append(out, scenario{
			name: fmt.Sprintf("mem-%d", c.MemConns), family: "mem",
			title: fmt.Sprintf("memory, %d idle conns", c.MemConns),
			conns: c.MemConns,
		})
	}
	return out
}

// Memory targets for tcppro (absolute, per connection).
const (
	memTargetKiB       = 4.5
	goroutinesPerConn  = 1.0
	refRawRSSIdleKiB   = 3.7
	refRawRSSAfterKiB  = 7.6
	memTargetMetricRSS = "RSS KiB/conn after 1 req"
)

// Row is one line of the result table.
type Row struct {
	Scenario   string    `json:"scenario"`
	Title      string    `json:"title"`
	Metric     string    `json:"metric"`
	Raw        float64   `json:"raw"`    // median over reps
	Tcppro     float64   `json:"tcppro"` // median over reps
	Ratio      float64   `json:"ratio"`  // median over reps of the paired tcppro/raw ratio
	Target     string    `json:"target,omitempty"`
	Result     string    `json:"result,omitempty"` // PASS, FAIL, or "" (no target / no data)
	RawReps    []float64 `json:"raw_reps"`
	TcpproReps []float64 `json:"tcppro_reps"`
	format     string
}

// Report is the whole run.
type Report struct {
	Config    Config         `json:"config"`
	Host      map[string]any `json:"host"`
	Rows      []Row          `json:"rows"`
	Samples   map[string]any `json:"samples"`
	Errors    []string       `json:"errors,omitempty"`
	Verdict   string         `json:"verdict"` // PASS, FAIL, or ERROR
	Started   time.Time      `json:"started"`
	Elapsed   float64        `json:"elapsed_s"`
	Progress  io.Writer      `json:"-"`
	tput      map[string]map[string][]*tputSample
	mem       map[string][]*memSample
	scenarios []scenario
}

func (r *Report) logf(format string, args ...any) {
	if r.Progress != nil {
		fmt.Fprintf(r.Progress, format+"\n", args...)
	}
}

func (r *Report) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Errors = append(r.Errors, msg)
	r.logf("  ERROR %s", msg)
}

// Run runs every scenario cfg.Reps times, alternating the order of the two
// sides, and returns the report. It stops early when ctx is cancelled. Every
// child process is stopped and reaped before it returns.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	defer killAll()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.CPUProfileDir != "" {
		dir, err := filepath.Abs(cfg.CPUProfileDir)
		if err != nil {
			return nil, err
		}
		cfg.CPUProfileDir = dir
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	r := &Report{
		Config:   cfg,
		Progress: progress,
		Started:  time.Now(),
		Host: map[string]any{
			"cpus": runtime.NumCPU(), "gomaxprocs": runtime.GOMAXPROCS(0),
			"go": runtime.Version(), "goos": runtime.GOOS, "goarch": runtime.GOARCH,
		},
		tput:      map[string]map[string][]*tputSample{},
		mem:       map[string][]*memSample{},
		scenarios: cfg.scenarios(),
	}
	for _, sc := range r.scenarios {
		if sc.family == "mem" {
			r.mem[kindRaw] = make([]*memSample, cfg.Reps)
			r.mem[kindTcppro] = make([]*memSample, cfg.Reps)
			continue
		}
		r.tput[sc.name] = map[string][]*tputSample{
			kindRaw: make([]*tputSample, cfg.Reps), kindTcppro: make([]*tputSample, cfg.Reps),
		}
	}
	for rep := range cfg.Reps {
		order := []string{kindRaw, kindTcppro}
		if rep%2 == 1 {
			order = []string{kindTcppro, kindRaw}
		}
		for _, sc := range r.scenarios {
			for _, kind := range order {
				if ctx.Err() != nil {
					break
				}
				label := fmt.Sprintf("rep %d/%d %-14s %-6s", rep+1, cfg.Reps, sc.name, kind)
				if sc.family == "mem" {
					s, err := measureMemory(ctx, &cfg, kind, rep)
					if err != nil {
						r.errorf("%s: %v", label, err)
						continue
					}
					r.mem[kind][rep] = &s
					r.logf("%s  RSS %.2f / %.2f KiB/conn (idle / after 1 req; %.2f after FreeOSMemory), heap+stack %.2f / %.2f KiB/conn, goroutines %.3f / %.3f per conn",
						label, s.RSSIdle, s.RSSAfter, s.RSSFreed, s.HSIdle, s.HSAfter, s.GorIdle, s.GorAfter)
					continue
				}
				s, err := measureThroughput(ctx, &cfg, kind, sc.name, rep, sc.conns, sc.inflight)
				if err != nil {
					r.errorf("%s: %v", label, err)
					continue
				}
				r.tput[sc.name][kind][rep] = &s
				r.logf("%s  %9.0f req/s  server CPU %6.2f s/Mreq  load-gen CPU %6.2f s/Mreq  server syscalls/req %.2f r + %.2f w  (%d req in %.2fs, server %.2f CPU s)",
					label, s.RPS, s.CPUPerM, s.LoadPerM, s.SysReads, s.SysWrites, s.Requests, s.Window, s.CPU)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		r.Errors = append(r.Errors, "interrupted: "+err.Error())
	}
	r.build()
	r.Elapsed = time.Since(r.Started).Seconds()
	return r, nil
}

// build turns the samples into rows and a verdict.
func (r *Report) build() {
	r.Samples = map[string]any{}
	for _, sc := range r.scenarios {
		if sc.family == "mem" {
			r.Samples[sc.name] = r.mem
			r.memRows(sc)
			continue
		}
		r.Samples[sc.name] = r.tput[sc.name]
		raw, tp := r.tput[sc.name][kindRaw], r.tput[sc.name][kindTcppro]
		get := func(f func(*tputSample) float64) func(int, string) (float64, bool) {
			return func(rep int, kind string) (float64, bool) {
				s := raw[rep]
				if kind == kindTcppro {
					s = tp[rep]
				}
				if s == nil {
					return 0, false
				}
				return f(s), true
			}
		}
		rps := r.row(sc, "req/s", "%.0f", get(func(s *tputSample) float64 { return s.RPS }))
		rps.check(fmt.Sprintf(">= %.2fx raw", sc.rpsMin), rps.Ratio >= sc.rpsMin)
		cpu := r.row(sc, "server CPU s/Mreq", "%.2f", get(func(s *tputSample) float64 { return s.CPUPerM }))
		if sc.cpuMax > 0 {
			cpu.check(fmt.Sprintf("<= %.2fx raw", sc.cpuMax), cpu.Ratio <= sc.cpuMax)
		}
		load := r.row(sc, "load-gen CPU s/Mreq", "%.2f", get(func(s *tputSample) float64 { return s.LoadPerM }))
		sys := r.row(sc, "server read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.SysReads + s.SysWrites }))
		lsys := r.row(sc, "load-gen read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.LoadSys }))
		r.Rows = append(r.Rows, *rps, *cpu, *sys, *load, *lsys)
	}
	r.Verdict = "PASS"
	for _, row := range r.Rows {
		if row.Result == "FAIL" {
			r.Verdict = "FAIL"
		}
	}
	if len(r.Errors) > 0 {
		r.Verdict = "ERROR"
	}
}

func (r *Report) memRows(sc scenario) {
	get := func(f func(*memSample) float64) func(int, string) (float64, bool) {
		return func(rep int, kind string) (float64, bool) {
			s := r.mem[kind][rep]
			if s == nil {
				return 0, false
			}
			return f(s), true
		}
	}
	rssIdle := r.row(sc, "RSS KiB/conn idle", "%.2f", get(func(s *memSample) float64 { return s.RSSIdle }))
	rssAfter := r.row(sc, memTargetMetricRSS, "%.2f", get(func(s *memSample) float64 { return s.RSSAfter }))
	rssAfter.absCheck(memTargetKiB, fmt.Sprintf("<= %.1f KiB", memTargetKiB))
	rssFreed := r.row(sc, "  same, after FreeOSMemory", "%.2f", get(func(s *memSample) float64 { return s.RSSFreed }))
	freeRes := r.row(sc, "  freed heap still resident KiB/conn", "%.2f", get(func(s *memSample) float64 { return s.FreeRes }))
	hsIdle := r.row(sc, "heap+stack KiB/conn idle", "%.2f", get(func(s *memSample) float64 { return s.HSIdle }))
	hsAfter := r.row(sc, "heap+stack KiB/conn after 1 req", "%.2f", get(func(s *memSample) float64 { return s.HSAfter }))
	hsAfter.absCheck(memTargetKiB, fmt.Sprintf("<= %.1f KiB", memTargetKiB))
	gIdle := r.row(sc, "goroutines/conn idle", "%.3f", get(func(s *memSample) float64 { return s.GorIdle }))
	gIdle.absCheck(goroutinesPerConn+0.001, "<= 1")
	gAfter := r.row(sc, "goroutines/conn after 1 req", "%.3f", get(func(s *memSample) float64 { return s.GorAfter }))
	gAfter.absCheck(goroutinesPerConn+0.001, "<= 1")
	r.Rows = append(r.Rows, *rssIdle, *rssAfter, *rssFreed, *freeRes, *hsIdle, *hsAfter, *gIdle, *gAfter)
}

func (r *Report) row(sc scenario, metric, format string, get func(rep int, kind string) (float64, bool)) *Row {
	row := &Row{Scenario: sc.name, Title: sc.title, Metric: metric, format: format, RawReps: []float64{}, TcpproReps: []float64{}}
	var ratios []float64
	for rep := range r.Config.Reps {
		a, okA := get(rep, kindRaw)
		b, okB := get(rep, kindTcppro)
		if okA {
			row.RawReps = append(row.RawReps, a)
		}
		if okB {
			row.TcpproReps = append(row.TcpproReps, b)
		}
		if okA && okB && a != 0 {
			ratios = append(ratios, b/a)
		}
	}
	row.Raw, row.Tcppro, row.Ratio = median(row.RawReps), median(row.TcpproReps), median(ratios)
	return row
}

// check sets a ratio target; no verdict without paired data.
func (row *Row) check(target string, ok bool) {
	row.Target = target
	if len(row.RawReps) == 0 || len(row.TcpproReps) == 0 || row.Ratio == 0 {
		return
	}
	row.Result = passFail(ok)
}

// absCheck sets an absolute target on tcppro's median.
func (row *Row) absCheck(limit float64, target string) {
	row.Target = target
	if len(row.TcpproReps) == 0 {
		return
	}
	row.Result = passFail(row.Tcppro <= limit)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteTable prints the report as an aligned table.
func (r *Report) WriteTable(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tcppro vs raw std-net echo — 127.0.0.1, %v CPUs, GOMAXPROCS %v, %s; %d rep(s), warm-up %v + window %v per measurement%s\n",
		r.Host["cpus"], r.Host["gomaxprocs"], r.Host["go"], c.Reps, c.Warmup, c.Duration, map[bool]string{true: " (quick)"}[c.Quick])
	rawDesc := "raw: goroutine per conn, bufio.Reader.ReadSlice('\\n') + conn.Write per message"
	if c.RawBufWrite {
		rawDesc = "raw: goroutine per conn, bufio.Reader + bufio.Writer flushed when input drained"
	}
	fmt.Fprintln(w, rawDesc)
	fmt.Fprintln(w)
	t := [][]string{{"scenario", "metric", "raw", "tcppro", "tcppro/raw", "target", "result"}}
	last := ""
	for _, row := range r.Rows {
		name := row.Scenario
		if name == last {
			name = ""
		}
		last = row.Scenario
		ratio := "-"
		if row.Ratio != 0 {
			ratio = fmt.Sprintf("%.3fx", row.Ratio)
		}
		res := row.Result
		if res == "" && row.Target != "" {
			res = "n/a"
		}
		t = append(t, []string{name, row.Metric, num(row.format, row.RawReps, row.Raw),
			num(row.format, row.TcpproReps, row.Tcppro), ratio, row.Target, res})
	}
	writeAligned(w, t, "llrrrll")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "raw and tcppro: median over reps; tcppro/raw: median of the per-rep paired ratios.")
	fmt.Fprintf(w, "server CPU = utime+stime of the server process over the measured window (load-gen CPU: the same for the load-generating parent, i.e. the client side; information only); memory = server VmRSS and runtime HeapInuse+StackInuse (after GC) deltas over the baseline. Reference raw RSS on this machine: %.1f KiB idle / %.1f KiB after one line.\n",
		refRawRSSIdleKiB, refRawRSSAfterKiB)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "per-rep values (raw | tcppro):")
	t = t[:0]
	for _, row := range r.Rows {
		t = append(t, []string{"", row.Scenario, row.Metric, list(row.format, row.RawReps), "|", list(row.format, row.TcpproReps)})
	}
	writeAligned(w, t, "lllrcl")
	if c.CPUProfileDir != "" {
		fmt.Fprintf(w, "\nCPU profiles of server and load generator (measured window only, *.load.pprof for the load generator; profiling adds a little CPU to both sides) and heap profiles (memory scenario, after one request) in %s\n", c.CPUProfileDir)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nerrors:")
		for _, e := range r.Errors {
			fmt.Fprintln(w, "  "+e)
		}
	}
	fmt.Fprintf(w, "\nverdict: %s (%.0fs)\n", r.Verdict, r.Elapsed)
}

// writeAligned prints rows as columns two spaces apart; align has one letter
// per column: l(eft), r(ight) or c (as l).
func writeAligned(w io.Writer, rows [][]string, align string) {
	width := make([]int, len(align))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if align[i] == 'r' {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func num(format string, reps []float64, v float64) string {
	if len(reps) == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func list(format string, v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, " ")
}

// WriteJSON prints the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

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
	only := fs.String("only", "", "comma-separated scenario families to run: rr, pipe, mem (default all)")
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
	if set["conns"] {
		cfg.RRConns = nil
		for _, f := range strings.Split(*conns, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				fmt.Fprintf(stderr, "tcpprobench: -conns: %v\n", err)
				return 2
			}
			cfg.RRConns = append(cfg.RRConns, n)
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
