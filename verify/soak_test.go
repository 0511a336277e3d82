package verify

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/refservice"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

// The soak's parts that need no lab: its schedule, its readings, its
// accounting and its verdict, and the agent's side against a server on
// loopback. The soak itself runs in cmd/tcppro's TestSoakShort, where the
// test binary plays `tcppro serve`.

func TestSoakScheduleReplays(t *testing.T) {
	draw := func(seed uint64) []string {
		s := &scheduler{rng: rand.New(rand.NewPCG(seed, 0x50a4)), timeout: 3 * time.Second}
		var out []string
		for range 30 {
			kind, host, dur, gap := s.next(4)
			out = append(out, kind+" "+string(rune('0'+host))+" "+dur.String()+" "+gap.String())
		}
		return out
	}
	a, b, c := draw(42), draw(42), draw(43)
	if !slices.Equal(a, b) {
		t.Fatalf("the same seed drew different schedules:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatal("two seeds drew the same schedule")
	}
	const timeout = 10 * time.Second
	s := &scheduler{rng: rand.New(rand.NewPCG(7, 0)), timeout: timeout}
	for block := range 20 {
		var kinds []string
		for range 3 {
			kind, host, dur, gap := s.next(5)
			kinds = append(kinds, kind)
			if host < 0 || host >= 5 {
				t.Fatalf("host %d of 5", host)
			}
			lo, hi := 3400*time.Millisecond, 3*timeout
			switch kind {
			case faultFreeze:
				hi = timeout * 8 / 3
			case faultKill:
				lo, hi = 500*time.Millisecond, 3*time.Second
			}
			if dur < lo || dur >= hi || dur%(100*time.Millisecond) != 0 {
				t.Errorf("%s for %v: want [%v, %v) in steps of 100 ms", kind, dur, lo, hi)
			}
			if gap < time.Second || gap >= 6*time.Second {
				t.Errorf("gap %v", gap)
			}
		}
		slices.Sort(kinds)
		if !slices.Equal(kinds, []string{faultCut, faultFreeze, faultKill}) {
			t.Errorf("block %d: %v, want one fault of each kind", block, kinds)
		}
	}
}

func TestParseSockstatAndMetrics(t *testing.T) {
	in, orph, tw := parseSockstat([]byte("sockets: used 40\nTCP: inuse 19003 orphan 12 tw 345 alloc 19010 mem 204\nUDP: inuse 0 mem 0\n"))
	if in != 19003 || orph != 12 || tw != 345 {
		t.Errorf("sockstat: %d %d %d", in, orph, tw)
	}
	m := parseMetrics([]byte(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 41
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds_count 17
go_memstats_next_gc_bytes 1.2951098e+07
tcppro_connections{state="open"} 5
`), "go_goroutines", "go_gc_duration_seconds_count", "go_memstats_next_gc_bytes", "missing")
	if m["go_goroutines"] != 41 || m["go_gc_duration_seconds_count"] != 17 || m["go_memstats_next_gc_bytes"] != 12951098 || len(m) != 3 {
		t.Errorf("metrics: %v", m)
	}
}

func TestSoakOptionsValidate(t *testing.T) {
	limit := fdLimit()
	for _, tc := range []struct {
		o  SoakOptions
		ok bool
	}{
		{SoakOptions{}, DefaultSoakConns <= limit-soakFDReserve},
		{SoakOptions{Duration: 30 * time.Second}, false},
		{SoakOptions{Duration: 31 * time.Minute}, false},
		{SoakOptions{Conns: 2000}, true},
		{SoakOptions{Conns: limit}, false},
		{SoakOptions{Conns: 2000, Rate: -1}, false},
		{SoakOptions{Conns: 2000, Rate: MaxSoakRate + 1}, false},
		{SoakOptions{Conns: 2000, HeartbeatTimeout: time.Second}, false},
		{SoakOptions{Conns: 2000, Transport: "udp"}, false},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok %v", tc.o, err, tc.ok)
		}
	}
	if o := (SoakOptions{}).withDefaults(); o.callTimeout() != o.HeartbeatTimeout+time.Second || o.Transport != netx.TransportEpoll {
		t.Errorf("defaults: %+v", o)
	}
}

// testSoak is a soak's state without a lab: n connections on two hosts,
// ready at mono time 100 s.
func testSoak(n int) *soak {
	o := SoakOptions{Conns: n, Rate: 100}.withDefaults()
	k := &soak{opts: o, start: 1, ready: 100e9, env: &Env{opts: Options{}.withDefaults(), name: "soak"}, watch: &watchdog{last: mono()}}
	for i := range 2 {
		k.hosts = append(k.hosts, &soakHost{name: "c" + string(rune('1'+i)), n: n / 2, index: i,
			agents: []*soakAgent{{at: 1, untouchedKinds: map[string]int64{}}}})
	}
	return k
}

func TestSoakAccountsFailuresToFaults(t *testing.T) {
	k := testSoak(1000)
	h := k.hosts[0]
	a := h.agent()
	f := &soakFault{N: 1, Kind: faultCut, Host: h.name, host: h, Kinds: map[string]int64{}}
	h.windows = append(h.windows, &faultWindow{window: window{from: 200e9, to: 210e9}, fault: f})
	report := func(at int64, failed int64, reconnects uint64) {
		st := a.st
		st.Failed, st.Reconnects = failed, reconnects
		st.Errors = map[string]int64{"peer_dead": failed}
		k.account(h, a, &st, at)
	}
	report(50e9, 3, 0)    // during the ramp
	report(150e9, 3, 0)   // nothing new
	report(201e9, 10, 40) // in the fault's window
	report(211e9, 12, 41) // spans its end: still the fault's
	report(300e9, 15, 43) // untouched
	if a.rampFailed != 3 {
		t.Errorf("ramp: %d failed, want 3", a.rampFailed)
	}
	if f.Failed != 9 || f.Lost != 41 || f.Kinds["peer_dead"] != 9 {
		t.Errorf("fault: %d failed (%v), %d lost; want 9, 41", f.Failed, f.Kinds, f.Lost)
	}
	if a.untouchedFailed != 3 || a.untouchedLost != 2 || a.untouchedKinds["peer_dead"] != 3 {
		t.Errorf("untouched: %d failed (%v), %d lost; want 3, 2", a.untouchedFailed, a.untouchedKinds, a.untouchedLost)
	}
	// The agent did not run for the heartbeat timeout less the interval
	// just before: its peers rightly found it dead; not judged.
	st := a.st
	st.Failed, st.Reconnects = 20, 50
	st.Errors = map[string]int64{"peer_dead": 20}
	st.RecentStalls = []span{{From: 395e9, To: 395e9 + int64(k.opts.HeartbeatTimeout-hbInterval)}}
	k.account(h, a, &st, 400e9)
	if a.machineFailed != 5 || a.machineLost != 7 || a.untouchedFailed != 3 {
		t.Errorf("machine stall: %d failed, %d lost (untouched %d); want 5, 7 (3)", a.machineFailed, a.machineLost, a.untouchedFailed)
	}
	if tl := k.timelineText(); len(tl) != 2 || !strings.Contains(tl[0], "untouched") || !strings.Contains(tl[1], "stall of the machine") {
		t.Errorf("timeline: %q", tl)
	}
	if r := k.untouchedRow(); r.Pass {
		t.Errorf("untouched row passes: %+v", r)
	}
}

// samplesOf makes readings every second in [from, to) seconds, with the
// fields fn sets.
func samplesOf(from, to int, fn func(i int, s *serverSample)) []serverSample {
	var out []serverSample
	for i := from; i < to; i++ {
		s := serverSample{At: int64(i) * 1e9, CPU: float64(i) / 10}
		fn(i, &s)
		out = append(out, s)
	}
	return out
}

func TestSoakJudgesFlatness(t *testing.T) {
	const n = 19000
	base := func(i int, s *serverSample) {
		s.Conns, s.FDs, s.Goroutines, s.RSS, s.HeapGoal = n, n+17, 40, 100<<20, 60<<20
	}
	judge := func(last func(i int, s *serverSample)) map[string]Result {
		k := testSoak(n)
		k.first, k.last = window{from: 100e9, to: 160e9}, window{from: 400e9, to: 460e9}
		k.samples = append(samplesOf(100, 160, base), samplesOf(400, 460, func(i int, s *serverSample) { base(i, s); last(i, s) })...)
		rows := map[string]Result{}
		for _, r := range k.judge(nil, nil) {
			rows[r.Scenario] = r
		}
		return rows
	}
	rows := judge(func(int, *serverSample) {})
	for _, name := range []string{"soak-fds", "soak-goroutines", "soak-rss"} {
		if r := rows[name]; !r.Pass || r.Error != "" {
			t.Errorf("flat: %s fails: %+v", name, r)
		}
	}
	rows = judge(func(i int, s *serverSample) { s.FDs += fdTolerance(n) + 1 })
	if rows["soak-fds"].Pass {
		t.Errorf("a descriptor leak passes: %+v", rows["soak-fds"])
	}
	rows = judge(func(i int, s *serverSample) { s.Goroutines += goroutineTolerance(n) + 1 })
	if rows["soak-goroutines"].Pass {
		t.Errorf("a goroutine leak passes: %+v", rows["soak-goroutines"])
	}
	rows = judge(func(i int, s *serverSample) { s.RSS += 11 << 20; s.HeapGoal += 7 << 20 })
	if rows["soak-rss"].Pass {
		t.Errorf("memory growth passes: %+v", rows["soak-rss"])
	}
	// A reading that failed does not count, nor one outside the windows.
	rows = judge(func(i int, s *serverSample) {
		if i%10 == 0 {
			s.FDs, s.Err = 0, "fds: gone"
		}
	})
	if !rows["soak-fds"].Pass {
		t.Errorf("failed readings counted: %+v", rows["soak-fds"])
	}
}

func TestSoakWindowStats(t *testing.T) {
	s := samplesOf(0, 12, func(i int, s *serverSample) {
		s.FDs, s.Goroutines, s.RSS = 100+i, 10, int64(i)<<20
	})
	ws := statsIn(s, window{from: 1e9, to: 11e9})
	if ws.Samples != 11 || ws.FDs != 106 || ws.MinFDs != 101 || ws.MaxFDs != 111 || ws.RSS != 6<<20 {
		t.Errorf("stats: %+v", ws)
	}
	if ws.Cores < 0.099 || ws.Cores > 0.101 {
		t.Errorf("cores %v, want 0.1 (1 CPU s in 10 s)", ws.Cores)
	}
	if ws := statsIn(s, window{}); ws.Samples != 0 {
		t.Errorf("no window: %+v", ws)
	}
}

func TestSoakCallsRow(t *testing.T) {
	k := testSoak(1000)
	k.calls = [4]int64{0, 10, 20, 30}
	h1, h2 := k.hosts[0], k.hosts[1]
	h1.windows = append(h1.windows, &faultWindow{window: window{from: 200e9, to: 220e9}})
	// h1: a killed agent (2 calls in flight at its last report), then its
	// replacement; one call late by no more than its agent's stall.
	h1.agents[0].killed = true
	h1.agents[0].st = soakStatus{Started: 12, OK: 8, Failed: 2, Errors: map[string]int64{"peer_dead": 2}}
	h1.agents = append(h1.agents, &soakAgent{final: &soakStatus{Started: 50, OK: 49, Failed: 1, Errors: map[string]int64{"timeout": 1},
		LateStalled: 1, Stalls: 1, StallMaxMS: 5000}})
	h2.agents[0].final = &soakStatus{Started: 40, OK: 40}
	r := k.callsRow(nil)
	if !r.Pass || !strings.Contains(r.Measured, "102 started: 97 ok, 3 failed; 0 hung, 0 late") || !strings.Contains(r.Detail, "1 more were late") {
		t.Errorf("calls row: %s: %s", r.Measured, r.Detail)
	}
	// A late call its agent's stalls do not explain fails the row; so
	// does a hung call, an untyped error, and a child's race report.
	h2.agents[0].final = &soakStatus{Started: 40, OK: 40, Late: 1, LateCalls: []failedCall{{Start: 300e9, End: 320e9}}}
	if r := k.callsRow(nil); r.Pass || !strings.Contains(r.Detail, "late calls (the first 5): "+h2.name+": t+5m0s to t+5m20s, ") ||
		!strings.Contains(r.Detail, "after its deadline, ok, outside its host's faults") {
		t.Errorf("a late call passes, or is not described: %s: %s", r.Measured, r.Detail)
	}
	h2.agents[0].final = &soakStatus{Started: 40, OK: 39, InFlight: 1}
	if r := k.callsRow(nil); r.Pass {
		t.Errorf("a hung call passes: %s", r.Measured)
	}
	h2.agents[0].final = &soakStatus{Started: 40, OK: 39, Failed: 1, Errors: map[string]int64{"untyped": 1}}
	if r := k.callsRow(nil); r.Pass {
		t.Errorf("an untyped error passes: %s", r.Measured)
	}
	h2.agents[0].final = &soakStatus{Started: 40, OK: 40}
	if r := k.callsRow([]string{"agent on c2 reported: WARNING: DATA RACE"}); r.Pass {
		t.Errorf("a race report passes: %s", r.Detail)
	}
}

// TestAgentSoak runs an agent's soak against a server on loopback: every
// client connects and makes its first call, the calls add up, and the end
// leaves nothing in flight.
func TestAgentSoak(t *testing.T) {
	srv, err := server.New(server.Config{Session: session.Config{HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout}}, refservice.Handler())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netx.ListenConfig{AllowEphemeralPort: true}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()

	a := &agentProc{clients: map[string]*agentClient{}}
	const n = 40
	st, err := a.handleSoak(agentReq{Op: "soak_start", Addrs: []string{ln.Addr().String()}, Conns: n, Rate: 200, RampRate: 400,
		Timeout: 3 * time.Second, Seed: 1, HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout})
	if err != nil || st == nil {
		t.Fatal(err)
	}
	if _, err := a.handleSoak(agentReq{Op: "soak_start", Conns: 1, Rate: 1, RampRate: 1, Timeout: time.Second}); err == nil {
		t.Error("a second soak started")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err = a.handleSoak(agentReq{Op: "soak_peek"})
		if err != nil {
			t.Fatal(err)
		}
		if st.Clients == n && st.Ready == n && st.Warm == n && st.OK > 2*n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's counters
	}
	st, err = a.handleSoak(agentReq{Op: "soak_stop"})
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight != 0 || st.Failed != 0 || st.Started != st.OK || st.Late != 0 || st.Dials != n || st.Reconnects != 0 {
		t.Errorf("final: %+v", st)
	}
	a.closeAll()
	if got := srv.Stats().Accepted; got != n {
		t.Errorf("the server accepted %d connections, want %d", got, n)
	}
}

func TestWatchdogStalls(t *testing.T) {
	w := &watchdog{last: mono()}
	w.noteLocked(window{from: 10e9, to: 12e9})
	w.noteLocked(window{from: 20e9, to: 20.5e9})
	for _, tc := range []struct {
		a, b          int64
		want, longest time.Duration
	}{
		{0, 9e9, 0, 0},
		{11e9, 30e9, 1500 * time.Millisecond, 2 * time.Second},
		{9e9, 11e9, time.Second, 2 * time.Second},
		{0, 40e9, 2500 * time.Millisecond, 2 * time.Second},
		{20.2e9, 30e9, 300 * time.Millisecond, 500 * time.Millisecond},
	} {
		if got := w.stalledIn(tc.a, tc.b); got != tc.want {
			t.Errorf("stalled in [%v, %v]: %v, want %v", time.Duration(tc.a), time.Duration(tc.b), got, tc.want)
		}
		if got := w.longestIn(tc.a, tc.b); got != tc.longest {
			t.Errorf("longest in [%v, %v]: %v, want %v", time.Duration(tc.a), time.Duration(tc.b), got, tc.longest)
		}
	}
	if n, longest, total := w.counts(); n != 2 || longest != 2*time.Second || total != 2500*time.Millisecond {
		t.Errorf("counts: %d %v %v", n, longest, total)
	}
	if r := w.recent(1); len(r) != 1 || r[0] != (span{From: 20e9, To: 20.5e9}) {
		t.Errorf("recent: %v", r)
	}
	// A stall still going on (no tick for 2 s) counts.
	w.last = mono() - 2e9
	if got := w.stalledIn(mono()-3e9, mono()); got < time.Second {
		t.Errorf("a stall going on: %v", got)
	}
	// A running watchdog stops.
	startWatchdog().close()
}

func TestSoakProcReadings(t *testing.T) {
	pid := os.Getpid()
	fds, err := countFDs(pid)
	if err != nil || fds < 3 {
		t.Errorf("descriptors: %d, %v", fds, err)
	}
	rss, threads, err := procStatus(pid)
	if err != nil || rss <= 0 || threads < 1 {
		t.Errorf("status: RSS %d, %d threads, %v", rss, threads, err)
	}
	if cpu, err := procCPUSeconds(pid); err != nil || cpu < 0 {
		t.Errorf("CPU: %v, %v", cpu, err)
	}
	if w, err := procWaited(pid); err != nil || w < 0 {
		t.Errorf("waited: %v, %v", w, err)
	}
}
