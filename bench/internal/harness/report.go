package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
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

// build turns the samples into rows and a verdict.
func (r *Report) build() {
	r.Samples = map[string]any{}
	for _, sc := range r.scenarios {
		switch sc.family {
		case "mem":
			r.Samples[sc.name] = r.mem
			r.memRows(sc)
		case "pong":
			r.Samples[sc.name] = r.pong[sc.name]
			r.pongRows(sc)
		default:
			r.Samples[sc.name] = r.tput[sc.name]
			r.tputRows(sc)
		}
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

func (r *Report) tputRows(sc scenario) {
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
	if sc.rpsMin > 0 {
		rps.check(fmt.Sprintf(">= %.2fx raw", sc.rpsMin), rps.Ratio >= sc.rpsMin)
	}
	cpu := r.row(sc, "server CPU s/Mreq", "%.2f", get(func(s *tputSample) float64 { return s.CPUPerM }))
	if sc.cpuMax > 0 {
		cpu.check(fmt.Sprintf("<= %.2fx raw", sc.cpuMax), cpu.Ratio <= sc.cpuMax)
	}
	if sc.family == "burst" {
		p50 := r.row(sc, "call latency p50 ms", "%.3f", get(func(s *tputSample) float64 { return s.P50 }))
		p99 := r.row(sc, "call latency p99 ms", "%.3f", get(func(s *tputSample) float64 { return s.P99 }))
		p99.check(fmt.Sprintf("<= %.2fx raw", sc.p99Max), p99.Ratio <= sc.p99Max)
		pmax := r.row(sc, "call latency max ms", "%.3f", get(func(s *tputSample) float64 { return s.Max }))
		rps.Metric = "calls/s"
		psi := r.row(sc, hostPressureMetric, "%.1f", func(rep int, kind string) (float64, bool) {
			v, ok := get(func(s *tputSample) float64 { return s.HostPressure })(rep, kind)
			return v, ok && v >= 0
		})
		r.Rows = append(r.Rows, *p50, *p99, *pmax, *rps, *cpu, *psi)
		return
	}
	load := r.row(sc, "load-gen CPU s/Mreq", "%.2f", get(func(s *tputSample) float64 { return s.LoadPerM }))
	sys := r.row(sc, "server read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.SysReads + s.SysWrites }))
	lsys := r.row(sc, "load-gen read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.LoadSys }))
	r.Rows = append(r.Rows, *rps, *cpu, *sys, *load, *lsys)
}

// hostPressureMetric names the information row that tells how much the
// rest of the host competed for the CPUs during a latency measurement.
const hostPressureMetric = "host CPU pressure % (PSI some)"

// pongRows reports the PONG-delay scenario: tcppro only (the raw line
// protocol has no PING), with the idle connections' RTT as the baseline.
func (r *Report) pongRows(sc scenario) {
	get := func(f func(*pongSample) float64) func(int, string) (float64, bool) {
		return func(rep int, kind string) (float64, bool) {
			s := r.pong[sc.name][rep]
			if s == nil || kind != kindTcppro {
				return 0, false
			}
			return f(s), true
		}
	}
	busy := fmt.Sprintf(", %d x sleep running", sc.inflight)
	p50 := r.row(sc, "PING RTT p50 ms"+busy, "%.3f", get(func(s *pongSample) float64 { return s.Slow.P50 }))
	p99 := r.row(sc, "PING RTT p99 ms"+busy, "%.3f", get(func(s *pongSample) float64 { return s.Slow.P99 }))
	p99.absCheck(pongP99MaxMs, fmt.Sprintf("<= %g ms", pongP99MaxMs))
	pmax := r.row(sc, "PING RTT max ms"+busy, "%.3f", get(func(s *pongSample) float64 { return s.Slow.Max }))
	ip50 := r.row(sc, "PING RTT p50 ms, idle conns (baseline)", "%.3f", get(func(s *pongSample) float64 { return s.Idle.P50 }))
	ip99 := r.row(sc, "PING RTT p99 ms, idle conns (baseline)", "%.3f", get(func(s *pongSample) float64 { return s.Idle.P99 }))
	imax := r.row(sc, "PING RTT max ms, idle conns (baseline)", "%.3f", get(func(s *pongSample) float64 { return s.Idle.Max }))
	pings := r.row(sc, "PINGs measured"+busy, "%.0f", get(func(s *pongSample) float64 { return float64(s.Slow.Pings) }))
	sleeps := r.row(sc, "sleep calls completed in window", "%.0f", get(func(s *pongSample) float64 { return float64(s.Slow.SleepsDone) }))
	psi := func(f func(*pongSample) float64) func(int, string) (float64, bool) {
		return func(rep int, kind string) (float64, bool) {
			v, ok := get(f)(rep, kind)
			return v, ok && v >= 0
		}
	}
	psiSlow := r.row(sc, hostPressureMetric+busy, "%.1f", psi(func(s *pongSample) float64 { return s.Slow.HostPressure }))
	psiIdle := r.row(sc, hostPressureMetric+", idle conns", "%.1f", psi(func(s *pongSample) float64 { return s.Idle.HostPressure }))
	r.Rows = append(r.Rows, *p50, *p99, *pmax, *ip50, *ip99, *imax, *pings, *sleeps, *psiSlow, *psiIdle)
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
	for _, sc := range r.scenarios {
		switch sc.family {
		case "pong":
			fmt.Fprintf(w, "%s: tcppro only (the raw line protocol has no PING); RTT of a PING sent every %v on each conn, from just before its write to its PONG, with %d sleep calls running per conn, and on idle conns as the baseline.\n", sc.name, c.PongEvery, c.PongSlow)
		case "burst":
			fmt.Fprintf(w, "%s: latency of every call started in the window, from just before its write (raw) or Call (tcppro) to its verified answer; host CPU pressure = share of the window in which some task of the host waited for a CPU.\n", sc.name)
		case "tls":
			fmt.Fprintf(w, "%s: rr-%d over TLS 1.3 on both sides (ECDSA P-256 certificate); information, no target.\n", sc.name, sc.conns)
		}
	}
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
