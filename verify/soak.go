package verify

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/netx"
)

// The soak: one `tcppro serve` holding many connections from client agents
// on several hosts, heartbeats every second, a steady light call rate, and
// random faults from a seeded schedule (a client host's link cut, its
// agent frozen, its agent killed and replaced), for up to 30 minutes. The
// server's descriptors, goroutines and memory are read all along; those of
// a fault-free window after the ramp and of a fault-free window at the end
// must be flat, every call must end, and only the clients a fault touched
// may see failures or lose their connection. See RunSoak.

// SoakOptions configure RunSoak. Zero fields take the defaults.
type SoakOptions struct {
	// Duration is how long the soak runs once every connection is up: the
	// server's memory settling, a fault-free first window, the faults,
	// and a fault-free last window once everything has recovered. 1 to 30
	// minutes; default 30 minutes.
	Duration time.Duration
	// Conns is the connections the server holds, one per client, spread
	// over the client hosts. Default 19 000; at most the open-file limit
	// less 100 (the server holds one descriptor per connection).
	Conns int
	// Rate is the calls per second made across all the connections, each
	// on a client picked at random. Default 200.
	Rate float64
	// Seed seeds the fault schedule and the clients' picks: a run with
	// the same seed and options draws the same faults, hosts and
	// durations in the same order. Default 0: one is drawn (and reported).
	Seed uint64
	// Transport is the server's (`tcppro serve --transport`). Default
	// epoll: the event loop. The clients use auto.
	Transport netx.Transport
	// HeartbeatTimeout is the server's and the clients' heartbeat timeout
	// (the interval is 1 s): silence after which a peer is dead. It must
	// exceed the interval; the calls' deadline is 1 s more, and the cuts
	// and freezes last from a third of it to three times it. Default 10 s,
	// the library's: on a machine shared with other work, a process of the
	// soak may not be scheduled for seconds, and with a shorter timeout
	// its peers take it for dead.
	HeartbeatTimeout time.Duration
	// Progress receives a line at each phase, fault and minute. Nil: none.
	Progress io.Writer
	// Command starts the tcppro program inside a host, as
	// Options.Command; the server is `tcppro serve` with --transport,
	// --max-conns and --admin, so the program must be the real one (tests
	// play it from package main's test binary). Default SelfCommand.
	Command func(ctx context.Context, h *faultnet.Host, args ...string) *exec.Cmd
}

// Soak defaults and bounds.
const (
	DefaultSoakDuration = 30 * time.Minute
	DefaultSoakConns    = 19000
	DefaultSoakRate     = 200.0
	// DefaultSoakHeartbeatTimeout is SoakOptions.HeartbeatTimeout's
	// default.
	DefaultSoakHeartbeatTimeout = 10 * time.Second
	// MaxSoakHeartbeatTimeout bounds it.
	MaxSoakHeartbeatTimeout = 30 * time.Second
	MinSoakDuration         = time.Minute
	MaxSoakDuration         = 30 * time.Minute
	// MaxSoakRate bounds Rate: the load stays light.
	MaxSoakRate = 2000.0
)

// The soak's settings.
const (
	// soakRampRate is the connections opened per second, across the
	// client hosts, at the start and when a killed agent is replaced.
	soakRampRate = 1000.0
	// soakMinHosts is the fewest client hosts: faults touch one at a time
	// and the others must not notice.
	soakMinHosts = 4
	// soakTick is how often the server is sampled and the agents read.
	soakTick = time.Second
	// soakAdmin is the server's admin plane, on its host's loopback.
	soakAdmin = "127.0.0.1:7421"
	// soakFDReserve is the descriptors a process needs besides its
	// connections.
	soakFDReserve = 100
)

func (o SoakOptions) withDefaults() SoakOptions {
	if o.Duration == 0 {
		o.Duration = DefaultSoakDuration
	}
	if o.Conns == 0 {
		o.Conns = DefaultSoakConns
	}
	if o.Rate == 0 {
		o.Rate = DefaultSoakRate
	}
	if o.Transport == "" {
		o.Transport = netx.TransportEpoll
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = DefaultSoakHeartbeatTimeout
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Command == nil {
		o.Command = SelfCommand
	}
	return o
}

// Validate checks the options (after defaults) against this machine's
// open-file limit.
func (o SoakOptions) Validate() error {
	o = o.withDefaults()
	if o.Duration < MinSoakDuration || o.Duration > MaxSoakDuration {
		return fmt.Errorf("verify: soak duration %v: want %v to %v", o.Duration, MinSoakDuration, MaxSoakDuration)
	}
	if o.Rate <= 0 || o.Rate > MaxSoakRate {
		return fmt.Errorf("verify: soak rate %v calls/s: want > 0 and <= %v", o.Rate, MaxSoakRate)
	}
	if o.HeartbeatTimeout <= hbInterval || o.HeartbeatTimeout > MaxSoakHeartbeatTimeout {
		return fmt.Errorf("verify: soak heartbeat timeout %v: want more than the interval, %v, and at most %v", o.HeartbeatTimeout, hbInterval, MaxSoakHeartbeatTimeout)
	}
	if err := o.Transport.Validate(); err != nil {
		return fmt.Errorf("verify: soak transport: %w", err)
	}
	limit := fdLimit()
	if o.Conns < soakMinHosts || o.Conns > limit-soakFDReserve {
		return fmt.Errorf("verify: soak connections %d: want %d to %d (the open-file limit here, %d, less %d for the server's own descriptors)",
			o.Conns, soakMinHosts, limit-soakFDReserve, limit, soakFDReserve)
	}
	return nil
}

// fdLimit is this process's hard open-file limit, which the processes it
// starts inherit (Go raises the soft limit to it).
func fdLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Max > 1<<30 {
		return 1 << 30
	}
	return int(rl.Max)
}

// perAgent is the most clients one agent runs: each holds one connection
// (one descriptor), on whichever transport; the clients of a process share
// one group of event loops.
func perAgent() int { return 4750 }

// callTimeout is every call's deadline: above the heartbeat timeout, so a
// call on a connection that dies silently ends with the dead peer.
func (o SoakOptions) callTimeout() time.Duration { return o.HeartbeatTimeout + time.Second }

// grace extends a fault's window past its recovery: calls started during
// the fault end within their deadline.
func (o SoakOptions) grace() time.Duration { return o.callTimeout() + time.Second }

// soakHostCount is the client hosts for conns connections.
func soakHostCount(conns int) int {
	per := perAgent()
	return max(soakMinHosts, (conns+per-1)/per)
}

// soakWindow is the length of the first and the last window: a minute
// for runs of six minutes or more, a sixth of shorter ones (10 s at least).
func soakWindow(d time.Duration) time.Duration {
	return min(max(d/6, 10*time.Second), time.Minute)
}

// soak is one run's state, owned by RunSoak's goroutine.
type soak struct {
	env  *Env
	opts SoakOptions
	seed uint64
	rng  *rand.Rand

	srv   *serverProc
	smp   *sampler
	hosts []*soakHost

	start    int64 // mono: the soak began (the ramp)
	ready    int64 // every connection up after the ramp
	first    window
	last     window
	samples  []serverSample
	faults   []*soakFault
	rampErr  string          // the ramp did not complete
	finalErr string          // the end's recovery did not complete
	settle   time.Duration   // from the ramp to the first window
	lastTick int64           // mono: when the last tick started
	watch    *watchdog       // when the machine did not run the monitor
	lastMin  int64           // the last minute noted
	timeline []timelineEntry // the faults, the minutes and anything untoward, in order
	// calls[0] and calls[1] are the successful calls so far at the start
	// and the end of the first window, calls[2] and calls[3] of the last.
	calls [4]int64
}

// soakHost is a client host: its link to the server host and its agents
// (the current one last).
type soakHost struct {
	name    string
	host    *faultnet.Host
	link    *faultnet.Link
	addr    string // the server's address on this host's link
	n       int    // its clients
	index   int
	agents  []*soakAgent
	windows []*faultWindow // when faults touched it
}

func (h *soakHost) agent() *soakAgent { return h.agents[len(h.agents)-1] }

// soakAgent is one agent process of a host and what it reported.
type soakAgent struct {
	ag      *agent
	started int64      // mono: its soak started
	st      soakStatus // its last report
	at      int64      // when that was read (started until the first)
	killed  bool       // SIGKILLed: st is its last report before
	final   *soakStatus

	// What it reported outside any fault of its host (after the ramp):
	// during a stall of the machine, and otherwise.
	untouchedFailed int64
	untouchedKinds  map[string]int64
	untouchedLost   uint64 // connections lost or failing to connect
	machineFailed   int64
	machineLost     uint64
	rampFailed      int64
}

// window is a span of mono times; to == 0: still open.
type window struct{ from, to int64 }

func (w window) overlaps(a, b int64) bool {
	return b >= w.from && (w.to == 0 || a <= w.to)
}

func (w window) contains(t int64) bool { return t >= w.from && (w.to == 0 || t <= w.to) }

// faultWindow is the span during which a fault touched a host: from the
// fault to its recovery + SoakOptions.grace.
type faultWindow struct {
	window
	fault *soakFault
}

// RunSoak runs the soak and returns its rows (soak-fds, soak-goroutines,
// soak-rss, soak-calls, soak-untouched, soak-faults), as Run does for a
// scenario. The error is non-nil only when the lab cannot run here (it
// matches faultnet.ErrUnsupported), the options are invalid, or ctx was
// cancelled; a soak that fails is rows with Pass false.
func RunSoak(ctx context.Context, opts SoakOptions) ([]Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := Check(ctx); err != nil {
		return nil, err
	}
	k := &soak{opts: opts, seed: opts.Seed}
	if k.seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		k.seed = binary.LittleEndian.Uint64(b[:]) >> 1 // fits a flag's int64 printing too
	}
	k.rng = rand.New(rand.NewPCG(k.seed, 0x50a4))
	k.env = &Env{ctx: ctx, name: "soak", opts: Options{Progress: opts.Progress, Command: opts.Command}.withDefaults()}
	k.watch = startWatchdog()
	start := time.Now()
	k.logf("start: %d connections over %d client hosts, %s on the server, heartbeats every %v (timeout %v), %.0f calls/s, %v, seed %d",
		opts.Conns, soakHostCount(opts.Conns), opts.Transport, hbInterval, opts.HeartbeatTimeout, opts.Rate, opts.Duration, k.seed)
	runErr := k.run(ctx)
	var stopErr error
	if ctx.Err() == nil {
		stopErr = k.stopAgents()
	}
	if k.smp != nil {
		k.smp.close()
	}
	k.watch.close()
	k.env.close()
	// A child that reported a data race or a panic fails the run (in
	// tests they are -race builds).
	var problems []string
	for _, p := range k.env.procs {
		if rep := p.stderr.problem(); rep != "" {
			if len(rep) > 2000 {
				rep = rep[:2000] + "..."
			}
			problems = append(problems, p.name+" reported: "+rep)
		}
	}
	rows := k.judge(errors.Join(runErr, stopErr), problems)
	took := ms(time.Since(start))
	for i := range rows {
		rows[i].DurationMS = took
	}
	verdict := "pass"
	for _, r := range rows {
		if !r.Pass {
			verdict = "FAIL"
		}
	}
	if ctx.Err() != nil {
		k.logf("interrupted (took %s)", fmtDur(time.Since(start)))
		return rows, ctx.Err()
	}
	k.logf("%s (took %s; seed %d)", verdict, fmtDur(time.Since(start)), k.seed)
	return rows, nil
}

func (k *soak) logf(format string, args ...any) { k.env.logf(format, args...) }

// run builds the lab, ramps up, and runs the windows and the faults.
func (k *soak) run(ctx context.Context) error {
	if err := k.setup(ctx); err != nil {
		return err
	}
	o := k.opts
	w := soakWindow(o.Duration)
	// The ramp.
	k.start = mono()
	for _, h := range k.hosts {
		if err := k.startAgent(ctx, h); err != nil {
			return err
		}
	}
	rampLimit := time.Minute + time.Duration(3*float64(o.Conns)/soakRampRate*float64(time.Second))
	up := k.upTwice()
	ok, err := k.runUntil(ctx, time.Now().Add(rampLimit), up.check)
	if err != nil {
		return err
	}
	if !ok {
		k.rampErr = fmt.Sprintf("not every connection up %s after the start: %s", fmtDur(rampLimit), k.upText())
		return errors.New(k.rampErr)
	}
	k.ready = up.first
	readyAt := time.Now()
	k.logf("ramp: %d connections up in %s", o.Conns, fmtDur(since(k.start, k.ready)))

	// The server's memory settles: its heap reaches the high-water mark
	// of its collection cycle under this load (RSS keeps the pages of the
	// first cycles after the ramp until then).
	settleLimit := min(o.Duration/8, 2*time.Minute)
	settle, err := k.awaitSettled(ctx, k.ready, readyAt.Add(settleLimit), "the ramp", "first")
	if err != nil {
		return err
	}
	k.settle = settle

	// The first window, the faults, the last window.
	k.first = window{from: mono()}
	k.calls[0] = k.okSoFar()
	if _, err := k.runUntil(ctx, time.Now().Add(w), nil); err != nil {
		return err
	}
	k.first.to = mono()
	k.calls[1] = k.okSoFar()
	k.logf("first window done: %s", k.windowText(k.first))
	// The faults (each waits for its recovery), until the last window is
	// due less the time the memory is given to settle; then quiet until
	// the last window is due. The memory settles meanwhile by the first
	// window's rule (a reconnection storm's garbage stays resident a
	// while), so that both windows see the server in the same state.
	lastDue := readyAt.Add(o.Duration - w)
	if err := k.faultPhase(ctx, lastDue.Add(-settleLimit)); err != nil {
		return err
	}
	if _, err := k.awaitSettled(ctx, mono(), lastDue, "the faults ended", "last"); err != nil {
		return err
	}
	if _, err := k.runUntil(ctx, lastDue, nil); err != nil {
		return err
	}
	if !k.allUp() {
		k.finalErr = fmt.Sprintf("not every connection back when the last window was due: %s", k.upText())
		k.logf("%s", k.finalErr)
	}
	k.last = window{from: mono()}
	k.calls[2] = k.okSoFar()
	if _, err := k.runUntil(ctx, time.Now().Add(w), nil); err != nil {
		return err
	}
	k.last.to = mono()
	k.calls[3] = k.okSoFar()
	k.logf("last window done: %s", k.windowText(k.last))
	return nil
}

// setup builds the lab: a server host linked to every client host, and
// the server.
func (k *soak) setup(ctx context.Context) error {
	lab, err := k.env.newLab()
	if err != nil {
		return err
	}
	srvH, err := lab.AddHost("server")
	if err != nil {
		return err
	}
	n := soakHostCount(k.opts.Conns)
	for i := range n {
		h, err := lab.AddHost("c" + strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		lk, err := lab.Link(h, srvH)
		if err != nil {
			return err
		}
		share := k.opts.Conns / n
		if i < k.opts.Conns%n {
			share++
		}
		k.hosts = append(k.hosts, &soakHost{name: h.Name(), host: h, link: lk, n: share, index: i,
			addr: addr(lk.Addr(srvH), servicePort).String()})
	}
	// A cap a little above the connections (a reconnect may arrive before
	// the server has seen the end of the connection it replaces), within
	// the open-file limit.
	maxConns := min(k.opts.Conns+k.opts.Conns/50+10, fdLimit()-soakFDReserve/2)
	k.srv, err = k.env.startServer(ctx, srvH, addr(netip.IPv4Unspecified(), servicePort),
		"--transport", string(k.opts.Transport),
		"--heartbeat-timeout", k.opts.HeartbeatTimeout.String(), // after serverArgs' own: the last wins
		"--max-conns", strconv.Itoa(maxConns),
		"--admin", soakAdmin,
		"--shutdown-timeout", "5s")
	if err != nil {
		return err
	}
	k.smp = newSampler(k.srv.pid(), srvH, soakAdmin)
	return nil
}

// startAgent starts an agent on h and its soak.
func (k *soak) startAgent(ctx context.Context, h *soakHost) error {
	ag, err := k.env.startAgent(h.host)
	if err != nil {
		return err
	}
	share := float64(h.n) / float64(k.opts.Conns)
	a := &soakAgent{ag: ag, untouchedKinds: map[string]int64{}}
	_, err = ag.do(ctx, agentReq{Op: "soak_start", Addrs: []string{h.addr}, Conns: h.n,
		Rate: k.opts.Rate * share, RampRate: soakRampRate * share, Timeout: k.opts.callTimeout(),
		Seed:              k.seed + uint64(h.index)<<32 + uint64(len(h.agents)),
		HeartbeatInterval: hbInterval, HeartbeatTimeout: k.opts.HeartbeatTimeout})
	if err != nil {
		return err
	}
	a.started = mono()
	a.at = a.started
	h.agents = append(h.agents, a)
	return nil
}
