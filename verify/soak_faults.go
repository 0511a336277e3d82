package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/session"
)

// The soak's faults: drawn from a seeded generator, applied one at a time
// to one client host, each followed by a wait for every connection to be
// back, then, unless it is the last, a quiet gap.

// The kinds of fault.
const (
	faultCut    = "cut"    // the host's link drops every packet, both ways
	faultFreeze = "freeze" // the host's agent is stopped (SIGSTOP), then resumed
	faultKill   = "kill"   // the host's agent is killed (SIGKILL); a new one takes its place
)

var faultKinds = []string{faultCut, faultFreeze, faultKill}

// soakRecoveryGuess is how long a fault's recovery usually takes: no fault
// starts that would likely run into the last window.
const soakRecoveryGuess = 15 * time.Second

// soakRecoveryLimit bounds a fault's recovery: the clients' longest
// backoff, the ramp of a replaced agent (all of a host's clients, at its
// share of soakRampRate), with room for a loaded machine.
func soakRecoveryLimit(conns int) time.Duration {
	ramp := time.Duration(float64(conns) / soakRampRate * float64(time.Second))
	return 30*time.Second + client.DefaultBackoffMax + 2*ramp
}

// soakFault is one fault and what it did.
type soakFault struct {
	N    int           `json:"n"`
	Kind string        `json:"kind"`
	Host string        `json:"host"`
	Dur  time.Duration `json:"duration"` // how long it lasted (kill: until the new agent started)
	Gap  time.Duration `json:"gap"`      // the quiet time waited after its recovery (0 after the last fault)

	host *soakHost
	At   int64 // mono: applied
	End  int64 // undone (link restored, agent resumed, new agent started)
	// Recovered is when every connection was back (0: not within the
	// limit; RecoverErr says what was missing).
	Recovered  int64
	RecoverErr string
	Err        string // applying or undoing it failed

	// What the host's clients reported during its window, and the
	// server's dead peers then.
	Failed         int64
	Kinds          map[string]int64
	Lost           uint64 // connections lost or failing to connect
	ServerDead     uint64
	KilledInFlight int64 // kill: calls in flight in the killed agent at its last report
}

// scheduler draws the faults: kinds in blocks of three in a random order
// (every kind once per block), a host, a duration and a gap, always in the
// same order, so a seed gives the same sequence. Cuts and freezes last from
// a third of the heartbeat timeout to three times it (freezes 8/3): some
// too short for either side to declare the other dead, most long enough.
type scheduler struct {
	rng     *rand.Rand
	timeout time.Duration // the heartbeat timeout
	block   []string
}

func (s *scheduler) next(hosts int) (kind string, host int, dur, gap time.Duration) {
	if len(s.block) == 0 {
		s.block = append([]string(nil), faultKinds...)
		s.rng.Shuffle(len(s.block), func(i, j int) { s.block[i], s.block[j] = s.block[j], s.block[i] })
	}
	kind, s.block = s.block[0], s.block[1:]
	host = s.rng.IntN(hosts)
	switch kind {
	case faultCut:
		dur = s.between(s.timeout/3, 3*s.timeout)
	case faultFreeze:
		dur = s.between(s.timeout/3, s.timeout*8/3)
	case faultKill:
		dur = s.between(500*time.Millisecond, 3*time.Second)
	}
	gap = s.between(time.Second, 6*time.Second)
	return kind, host, dur, gap
}

// between draws a duration in [lo, hi), in steps of 100 ms (lo rounded
// up to one).
func (s *scheduler) between(lo, hi time.Duration) time.Duration {
	const step = 100 * time.Millisecond
	lo = (lo + step - 1) / step * step
	return lo + time.Duration(s.rng.Int64N(max(int64((hi-lo)/step), 1)))*step
}

// faultPhase applies faults until the next one would likely not have
// recovered by end. The quiet gap drawn for a fault is waited after its
// recovery only if the next fault still fits after it, so that the phase
// ends as soon as no more faults fit and the time after it, reserved for
// the memory to settle before the last window, is not cut short by a gap
// that leads to no fault.
func (k *soak) faultPhase(ctx context.Context, end time.Time) error {
	sch := &scheduler{rng: k.rng, timeout: k.opts.HeartbeatTimeout}
	var prev *soakFault
	gap := time.Duration(0) // drawn with prev
	fits := func(wait, dur time.Duration) bool { return !time.Now().Add(wait + dur + soakRecoveryGuess).After(end) }
	for {
		kind, hi, dur, nextGap := sch.next(len(k.hosts))
		if !fits(gap, dur) {
			return nil
		}
		if prev != nil {
			if _, err := k.runUntil(ctx, time.Now().Add(gap), nil); err != nil {
				return err
			}
			prev.Gap = gap
			if !fits(0, dur) { // the wait overran
				return nil
			}
		}
		f := &soakFault{N: len(k.faults) + 1, Kind: kind, Host: k.hosts[hi].name, Dur: dur,
			host: k.hosts[hi], Kinds: map[string]int64{}}
		k.faults = append(k.faults, f)
		if err := k.apply(ctx, f); err != nil {
			return err
		}
		prev, gap = f, nextGap
	}
}

// apply produces fault f, undoes it after its duration and waits for every
// connection to be back. An error means the run cannot go on (a fault
// could not be undone, the server is gone); a fault that could not be
// applied is recorded in f.Err.
func (k *soak) apply(ctx context.Context, f *soakFault) error {
	h := f.host
	w := &faultWindow{fault: f}
	open := func() {
		f.At = mono()
		w.from = f.At
		h.windows = append(h.windows, w)
	}
	switch f.Kind {
	case faultCut:
		open()
		if err := h.link.Cut(); err != nil {
			f.Err = err.Error()
			w.to = mono()
			return nil
		}
		if _, err := k.runUntil(ctx, time.Now().Add(f.Dur), nil); err != nil {
			return err
		}
		if err := h.link.Restore(); err != nil {
			f.Err = err.Error()
			return fmt.Errorf("fault %d: restoring %s's link: %w", f.N, h.name, err)
		}
	case faultFreeze:
		pid := h.agent().ag.proc.pid()
		open()
		if err := faultnet.Freeze(pid); err != nil {
			f.Err = err.Error()
			w.to = mono()
			return nil
		}
		if _, err := k.runUntil(ctx, time.Now().Add(f.Dur), nil); err != nil {
			return err
		}
		if err := faultnet.Thaw(pid); err != nil {
			f.Err = err.Error()
			return fmt.Errorf("fault %d: resuming %s's agent: %w", f.N, h.name, err)
		}
	case faultKill:
		a := h.agent()
		// Its counters just before: what it had not finished then ends
		// with it.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := a.ag.do(pctx, agentReq{Op: "soak_peek"})
		cancel()
		if err == nil {
			k.account(h, a, r.Soak, r.Mono)
		}
		open()
		if err := faultnet.Kill(a.ag.proc.pid()); err != nil {
			f.Err = err.Error()
			w.to = mono()
			return nil
		}
		a.killed = true
		f.KilledInFlight = a.st.Started - a.st.OK - a.st.Failed
		_ = a.ag.proc.waitExit(5 * time.Second)
		if _, err := k.runUntil(ctx, time.Now().Add(f.Dur), nil); err != nil {
			return err
		}
		if err := k.startAgent(ctx, h); err != nil {
			return fmt.Errorf("fault %d: replacing %s's agent: %w", f.N, h.name, err)
		}
	}
	f.End = mono()
	f.Dur = since(f.At, f.End).Round(100 * time.Millisecond)
	limit := soakRecoveryLimit(k.opts.Conns)
	up := k.upTwice()
	ok, err := k.runUntil(ctx, time.Now().Add(limit), up.check)
	if err != nil {
		return err
	}
	if ok {
		f.Recovered = up.first
		w.to = f.Recovered + int64(k.opts.grace())
	} else {
		// The window stays open: what the host reports from now on is
		// the fault's.
		f.RecoverErr = fmt.Sprintf("not every connection back %s after the fault ended: %s", fmtDur(limit), k.upText())
	}
	f.ServerDead = k.deadDuring(f.At, mono())
	k.logf("%s: %s", k.rel(mono()), f.line())
	k.timeline = append(k.timeline, timelineEntry{at: f.At, fault: f})
	return nil
}

// deadDuring is the server's dead peers between two mono times, from the
// readings.
func (k *soak) deadDuring(from, to int64) uint64 {
	var a, b uint64
	for _, s := range k.samples {
		if s.Err != "" && s.Conns == 0 {
			continue
		}
		if s.At <= from {
			a = s.DeadPeers
		}
		if s.At <= to {
			b = s.DeadPeers
		}
	}
	return b - min(a, b)
}

// waitedDuring is how long the server's threads waited for a CPU between
// two mono times, from the readings around them.
func (k *soak) waitedDuring(from, to int64) time.Duration {
	var a, b float64
	for _, s := range k.samples {
		if s.Err != "" {
			continue
		}
		if s.At <= from || a == 0 {
			a = s.Waited
		}
		b = s.Waited
		if s.At >= to {
			break
		}
	}
	return time.Duration((b - min(a, b)) * float64(time.Second)).Round(10 * time.Millisecond)
}

// line describes the fault for the timeline.
func (f *soakFault) line() string {
	var b strings.Builder
	switch f.Kind {
	case faultCut:
		fmt.Fprintf(&b, "fault %d: %s's link cut for %s", f.N, f.Host, fmtDur(f.Dur))
	case faultFreeze:
		fmt.Fprintf(&b, "fault %d: %s's agent frozen (SIGSTOP) for %s", f.N, f.Host, fmtDur(f.Dur))
	case faultKill:
		fmt.Fprintf(&b, "fault %d: %s's agent killed (SIGKILL), a new one started %s later", f.N, f.Host, fmtDur(f.Dur))
	}
	switch {
	case f.Err != "":
		fmt.Fprintf(&b, ": FAILED: %s", f.Err)
	case f.Recovered == 0:
		fmt.Fprintf(&b, "; NOT RECOVERED: %s", f.RecoverErr)
	default:
		fmt.Fprintf(&b, "; every connection back %s after", fmtDur(since(f.End, f.Recovered)))
	}
	fmt.Fprintf(&b, "; its clients: %d failed calls", f.Failed)
	if len(f.Kinds) > 0 {
		fmt.Fprintf(&b, " (%s)", kindsText(f.Kinds))
	}
	fmt.Fprintf(&b, ", %d connections lost or dials failed", f.Lost)
	if f.Kind == faultKill {
		fmt.Fprintf(&b, ", %d calls in flight ended with the process", f.KilledInFlight)
	}
	fmt.Fprintf(&b, "; the server: %d dead peers", f.ServerDead)
	return b.String()
}

// kindsText formats error counts by kind: "3 peer_dead, 1 timeout".
func kindsText(m map[string]int64) string {
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// windowOver returns the fault window of h that overlaps (a, b], or nil.
func (h *soakHost) windowOver(a, b int64) *faultWindow {
	for _, w := range h.windows {
		if w.overlaps(a, b) {
			return w
		}
	}
	return nil
}

// account takes an agent's report st, read at mono time at: what changed
// since its previous report is the fault's whose window overlaps the span
// between them, the ramp's before every connection was first up, and
// otherwise counts against the run (an untouched client failed a call or
// lost its connection).
func (k *soak) account(h *soakHost, a *soakAgent, st *soakStatus, at int64) {
	prev, prevAt := a.st, a.at
	dFailed := st.Failed - prev.Failed
	dLost := (st.Reconnects + st.DialFailures) - min(prev.Reconnects+prev.DialFailures, st.Reconnects+st.DialFailures)
	a.st, a.at = *st, at
	if dFailed <= 0 && dLost == 0 {
		return
	}
	kinds := map[string]int64{}
	for kind, n := range st.Errors {
		if d := n - prev.Errors[kind]; d > 0 {
			kinds[kind] = d
		}
	}
	if w := h.windowOver(prevAt, at); w != nil {
		w.fault.Failed += dFailed
		w.fault.Lost += dLost
		for kind, n := range kinds {
			w.fault.Kinds[kind] += n
		}
		return
	}
	if k.ready == 0 || at <= k.ready {
		a.rampFailed += dFailed
		return
	}
	// A peer that last heard from the stalled side up to an interval and
	// a step of the PING grid before the stall finds it dead after
	// HeartbeatTimeout.
	if who, d := k.machineStall(st, prevAt, at); d >= k.opts.HeartbeatTimeout-hbInterval-k.pingGrid() {
		a.machineFailed += dFailed
		a.machineLost += dLost
		k.note(fmt.Sprintf("%s, during a stall of the machine (%s did not run for %s, long enough for its peers to find it dead): %d calls failed (%s), %d connections lost or dials failed, between %s and %s",
			h.name, who, fmtDur(d), dFailed, kindsText(kinds), dLost, k.rel(prevAt), k.rel(at)))
		return
	}
	a.untouchedFailed += dFailed
	a.untouchedLost += dLost
	for kind, n := range kinds {
		a.untouchedKinds[kind] += n
	}
	stalled := ""
	if d := st.StallTotalMS - prev.StallTotalMS; d > 0 {
		stalled = fmt.Sprintf("; its agent did not run for %s of that span", fmtMS(d))
	}
	if w := k.waitedDuring(prevAt, at); w > 0 {
		stalled += fmt.Sprintf("; the server's threads waited %s for a CPU in it", fmtDur(w))
	}
	k.note(fmt.Sprintf("%s, untouched by any fault: %d calls failed (%s), %d connections lost or dials failed, between %s and %s%s",
		h.name, dFailed, kindsText(kinds), dLost, k.rel(prevAt), k.rel(at), stalled))
}

// pingGrid is the step of the grid the soak's clients and server send
// their PINGs on (session.Config.PingGrid): a PING can wait that long.
func (k *soak) pingGrid() time.Duration {
	return session.Config{HeartbeatInterval: hbInterval, HeartbeatTimeout: k.opts.HeartbeatTimeout}.PingGrid()
}

// machineStall returns the longest time a process of the soak was not
// run, as far as anyone saw it, in the span (a, b] or within the heartbeat
// timeout before it (what a stall breaks shows after it): the agent's own
// watchdog (its report st), or the monitor's.
func (k *soak) machineStall(st *soakStatus, a, b int64) (who string, d time.Duration) {
	from := a - int64(k.opts.HeartbeatTimeout)
	for _, s := range st.RecentStalls {
		if w := (window{from: s.From, to: s.To}); w.overlaps(from, b) && since(s.From, s.To) > d {
			who, d = "its agent", since(s.From, s.To)
		}
	}
	if m := k.watch.longestIn(from, b); m > d {
		who, d = "the soak's monitor", m
	}
	return who, d
}

// rel formats a mono time relative to the soak's start: "t+4m12.3s".
func (k *soak) rel(t int64) string {
	return "t+" + since(k.start, t).Round(100*time.Millisecond).String()
}

// timelineEntry is a line of the timeline: a note, or a fault (rendered
// at the end, with what was accounted to it after its recovery too).
type timelineEntry struct {
	at    int64
	text  string
	fault *soakFault
}

// note adds a line to the timeline (and the progress output).
func (k *soak) note(s string) {
	at := mono()
	k.timeline = append(k.timeline, timelineEntry{at: at, text: s})
	k.logf("%s: %s", k.rel(at), s)
}

// timelineText renders the timeline, one line per entry.
func (k *soak) timelineText() []string {
	out := make([]string, len(k.timeline))
	for i, e := range k.timeline {
		text := e.text
		if e.fault != nil {
			text = e.fault.line()
		}
		out[i] = k.rel(e.at) + ": " + text
	}
	return out
}

// minuteLine notes the server's state once a minute.
func (k *soak) minuteLine() {
	if len(k.samples) == 0 || k.start == 0 {
		return
	}
	m := since(k.start, mono()) / time.Minute
	if int64(m) <= k.lastMin {
		return
	}
	k.lastMin = int64(m)
	s := k.samples[len(k.samples)-1]
	waited := k.waitedDuring(s.At-int64(time.Minute), s.At)
	var started, ok, failed int64
	for _, h := range k.hosts {
		for _, a := range h.agents {
			started += a.st.Started
			ok += a.st.OK
			failed += a.st.Failed
		}
	}
	k.note(fmt.Sprintf("server: %d connections, %d descriptors, %d goroutines, %d threads, RSS %s, heap goal %s, %d dead peers so far, its threads waited %s for a CPU in the last minute; calls so far: %d started, %d ok, %d failed; %d faults; %s",
		s.Conns, s.FDs, s.Goroutines, s.Threads, mib(s.RSS), mib(s.HeapGoal), s.DeadPeers, fmtDur(waited), started, ok, failed, len(k.faults), hostLoad()))
}

// mib formats bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
