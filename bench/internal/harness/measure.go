package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/tcppro/tcppro/netx"
)

// The sides: the servers compared, each with its load generator and holder.
const (
	kindRaw    = "raw"    // goroutine-per-connection std-net line echo
	kindTcppro = "tcppro" // tcppro server and client, Transport epoll (the event loop; TLS: auto)
	// kindTcpproNetConn is tcppro with Transport netconn on server and
	// client: a goroutine per connection.
	kindTcpproNetConn = "tcppro-netconn"
	kindGrpc          = "grpc" // grpc-go unary echo, raw-bytes codec
	kindGnet          = "gnet" // gnet v2 event-loop line echo (raw side's load)
)

// allSides is every side, in the order of the report's columns.
var allSides = []string{kindRaw, kindTcppro, kindTcpproNetConn, kindGrpc, kindGnet}

// isTcppro tells the sides that run tcppro (either transport): they share
// the server, the client and the frame-level holder.
func isTcppro(kind string) bool { return kind == kindTcppro || kind == kindTcpproNetConn }

// hasHeartbeat tells the sides whose server PINGs idle connections.
func hasHeartbeat(kind string) bool { return isTcppro(kind) || kind == kindGrpc }

// tcpproTransport is the transport of a tcppro side's server and client:
// the event loop for tcppro (over TLS, which the loop does not carry,
// auto: a goroutine per connection), a goroutine per connection for
// tcppro-netconn.
func tcpproTransport(kind string, tlsOn bool) netx.Transport {
	switch {
	case kind == kindTcpproNetConn:
		return netx.TransportNetConn
	case tlsOn:
		return netx.TransportAuto
	}
	return netx.TransportEpoll
}

// serverProc is a running server child.
type serverProc struct {
	*child
	addr string
}

// startServerChild starts a server child of the given kind; extra, if set,
// adjusts its spec (handler, TLS).
func startServerChild(ctx context.Context, cfg *Config, kind string, maxConns int, lifetime time.Duration, extra func(*childSpec)) (*serverProc, error) {
	spec := childSpec{
		Role: "server", Kind: kind, MaxConns: maxConns, BufWrite: cfg.RawBufWrite, Lifetime: lifetime,
	}
	if extra != nil {
		extra(&spec)
	}
	c, err := startChild(ctx, kind+" server", spec)
	if err != nil {
		return nil, err
	}
	addr, err := c.expect(ctx, "listen ", 15*time.Second)
	if err != nil {
		c.stop(time.Second)
		return nil, err
	}
	return &serverProc{child: c, addr: addr}, nil
}

func (s *serverProc) stats(ctx context.Context, mode string) (serverStats, error) {
	cmd := strings.TrimSpace("stats " + mode)
	var st serverStats
	line, err := s.call(ctx, cmd, "stats ", 30*time.Second)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal([]byte(line), &st)
	return st, err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tputSample is one throughput measurement of one side.
type tputSample struct {
	Requests  uint64  `json:"requests"`
	Window    float64 `json:"window_s"`
	CPU       float64 `json:"server_cpu_s"`
	RPS       float64 `json:"req_per_s"`
	CPUPerM   float64 `json:"server_cpu_s_per_mreq"`
	SysReads  float64 `json:"server_read_syscalls_per_req"`
	SysWrites float64 `json:"server_write_syscalls_per_req"`
	LoadCPU   float64 `json:"loadgen_cpu_s"`
	LoadSys   float64 `json:"loadgen_read_write_syscalls_per_req"`
	LoadPerM  float64 `json:"loadgen_cpu_s_per_mreq"`
	Profile   string  `json:"cpu_profile,omitempty"`
	// Latency of every call started in the window (burst scenario; pipe:
	// from histograms, p50 and p99 within about 3%).
	Calls int     `json:"calls,omitempty"`
	P50   float64 `json:"latency_p50_ms,omitempty"`
	P99   float64 `json:"latency_p99_ms,omitempty"`
	Max   float64 `json:"latency_max_ms,omitempty"`
	// HostPressure is the share of the window in which some task of the
	// host waited for a CPU (PSI), in percent; -1 when not available.
	HostPressure float64 `json:"host_cpu_pressure_pct"`
}

// newLoadFor makes the load generator of one side of a scenario.
func newLoadFor(cfg *Config, sc scenario, kind, addr string) (loadGen, error) {
	if sc.family == "burst" {
		return newBurstLoad(cfg, kind, addr, sc.conns)
	}
	var conf *tls.Config
	if sc.tls {
		conf = cfg.tls.client
	}
	return newLoad(kind, addr, sc.conns, sc.inflight, conf)
}

// measureThroughput runs one side under load: a fresh server child, the
// scenario's connections with its calls in flight each, a warm-up, then a
// measured window in which completed requests and the server's CPU time are
// both sampled at the window's two ends. A load generator that records
// latencies (the burst scenario) also gives those of the calls started in
// the window.
func measureThroughput(ctx context.Context, cfg *Config, sc scenario, kind string, rep int) (tputSample, error) {
	var s tputSample
	scenario, inflight := sc.name, sc.inflight
	total := cfg.Warmup + cfg.Duration
	srv, err := startServerChild(ctx, cfg, kind, sc.conns+100, total+2*time.Minute, func(spec *childSpec) {
		spec.InFlight = sc.conns * max(sc.inflight, 1)
		if sc.tls {
			spec.TLSDir = cfg.tls.dir
		}
	})
	if err != nil {
		return s, err
	}
	defer srv.stop(3 * time.Second)

	lg, err := newLoadFor(cfg, sc, kind, srv.addr)
	if err != nil {
		return s, err
	}
	defer lg.close()
	hard := time.Now().Add(total + 30*time.Second)
	// Count bound: far above what one loopback connection can do (~10^5/s),
	// so only a runaway loop would ever reach it.
	maxPerConn := uint64(total.Seconds()*200_000*float64(inflight)) + 1000
	lg.start(hard, maxPerConn)
	defer lg.stop()

	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		return s, err
	}
	if err := lg.err(); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	if cfg.CPUProfileDir != "" {
		s.Profile = filepath.Join(cfg.CPUProfileDir, fmt.Sprintf("%s-%s-rep%d.pprof", scenario, kind, rep+1))
		if _, err := srv.call(ctx, "prof-start "+s.Profile, "ok", 10*time.Second); err != nil {
			return s, err
		}
		// The load generator's own profile: what each side's client costs.
		f, err := os.Create(filepath.Join(cfg.CPUProfileDir, fmt.Sprintf("%s-%s-rep%d.load.pprof", scenario, kind, rep+1)))
		if err != nil {
			return s, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return s, err
		}
		defer pprof.StopCPUProfile()
	}
	self := os.Getpid()
	psi0 := hostCPUPressure()
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		return s, err
	}
	c0, t0 := lg.completed(), time.Now()
	wl, lat := lg.(windowLoad)
	lat = lat && wl.recording()
	if lat {
		wl.openWindow(t0)
	}
	load0, err := procCPU(self)
	if err != nil {
		return s, err
	}
	r0, w0, err := procSyscalls(srv.pid())
	if err != nil {
		return s, err
	}
	lr0, lw0, err := procSyscalls(self)
	if err != nil {
		return s, err
	}
	if err := sleepCtx(ctx, cfg.Duration); err != nil {
		return s, err
	}
	psi1 := hostCPUPressure()
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		return s, err
	}
	c1, t1 := lg.completed(), time.Now()
	if lat {
		wl.closeWindow(t1)
	}
	load1, err := procCPU(self)
	if err != nil {
		return s, err
	}
	r1, w1, err := procSyscalls(srv.pid())
	if err != nil {
		return s, err
	}
	lr1, lw1, err := procSyscalls(self)
	if err != nil {
		return s, err
	}
	if cfg.CPUProfileDir != "" {
		pprof.StopCPUProfile()
		if _, err := srv.call(ctx, "prof-stop", "ok", 10*time.Second); err != nil {
			return s, err
		}
	}
	if lat {
		// The calls started at the end of the window complete.
		if err := sleepCtx(ctx, latTail); err != nil {
			return s, err
		}
	}
	lg.stop()
	if err := lg.err(); err != nil {
		return s, err
	}
	if lat {
		n, p50, p99, pmax := wl.windowLatencies()
		if n == 0 {
			return s, fmt.Errorf("no call started and completed in the measured window")
		}
		s.Calls, s.P50, s.P99, s.Max = n, ms(p50), ms(p99), ms(pmax)
	}
	if ll, ok := lg.(latencyLoad); ok {
		lat := ll.latencies(t0, t1)
		if len(lat) == 0 {
			return s, fmt.Errorf("no call started and completed in the measured window")
		}
		s.Calls = len(lat)
		s.P50, s.P99, s.Max = ms(quantile(lat, 0.50)), ms(quantile(lat, 0.99)), ms(lat[len(lat)-1])
	}
	s.Requests = c1 - c0
	s.Window = t1.Sub(t0).Seconds()
	s.CPU = cpu1 - cpu0
	if s.Requests == 0 {
		return s, fmt.Errorf("no request completed in the measured window")
	}
	s.RPS = float64(s.Requests) / s.Window
	s.CPUPerM = s.CPU / float64(s.Requests) * 1e6
	s.LoadCPU = load1 - load0
	s.SysReads = float64(r1-r0) / float64(s.Requests)
	s.SysWrites = float64(w1-w0) / float64(s.Requests)
	s.LoadSys = float64(lr1-lr0+lw1-lw0) / float64(s.Requests)
	s.LoadPerM = s.LoadCPU / float64(s.Requests) * 1e6
	s.HostPressure = pressurePct(psi0, psi1, t1.Sub(t0))
	return s, nil
}

// memPoint is the server's memory at one moment.
type memPoint struct {
	RSS        int64       `json:"vm_rss"`
	FDs        int         `json:"fds"`
	Stats      serverStats `json:"runtime"`
	HeapStacks uint64      `json:"heap_plus_stack"`
}

// memSample is one memory measurement of one side.
type memSample struct {
	Conns       int      `json:"conns"`
	Base        memPoint `json:"base"`
	Idle        memPoint `json:"idle"`
	After       memPoint `json:"after_one_request"`
	BaseFreed   memPoint `json:"base_freed"`
	AfterFreed  memPoint `json:"after_one_request_freed"`
	Alive       int      `json:"conns_alive_at_end"`
	HeapProfile string   `json:"heap_profile,omitempty"`

	RSSIdle    float64 `json:"rss_idle_kib_per_conn"`
	RSSAfter   float64 `json:"rss_after_kib_per_conn"`
	RSSFreed   float64 `json:"rss_after_freed_kib_per_conn"`
	FreeRes    float64 `json:"heap_free_resident_after_kib_per_conn"`
	HSIdle     float64 `json:"heap_stack_idle_kib_per_conn"`
	HSAfter    float64 `json:"heap_stack_after_kib_per_conn"`
	GorIdle    float64 `json:"goroutines_idle_per_conn"`
	GorAfter   float64 `json:"goroutines_after_per_conn"`
	Heartbeats bool    `json:"heartbeats_on"`
}

// point reads the server's memory after a GC (mode "gc"), or after
// debug.FreeOSMemory (mode "free").
func (s *serverProc) point(ctx context.Context, mode string) (memPoint, error) {
	var p memPoint
	st, err := s.stats(ctx, mode)
	if err != nil {
		return p, err
	}
	p.Stats = st
	p.HeapStacks = st.HeapInuse + st.StackInuse
	if p.RSS, err = procRSS(s.pid()); err != nil {
		return p, err
	}
	p.FDs, err = procFDs(s.pid())
	return p, err
}

// settlePoll is the interval of settle's polls (shorter in the smoke test).
var settlePoll = 100 * time.Millisecond

// settle waits until the server's goroutine count has been unchanged for
// three polls in a row (bounded), then for extra.
func (s *serverProc) settle(ctx context.Context, extra time.Duration) error {
	last, same := -1, 0
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && same < 3; {
		st, err := s.stats(ctx, "")
		if err != nil {
			return err
		}
		if st.Goroutines == last {
			same++
		} else {
			last, same = st.Goroutines, 0
		}
		if err := sleepCtx(ctx, settlePoll); err != nil {
			return err
		}
	}
	return sleepCtx(ctx, extra)
}

// measureMemory holds cfg.MemConns connections to a fresh server from a
// separate holder process and reads the server's memory before, with the
// connections idle, and after one request on each.
func measureMemory(ctx context.Context, cfg *Config, kind string, rep int) (memSample, error) {
	n := cfg.MemConns
	s := memSample{Conns: n, Heartbeats: hasHeartbeat(kind)}
	lifetime := 10*time.Minute + 2*cfg.MemSettle
	srv, err := startServerChild(ctx, cfg, kind, n+100, lifetime, nil)
	if err != nil {
		return s, err
	}
	defer srv.stop(5 * time.Second)

	// Warm the server up with one connection and one request, so lazily
	// initialised state is in the baseline and not charged to connections.
	if err := warmOne(kind, srv.addr); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	if err := srv.settle(ctx, 100*time.Millisecond); err != nil {
		return s, err
	}
	if s.Base, err = srv.point(ctx, "gc"); err != nil {
		return s, err
	}
	if s.BaseFreed, err = srv.point(ctx, "free"); err != nil {
		return s, err
	}

	h, err := startHolders(ctx, cfg, kind, srv.addr, n, lifetime)
	if err != nil {
		return s, err
	}
	defer h.stop()
	if err := waitAccepted(ctx, srv, s.Base.FDs, n); err != nil {
		return s, err
	}
	if err := srv.settle(ctx, cfg.MemSettle); err != nil {
		return s, err
	}
	if s.Idle, err = srv.point(ctx, "gc"); err != nil {
		return s, err
	}

	if err := h.requestAll(ctx); err != nil {
		return s, err
	}
	if err := srv.settle(ctx, cfg.MemSettle); err != nil {
		return s, err
	}
	if s.After, err = srv.point(ctx, "gc"); err != nil {
		return s, err
	}
	if s.AfterFreed, err = srv.point(ctx, "free"); err != nil {
		return s, err
	}
	if cfg.CPUProfileDir != "" {
		s.HeapProfile = filepath.Join(cfg.CPUProfileDir, fmt.Sprintf("mem-%d-%s-rep%d.heap.pprof", n, kind, rep+1))
		if _, err := srv.call(ctx, "heap-profile "+s.HeapProfile, "ok", 30*time.Second); err != nil {
			return s, err
		}
	}
	if s.Alive, err = h.alive(ctx); err != nil {
		return s, err
	}
	if s.Alive != n {
		return s, fmt.Errorf("only %d of %d held connections still open at the end", s.Alive, n)
	}

	kib := func(a, b int64) float64 { return float64(b-a) / 1024 / float64(n) }
	s.RSSIdle = kib(s.Base.RSS, s.Idle.RSS)
	s.RSSAfter = kib(s.Base.RSS, s.After.RSS)
	s.RSSFreed = kib(s.BaseFreed.RSS, s.AfterFreed.RSS)
	s.FreeRes = kib(int64(s.Base.Stats.HeapFreeResident), int64(s.After.Stats.HeapFreeResident))
	s.HSIdle = kib(int64(s.Base.HeapStacks), int64(s.Idle.HeapStacks))
	s.HSAfter = kib(int64(s.Base.HeapStacks), int64(s.After.HeapStacks))
	s.GorIdle = float64(s.Idle.Stats.Goroutines-s.Base.Stats.Goroutines) / float64(n)
	s.GorAfter = float64(s.After.Stats.Goroutines-s.Base.Stats.Goroutines) / float64(n)
	return s, nil
}

// warmOne makes one connection, one verified request, and closes it.
func warmOne(kind, addr string) error {
	lg, err := newLoad(kind, addr, 1, 1, nil)
	if err != nil {
		return err
	}
	defer lg.close()
	const n = 10
	deadline := time.Now().Add(10 * time.Second)
	lg.start(deadline, n)
	for lg.completed() < n && lg.err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	lg.stop()
	if err := lg.err(); err != nil {
		return err
	}
	if got := lg.completed(); got < n {
		return fmt.Errorf("%d of %d warm-up requests completed", got, n)
	}
	return nil
}
