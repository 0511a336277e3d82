// Package harness is the side-by-side benchmark of tcppro (tcppro: Transport
// epoll, the event loop; tcppro-netconn: a goroutine per connection) against
// a minimal goroutine-per-connection std-net echo server (raw), a grpc-go
// unary echo (grpc) and a gnet v2 event-loop echo (gnet): the sides. Every server runs
// as a separate child process (this executable re-exec'd, see ChildEnv), so
// its CPU time (/proc/PID/stat utime+stime) and memory (/proc/PID/status
// VmRSS, runtime heap+stack reported by the child itself) are its own; the
// load generator runs in the parent, on 127.0.0.1 only. Repetitions
// alternate the order of the sides (raw first on odd reps, reversed on even
// ones) so a noisy shared machine affects all alike, and each figure is the
// median over the repetitions.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/tcppro/tcppro/server"
)

// fdLimit is the per-process open-file limit of the target machines; no
// process of the harness may need more descriptors than this.
const fdLimit = 20000

// Scenario families, the values of -only.
var families = []string{"rr", "pipe", "mem", "hb", "pong", "burst", "tls"}

// Config is one benchmark run.
type Config struct {
	Reps      int           `json:"reps"`
	Duration  time.Duration `json:"duration_ns"`
	Warmup    time.Duration `json:"warmup_ns"`
	RRConns   []int         `json:"rr_conns"`
	PipeConns int           `json:"pipe_conns"`
	PipeDepth int           `json:"pipe_depth"`
	MemConns  int           `json:"mem_conns"`
	MemSettle time.Duration `json:"mem_settle_ns"`
	// PongConns are the connection counts of the PONG-delay scenario; each
	// connection keeps PongSlow calls of "sleep PongSleep" running and
	// sends a PING every PongEvery, measured over PongWindow per phase.
	PongConns  []int         `json:"pong_conns"`
	PongSlow   int           `json:"pong_slow"`
	PongSleep  time.Duration `json:"pong_sleep_ns"`
	PongEvery  time.Duration `json:"pong_every_ns"`
	PongWindow time.Duration `json:"pong_window_ns"`
	// BurstConns connections each alternate an idle gap (BurstGapMin to
	// BurstGapMax, drawn from a generator seeded with BurstSeed and the
	// connection's index) and a burst of two concurrent calls.
	BurstConns  int           `json:"burst_conns"`
	BurstGapMin time.Duration `json:"burst_gap_min_ns"`
	BurstGapMax time.Duration `json:"burst_gap_max_ns"`
	BurstSeed   uint64        `json:"burst_seed"`
	// TLSConns is the connection count of the request/response scenario
	// over TLS.
	TLSConns int `json:"tls_conns"`
	// HBConns idle connections are held while the server's CPU is read
	// over HBWindow, HBSettle after they are all up; the servers with
	// heartbeats send one every HBInterval.
	HBConns    int           `json:"hb_conns"`
	HBInterval time.Duration `json:"hb_interval_ns"`
	HBSettle   time.Duration `json:"hb_settle_ns"`
	HBWindow   time.Duration `json:"hb_window_ns"`
	// HolderConns is the most connections one holder process holds; more
	// are spread over several holders.
	HolderConns int `json:"holder_conns"`
	// Sides are the servers compared (see allSides); empty means all.
	Sides         []string `json:"sides,omitempty"`
	Only          []string `json:"only,omitempty"` // scenario families, see families
	RawBufWrite   bool     `json:"raw_bufwrite"`
	CPUProfileDir string   `json:"cpuprofile_dir,omitempty"`
	Quick         bool     `json:"quick"`

	// tls holds the certificates of the TLS scenario while Run runs.
	tls *tlsMaterial
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
		MemSettle:  6 * time.Second,
		PongConns:  []int{1, 50},
		PongSlow:   4,
		PongSleep:  2 * time.Second,
		PongEvery:  5 * time.Millisecond,
		PongWindow: 10 * time.Second, // 2 000 PINGs on a single connection
		BurstConns: 50, BurstGapMin: 20 * time.Millisecond, BurstGapMax: 60 * time.Millisecond,
		BurstSeed: 1,
		TLSConns:  50,
		HBConns:   9000, HBInterval: time.Second,
		// Longer than the interval, so every connection is in its steady
		// PING cycle when the window starts.
		HBSettle: 3 * time.Second, HBWindow: 10 * time.Second,
		HolderConns: 4500,
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
	c.PongConns = []int{1, 10}
	c.PongSleep = 300 * time.Millisecond
	c.PongWindow = time.Second
	c.BurstConns = 10
	c.TLSConns = 10
	c.HBConns = 500
	c.HBSettle = 1500 * time.Millisecond
	c.HBWindow = 2 * time.Second
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
	counts := append(slices.Clone(c.RRConns), c.PipeConns, c.MemConns, c.BurstConns, c.TLSConns, c.HBConns, c.HolderConns)
	for _, n := range append(counts, c.PongConns...) {
		if n < 1 || n > limit {
			errs = append(errs, fmt.Errorf("connections: %d, want 1..%d (open-file limit %d per process)", n, limit, fdLimit))
		}
	}
	if c.PipeDepth < 2 {
		errs = append(errs, fmt.Errorf("depth: %d, want >= 2", c.PipeDepth))
	}
	if c.PongSlow < 1 || c.PongSlow > 64 {
		errs = append(errs, fmt.Errorf("pong-slow: %d, want 1..64 (below the server's MAX_IN_FLIGHT)", c.PongSlow))
	}
	if n := slices.Max(append([]int{0}, c.PongConns...)); n*c.PongSlow > server.DefaultWorkers {
		errs = append(errs, fmt.Errorf("pong: %d conns x %d slow calls: above the server's %d workers", n, c.PongSlow, server.DefaultWorkers))
	}
	if c.PongSleep <= 0 || c.PongEvery < time.Millisecond || c.PongWindow <= 0 {
		errs = append(errs, fmt.Errorf("pong sleep %v / every %v / window %v: want > 0 / >= 1ms / > 0", c.PongSleep, c.PongEvery, c.PongWindow))
	}
	if c.BurstGapMin <= 0 || c.BurstGapMax < c.BurstGapMin {
		errs = append(errs, fmt.Errorf("burst gap %v..%v: want 0 < min <= max", c.BurstGapMin, c.BurstGapMax))
	}
	if c.HBInterval < time.Second || c.HBSettle <= 0 || c.HBWindow <= 0 {
		errs = append(errs, fmt.Errorf("hb interval %v / settle %v / window %v: want >= 1s (grpc-go's minimum server keepalive time) / > 0 / > 0", c.HBInterval, c.HBSettle, c.HBWindow))
	}
	for _, o := range c.Sides {
		if !slices.Contains(allSides, o) {
			errs = append(errs, fmt.Errorf("sides: unknown side %q (%v)", o, allSides))
		}
	}
	for _, o := range c.Only {
		if !slices.Contains(families, o) {
			errs = append(errs, fmt.Errorf("only: unknown scenario family %q (%v)", o, families))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) wants(family string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, family)
}

// sides returns the selected sides among those a scenario can run, in the
// order of allSides.
func (c *Config) sides(can ...string) []string {
	var out []string
	for _, k := range allSides {
		if (len(c.Sides) == 0 || slices.Contains(c.Sides, k)) && (len(can) == 0 || slices.Contains(can, k)) {
			out = append(out, k)
		}
	}
	return out
}

// scenario is one comparison.
type scenario struct {
	name     string
	family   string // one of families
	title    string
	conns    int
	inflight int
	rpsMin   float64 // tcppro/raw req/s must be >= this (0: no target)
	cpuMax   float64 // tcppro/raw CPU per request must be <= this (0: no target)
	p99Max   float64 // tcppro/raw p99 latency must be <= this (0: no target)
	tls      bool    // both sides over TLS
	sides    []string
}

// Targets of the PONG-delay and burst scenarios.
const (
	pongP99MaxMs = 1.0 // PING RTT p99 behind slow handlers, absolute
	burstP99Max  = 2.0 // tcppro/raw call latency p99
)

// Memory targets for tcppro (absolute, per connection).
const (
	memTargetKiB       = 4.5
	goroutinesPerConn  = 1.0
	refRawRSSIdleKiB   = 3.7
	refRawRSSAfterKiB  = 7.6
	memTargetMetricRSS = "RSS KiB/conn after 1 req"
)

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
			conns: c.PipeConns, inflight: c.PipeDepth, rpsMin: 1.4,
		})
	}
	if c.wants("mem") {
		out = append(out, scenario{
			name: fmt.Sprintf("mem-%d", c.MemConns), family: "mem",
			title: fmt.Sprintf("memory, %d idle conns", c.MemConns),
			conns: c.MemConns,
		})
	}
	if c.wants("hb") {
		out = append(out, scenario{
			name: fmt.Sprintf("hb-%d", c.HBConns), family: "hb",
			title: fmt.Sprintf("heartbeat CPU, %d idle conns, PING every %v (tcppro, tcppro-netconn, grpc)", c.HBConns, c.HBInterval),
			conns: c.HBConns,
		})
	}
	if c.wants("pong") {
		for _, n := range c.PongConns {
			out = append(out, scenario{
				name: fmt.Sprintf("pong-%d", n), family: "pong",
				title: fmt.Sprintf("PING RTT, %d conns, %d x sleep %v each", n, c.PongSlow, c.PongSleep),
				conns: n, inflight: c.PongSlow,
			})
		}
	}
	if c.wants("burst") {
		out = append(out, scenario{
			name: fmt.Sprintf("burst-%d", c.BurstConns), family: "burst",
			title: fmt.Sprintf("bursts of 2 calls, gaps %v-%v, %d conns", c.BurstGapMin, c.BurstGapMax, c.BurstConns),
			conns: c.BurstConns, inflight: 2, p99Max: burstP99Max,
		})
	}
	if c.wants("tls") {
		out = append(out, scenario{
			name: fmt.Sprintf("tls-rr-%d", c.TLSConns), family: "tls",
			title: fmt.Sprintf("req/resp %dB over TLS, %d conns x1 (information)", msgSize, c.TLSConns),
			conns: c.TLSConns, inflight: 1, tls: true,
		})
	}
	// Sides: all the selected ones, except pong (tcppro only: the other
	// protocols have no PING of the client's to time behind slow handlers)
	// and tls (gnet has no TLS; tcppro over TLS runs on netconn under auto,
	// so tcppro-netconn would only repeat it).
	kept := out[:0]
	for _, sc := range out {
		switch {
		case sc.family == "pong":
			sc.sides = c.sides(kindTcppro)
		case sc.tls:
			sc.sides = c.sides(kindRaw, kindTcppro, kindGrpc)
		default:
			sc.sides = c.sides()
		}
		if len(sc.sides) > 0 {
			kept = append(kept, sc)
		}
	}
	return kept
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
	hb        map[string][]*hbSample
	pong      map[string][]*pongSample
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
		hb:        map[string][]*hbSample{},
		pong:      map[string][]*pongSample{},
		scenarios: cfg.scenarios(),
	}
	for _, sc := range r.scenarios {
		switch sc.family {
		case "mem":
			for _, k := range sc.sides {
				r.mem[k] = make([]*memSample, cfg.Reps)
			}
		case "hb":
			for _, k := range sc.sides {
				r.hb[k] = make([]*hbSample, cfg.Reps)
			}
		case "pong":
			r.pong[sc.name] = make([]*pongSample, cfg.Reps)
		default:
			r.tput[sc.name] = map[string][]*tputSample{}
			for _, k := range sc.sides {
				r.tput[sc.name][k] = make([]*tputSample, cfg.Reps)
			}
		}
		if sc.tls && cfg.tls == nil {
			m, err := newTLSMaterial()
			if err != nil {
				return nil, fmt.Errorf("TLS certificates: %w", err)
			}
			defer m.remove()
			cfg.tls = m
		}
	}
	for rep := range cfg.Reps {
		for _, sc := range r.scenarios {
			if sc.family == "pong" {
				if ctx.Err() == nil {
					r.runPong(ctx, &cfg, sc, rep)
				}
				continue
			}
			// The sides in order on even reps (raw first), reversed on
			// odd ones.
			order := slices.Clone(sc.sides)
			if rep%2 == 1 {
				slices.Reverse(order)
			}
			for _, kind := range order {
				if ctx.Err() != nil {
					break
				}
				r.runOne(ctx, &cfg, sc, kind, rep)
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

// runOne measures one side of one scenario once.
func (r *Report) runOne(ctx context.Context, cfg *Config, sc scenario, kind string, rep int) {
	label := fmt.Sprintf("rep %d/%d %-14s %-14s", rep+1, cfg.Reps, sc.name, kind)
	if sc.family == "hb" {
		s, err := measureHeartbeat(ctx, cfg, kind)
		if err != nil {
			r.errorf("%s: %v", label, err)
			return
		}
		r.hb[kind][rep] = &s
		r.logf("%s  server CPU %.4f cores (%.2f CPU s in %.2fs), %.2f server read+write syscalls/conn/s, holder CPU %.4f cores, heartbeats %v",
			label, s.Cores, s.CPU, s.Window, s.SysPerConnS, s.HolderCores, s.Heartbeat)
		return
	}
	if sc.family == "mem" {
		s, err := measureMemory(ctx, cfg, kind, rep)
		if err != nil {
			r.errorf("%s: %v", label, err)
			return
		}
		r.mem[kind][rep] = &s
		r.logf("%s  RSS %.2f / %.2f KiB/conn (idle / after 1 req; %.2f after FreeOSMemory), heap+stack %.2f / %.2f KiB/conn, goroutines %.3f / %.3f per conn",
			label, s.RSSIdle, s.RSSAfter, s.RSSFreed, s.HSIdle, s.HSAfter, s.GorIdle, s.GorAfter)
		return
	}
	s, err := measureThroughput(ctx, cfg, sc, kind, rep)
	if err != nil {
		r.errorf("%s: %v", label, err)
		return
	}
	r.tput[sc.name][kind][rep] = &s
	lat := ""
	if s.Calls > 0 {
		lat = fmt.Sprintf("  latency p50 %.3f p99 %.3f max %.3f ms (%d calls), host CPU pressure %.1f%%", s.P50, s.P99, s.Max, s.Calls, s.HostPressure)
	}
	r.logf("%s  %9.0f req/s  server CPU %6.2f s/Mreq  load-gen CPU %6.2f s/Mreq  server syscalls/req %.2f r + %.2f w  (%d req in %.2fs, server %.2f CPU s)%s",
		label, s.RPS, s.CPUPerM, s.LoadPerM, s.SysReads, s.SysWrites, s.Requests, s.Window, s.CPU, lat)
}

// runPong measures one PONG-delay scenario once: both phases (idle
// connections, then connections with slow calls running) against one
// server, in alternating order across reps.
func (r *Report) runPong(ctx context.Context, cfg *Config, sc scenario, rep int) {
	label := fmt.Sprintf("rep %d/%d %-14s %-14s", rep+1, cfg.Reps, sc.name, kindTcppro)
	s, err := measurePong(ctx, cfg, sc, rep)
	if err != nil {
		r.errorf("%s: %v", label, err)
		return
	}
	r.pong[sc.name][rep] = &s
	r.logf("%s  PING RTT ms with slow calls p50 %.3f p99 %.3f max %.3f (%d PINGs, %d sleeps done, host CPU pressure %.1f%%); idle p50 %.3f p99 %.3f max %.3f (%d PINGs, %.1f%%)",
		label, s.Slow.P50, s.Slow.P99, s.Slow.Max, s.Slow.Pings, s.Slow.SleepsDone, s.Slow.HostPressure,
		s.Idle.P50, s.Idle.P99, s.Idle.Max, s.Idle.Pings, s.Idle.HostPressure)
}
