package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tcppro/tcppro/netx"
)

// Row is one line of the result table: one metric of one scenario, for
// every side of the scenario.
type Row struct {
	Scenario string `json:"scenario"`
	Title    string `json:"title"`
	Metric   string `json:"metric"`
	// Values is each side's median over reps; Reps its per-rep values.
	Values map[string]float64   `json:"values"`
	Reps   map[string][]float64 `json:"reps"`
	// Ratios are tcppro (Transport epoll: the event loop) against each
	// other side ("tcppro/raw", "tcppro/grpc", "tcppro/gnet",
	// "tcppro/tcppro-netconn"): the median over reps of the paired per-rep
	// ratios. In hb-N there is none against the sides without heartbeats
	// (raw, gnet): their idle floor near zero makes it meaningless.
	Ratios map[string]float64 `json:"ratios"`
	// Ratio is Ratios["tcppro/raw"], the ratio the targets are set on.
	Ratio    float64 `json:"ratio"`
	Target   string  `json:"target,omitempty"`
	Result   string  `json:"result,omitempty"`   // PASS, FAIL, or "" (no target / no data)
	Headline bool    `json:"headline,omitempty"` // charted by -svg
	Unit     string  `json:"-"`
	format   string
}

// ratioKey names the ratio of tcppro to side.
func ratioKey(side string) string { return kindTcppro + "/" + side }

// build turns the samples into rows and a verdict.
func (r *Report) build() {
	r.Samples = map[string]any{}
	for _, sc := range r.scenarios {
		switch sc.family {
		case "mem":
			r.Samples[sc.name] = r.mem
			r.memRows(sc)
		case "hb":
			r.Samples[sc.name] = r.hb
			r.hbRows(sc)
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
	get := func(f func(*tputSample) float64) func(int, string) (float64, bool) {
		return func(rep int, kind string) (float64, bool) {
			samples := r.tput[sc.name][kind]
			if samples == nil || samples[rep] == nil {
				return 0, false
			}
			s := samples[rep]
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
		p99.Headline, rps.Headline, cpu.Headline = true, true, true
		r.Rows = append(r.Rows, *p50, *p99, *pmax, *rps, *cpu, *psi)
		return
	}
	rps.Headline, cpu.Headline = true, true
	if sc.family == "pipe" {
		// Latency with many calls in flight: from histograms (measure.go).
		p50 := r.row(sc, "call latency p50 ms", "%.3f", get(func(s *tputSample) float64 { return s.P50 }))
		p99 := r.row(sc, "call latency p99 ms", "%.3f", get(func(s *tputSample) float64 { return s.P99 }))
		pmax := r.row(sc, "call latency max ms", "%.3f", get(func(s *tputSample) float64 { return s.Max }))
		p99.Headline = true
		r.Rows = append(r.Rows, *rps, *cpu, *p50, *p99, *pmax)
		rps, cpu = nil, nil
	}
	load := r.row(sc, "load-gen CPU s/Mreq", "%.2f", get(func(s *tputSample) float64 { return s.LoadPerM }))
	sys := r.row(sc, "server read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.SysReads + s.SysWrites }))
	lsys := r.row(sc, "load-gen read+write syscalls/req", "%.2f", get(func(s *tputSample) float64 { return s.LoadSys }))
	if rps != nil {
		r.Rows = append(r.Rows, *rps, *cpu)
	}
	r.Rows = append(r.Rows, *sys, *load, *lsys)
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
				return 0, false // tcppro only
			}
			return f(s), true
		}
	}
	busy := fmt.Sprintf(", %d x sleep running", sc.inflight)
	p50 := r.row(sc, "PING RTT p50 ms"+busy, "%.3f", get(func(s *pongSample) float64 { return s.Slow.P50 }))
	p99 := r.row(sc, "PING RTT p99 ms"+busy, "%.3f", get(func(s *pongSample) float64 { return s.Slow.P99 }))
	p99.absCheck(pongP99MaxMs, fmt.Sprintf("<= %g ms", pongP99MaxMs))
	p99.Headline = true
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
			if r.mem[kind] == nil || r.mem[kind][rep] == nil {
				return 0, false
			}
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
	rssIdle.Headline, rssAfter.Headline, hsAfter.Headline = true, true, true
	r.Rows = append(r.Rows, *rssIdle, *rssAfter, *rssFreed, *freeRes, *hsIdle, *hsAfter, *gIdle, *gAfter)
}

// hbRows reports the heartbeat scenario: information rows, no target.
func (r *Report) hbRows(sc scenario) {
	get := func(f func(*hbSample) float64) func(int, string) (float64, bool) {
		return func(rep int, kind string) (float64, bool) {
			if r.hb[kind] == nil || r.hb[kind][rep] == nil {
				return 0, false
			}
			return f(r.hb[kind][rep]), true
		}
	}
	cores := r.row(sc, "server CPU cores (CPU s/s), idle conns", "%.4f", get(func(s *hbSample) float64 { return s.Cores }))
	cores.Headline = true
	perConn := r.row(sc, "server CPU µs per conn per s", "%.2f", get(func(s *hbSample) float64 { return s.Cores * 1e6 / float64(s.Conns) }))
	sys := r.row(sc, "server read+write syscalls/conn/s", "%.2f", get(func(s *hbSample) float64 { return s.SysPerConnS }))
	holder := r.row(sc, "holder CPU cores (the peers' side)", "%.4f", get(func(s *hbSample) float64 { return s.HolderCores }))
	// Against a server without heartbeats the ratio is tcppro's cost over
	// an idle floor near zero: no ratio.
	for _, row := range []*Row{cores, perConn, sys, holder} {
		for _, k := range sc.sides {
			if !hasHeartbeat(k) {
				delete(row.Ratios, ratioKey(k))
			}
		}
		row.Ratio = row.Ratios[ratioKey(kindRaw)]
	}
	r.Rows = append(r.Rows, *cores, *perConn, *sys, *holder)
}

func (r *Report) row(sc scenario, metric, format string, get func(rep int, kind string) (float64, bool)) *Row {
	row := &Row{Scenario: sc.name, Title: sc.title, Metric: metric, format: format,
		Values: map[string]float64{}, Reps: map[string][]float64{}, Ratios: map[string]float64{}}
	ratios := map[string][]float64{}
	for rep := range r.Config.Reps {
		tp, okT := get(rep, kindTcppro)
		for _, k := range sc.sides {
			v, ok := get(rep, k)
			if !ok {
				continue
			}
			row.Reps[k] = append(row.Reps[k], v)
			if k != kindTcppro && okT && v != 0 {
				ratios[ratioKey(k)] = append(ratios[ratioKey(k)], tp/v)
			}
		}
	}
	for k, v := range row.Reps {
		row.Values[k] = median(v)
	}
	for k, v := range ratios {
		row.Ratios[k] = median(v)
	}
	row.Ratio = row.Ratios[ratioKey(kindRaw)]
	return row
}

// check sets a target on the tcppro/raw ratio; no verdict without paired
// data.
func (row *Row) check(target string, ok bool) {
	row.Target = target
	if row.Ratio == 0 {
		return
	}
	row.Result = passFail(ok)
}

// absCheck sets an absolute target on tcppro's median.
func (row *Row) absCheck(limit float64, target string) {
	row.Target = target
	if len(row.Reps[kindTcppro]) == 0 {
		return
	}
	row.Result = passFail(row.Values[kindTcppro] <= limit)
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

// reportSides are the sides that appear in the report, in column order.
func (r *Report) reportSides() []string {
	var out []string
	for _, k := range allSides {
		for _, sc := range r.scenarios {
			if slices.Contains(sc.sides, k) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// ratioSides are the sides tcppro is compared with in the report, in the
// order of its ratio columns: raw, grpc, gnet, then tcppro-netconn (the
// same protocol on the other transport).
func (r *Report) ratioSides() []string {
	sides := r.reportSides()
	if !slices.Contains(sides, kindTcppro) {
		return nil
	}
	return ratioOrder(slices.DeleteFunc(slices.Clone(sides), func(k string) bool { return k == kindTcppro }))
}

// ratioOrder puts tcppro-netconn, if there, after the other sides.
func ratioOrder(sides []string) []string {
	out := slices.DeleteFunc(slices.Clone(sides), func(k string) bool { return k == kindTcpproNetConn })
	if len(out) < len(sides) {
		out = append(out, kindTcpproNetConn)
	}
	return out
}

// WriteTable prints the report as an aligned table.
func (r *Report) WriteTable(w io.Writer) {
	c := r.Config
	sides, rsides := r.reportSides(), r.ratioSides()
	fmt.Fprintf(w, "%s — 127.0.0.1, %v CPUs, GOMAXPROCS %v, %s; %d rep(s), warm-up %v + window %v per measurement%s\n",
		strings.Join(sides, " vs "), r.Host["cpus"], r.Host["gomaxprocs"], r.Host["go"], c.Reps, c.Warmup, c.Duration, map[bool]string{true: " (quick)"}[c.Quick])
	for _, k := range sides {
		fmt.Fprintln(w, sideDesc(k, c))
	}
	fmt.Fprintln(w)
	head := []string{"scenario", "metric"}
	align := "ll"
	for _, k := range sides {
		head = append(head, k)
		align += "r"
	}
	for _, k := range rsides {
		head = append(head, ratioKey(k))
		align += "r"
	}
	head = append(head, "target", "result")
	align += "ll"
	t := [][]string{head}
	last := ""
	for _, row := range r.Rows {
		name := row.Scenario
		if name == last {
			name = ""
		}
		last = row.Scenario
		line := []string{name, row.Metric}
		for _, k := range sides {
			line = append(line, num(row.format, row.Reps[k], row.Values[k]))
		}
		for _, k := range rsides {
			ratio := "-"
			if v := row.Ratios[ratioKey(k)]; v != 0 {
				ratio = fmt.Sprintf("%.3fx", v)
			}
			line = append(line, ratio)
		}
		res := row.Result
		if res == "" && row.Target != "" {
			res = "n/a"
		}
		t = append(t, append(line, row.Target, res))
	}
	writeAligned(w, t, align)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "each side: median over reps; tcppro/X: median of the per-rep paired ratios (targets are on tcppro/raw).")
	fmt.Fprintf(w, "server CPU = utime+stime of the server process over the measured window (load-gen CPU: the same for the load-generating parent, i.e. the client side; information only); memory = server VmRSS and runtime HeapInuse+StackInuse (after GC) deltas over the baseline. Reference raw RSS on this machine: %.1f KiB idle / %.1f KiB after one line.\n",
		refRawRSSIdleKiB, refRawRSSAfterKiB)
	for _, sc := range r.scenarios {
		switch sc.family {
		case "hb":
			fmt.Fprintf(w, "%s: server CPU over a %v window, %v after %d idle conns are up (holders: %d conns per process at most); PING every %v from the server (tcppro heartbeat, on either transport answered by the frame-level holder; grpc server keepalive Time, acked by the ClientConn's transport); raw and gnet have no heartbeat: their figure is the idle floor, and no ratio is given against them.\n",
				sc.name, c.HBWindow, c.HBSettle, sc.conns, c.HolderConns, c.HBInterval)
		case "pong":
			fmt.Fprintf(w, "%s: tcppro only (the other protocols have no PING of the client's to time here); RTT of a PING sent every %v on each conn, from just before its write to its PONG, with %d sleep calls running per conn, and on idle conns as the baseline.\n", sc.name, c.PongEvery, c.PongSlow)
		case "burst":
			fmt.Fprintf(w, "%s: latency of every call started in the window, from just before its write (raw, gnet) or call (tcppro, grpc) to its verified answer; host CPU pressure = share of the window in which some task of the host waited for a CPU.\n", sc.name)
		case "tls":
			fmt.Fprintf(w, "%s: rr-%d over TLS 1.3 on each side (ECDSA P-256 certificate; gnet has no TLS; tcppro over TLS runs on netconn under auto, so tcppro-netconn would repeat it and is skipped); information, no target.\n", sc.name, sc.conns)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "per-rep values (%s):\n", strings.Join(sides, " | "))
	t = t[:0]
	for _, row := range r.Rows {
		line := []string{"", row.Scenario, row.Metric}
		for i, k := range sides {
			if i > 0 {
				line = append(line, "|")
			}
			line = append(line, list(row.format, row.Reps[k]))
		}
		t = append(t, line)
	}
	writeAligned(w, t, "lll"+strings.Repeat("rc", len(sides))[:max(2*len(sides)-1, 0)])
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

// sideDesc is one line on how a side's server and load are built.
func sideDesc(kind string, c Config) string {
	switch kind {
	case kindRaw:
		if c.RawBufWrite {
			return "raw: goroutine per conn, bufio.Reader + bufio.Writer flushed when input drained"
		}
		return "raw: goroutine per conn, bufio.Reader.ReadSlice('\\n') + conn.Write per message"
	case kindTcppro, kindTcpproNetConn:
		t := "Transport epoll (the event loop, internal/evloop; over TLS, auto: a goroutine per conn)"
		if kind == kindTcpproNetConn {
			t = "Transport netconn (a goroutine per conn, internal/netconn)"
		}
		if v := os.Getenv(netx.TransportEnv); v != "" && kind == kindTcppro {
			t += fmt.Sprintf(" [%s=%s set: it replaces auto's choice]", netx.TransportEnv, v)
		}
		return kind + ": server.DefaultConfig() (heartbeat 5s; hb: 1s), echo handler, " + t + " on server and client; load: one client.Client per conn"
	case kindGrpc:
		return fmt.Sprintf("grpc: grpc-go unary echo, raw-bytes codec; keepalive server Time %v (hb: %v) Timeout %v, enforcement MinTime %v PermitWithoutStream, client Time %v Timeout %v PermitWithoutStream; load: one ClientConn per conn",
			grpcServerKeepaliveTime, c.HBInterval, grpcServerKeepaliveTimeout, grpcEnforcementMinTime, grpcClientKeepaliveTime, grpcClientKeepaliveTimeout)
	case kindGnet:
		return "gnet: gnet v2 multicore event loops, raw line protocol (complete lines echoed in one Write), no heartbeat; load: the raw side's"
	}
	return kind
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
