package verify

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
)

// The balancing rows: a slow instance among fast ones, and a black-holed
// one, each on four server hosts of a fleet lab, with the client's default
// balancer (P2C on the peak-EWMA cost).

// ---------------------------------------------------------------------------
// slow-instance

const (
	// slowFast is how long the three fast servers take to answer;
	// slowSlow, the slow one: 10× longer. Not 2 ms and 20 ms: P2C sees
	// each call's time from the client, and on a busy 2-core machine
	// (other tests, -race builds) the scheduler adds 10 to 40 ms to some
	// calls. The peak EWMA takes such a sample at once and forgets it over
	// 10 s, so with fast servers at a few milliseconds the noise alone
	// made them look a third as slow as the slow one, which then won 1.5
	// to 2 % of the picks: enough to set P2C's p99 (seen at 5/50 ms: 1.6
	// %, p99 51 ms against round-robin's 53; at 10/100 ms, load average
	// 4: 1.9 %, 101 ms against 108). At 20/200 ms the same noise is small
	// against the service times.
	slowFast = 20 * time.Millisecond
	slowSlow = 10 * slowFast
	// slowMaxShare is the share of the calls the slow server may get under
	// P2C (round-robin gives it 25 %, which rrTol checks).
	slowMaxShare = 0.10
	// slowP99Factor is how many times lower P2C's p99 must be than
	// round-robin's.
	slowP99Factor = 3
	// slowBound is the row's headline: P2C's p99 at most a third of
	// round-robin's, which is at least slowSlow (a quarter of its calls
	// take that long). At run time the bound is a third of the p99
	// measured for round-robin.
	slowBound = slowSlow / slowP99Factor
	// slowWindow is how long both clients run their load.
	slowWindow = 10 * time.Second
	// rrTol is how far from 25 % round-robin's share of the slow server
	// may be: it takes the servers in turn, so only the few calls that
	// ended with it not ready could shift it.
	rrTol = 0.03
)

// slowLoad is each client's steady load: 4 workers, one call every 40 ms
// each (up to 100 calls/s), every call an echo. Few calls in flight: P2C
// weighs a server's latency by its calls in flight + 1, so deeper queues
// on the fast servers would rightly send the slow one more calls.
var slowLoad = agentReq{Op: "load_start", Method: "echo", Body: "hello", Timeout: 5 * time.Second, Workers: 4, Pace: 40 * time.Millisecond}

// slowInstance runs two clients on the client host at the same time, one
// with the default balancer (P2C) and one round-robin, under the same
// steady load: they see the same servers and the same machine at the same
// moments, so the noise of a shared machine weighs on both alike (one after
// the other, a busy spell could fall on either and decide the ratio).
func slowInstance(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(slowBound), BaselineMS: -1,
		Bound:  fmt.Sprintf("slow < %.0f %%; p99 %d× lower", 100*slowMaxShare, slowP99Factor),
		Metric: fmt.Sprintf("p99 of the P2C client's calls (bound: a third of the round-robin client's p99), over %s of steady load on both at once", fmtDur(slowWindow))}
	f, err := env.newFleet(4, false)
	if err != nil {
		return r, err
	}
	for i, h := range f.servers {
		d := slowFast
		if i == len(f.servers)-1 {
			d = slowSlow
		}
		if _, _, err := env.startInProcServerWith(h.host, h.addr(), delayed(d), nil); err != nil {
			return r, err
		}
	}
	slow := f.servers[len(f.servers)-1].addr().String()
	ag, err := env.startAgent(f.client)
	if err != nil {
		return r, err
	}
	policies := []balancer.Policy{balancer.P2C, balancer.RoundRobin}
	before := map[balancer.Policy][]endpointState{}
	for _, p := range policies {
		if _, err := ag.newClientSpec(ctx, string(p), clientSpec{Addrs: f.addrs(), Policy: p}); err != nil {
			return r, err
		}
		if before[p], err = waitReady(ctx, ag, string(p), f.addrs()); err != nil {
			return r, err
		}
	}
	env.logf("%s of steady load on a P2C and a round-robin client at once; %s answers in %s, the others in %s", fmtDur(slowWindow), slow, fmtDur(slowSlow), fmtDur(slowFast))
	for _, p := range policies {
		req := slowLoad
		req.Client = string(p)
		if _, err := ag.do(ctx, req); err != nil {
			return r, err
		}
	}
	// The P2C client's servers after its first second too: the slow
	// server's first answer is due 200 ms into the load.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	early, _, err := ag.endpoints(ctx, string(balancer.P2C))
	if err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, slowWindow-time.Second); err != nil {
		return r, err
	}
	loads := map[balancer.Policy]*loadSummary{}
	after := map[balancer.Policy][]endpointState{}
	for _, p := range policies {
		resp, err := ag.do(ctx, agentReq{Op: "load_stop", Client: string(p)})
		if err != nil {
			return r, err
		}
		loads[p] = resp.Load
		if after[p], _, err = ag.endpoints(ctx, string(p)); err != nil {
			return r, err
		}
	}
	r = judgeSlow(r, slow, loads, before, after)
	r.Detail += "\n" + slowEarlyText(slow, before[balancer.P2C], early, after[balancer.P2C])
	return r, nil
}

// waitReady waits until the client has a ready connection to each of
// addrs, and returns its servers then.
func waitReady(ctx context.Context, ag *agent, name string, addrs []string) ([]endpointState, error) {
	_, eps, err := waitEndpoints(ctx, ag, name, 10*time.Second, func(eps []endpointState) bool {
		if !sameAddrs(eps, addrs) {
			return false
		}
		for _, e := range eps {
			if e.State != "ready" {
				return false
			}
		}
		return true
	})
	return eps, err
}

// judgeSlow fills in the slow-instance row.
func judgeSlow(r Result, slow string, loads map[balancer.Policy]*loadSummary, before, after map[balancer.Policy][]endpointState) Result {
	p2c, rr := loads[balancer.P2C], loads[balancer.RoundRobin]
	share := map[balancer.Policy]float64{}
	var detail []string
	pass := true
	for _, p := range []balancer.Policy{balancer.P2C, balancer.RoundRobin} {
		l := loads[p]
		shares, n := callShares(before[p], after[p])
		share[p] = shares[slow]
		detail = append(detail, fmt.Sprintf("%s client: %d calls, %d ok, errors: %s, %d hung; p50 %s, p99 %s; the slow server got %.1f %% of %d calls (%s); latency (peak EWMA) at the end: %s",
			p, l.Calls, l.OK, l.errorText(), l.Hung, fmtMS(l.P50MS), fmtMS(l.P99MS), 100*shares[slow], n, sharesText(shares), latencyText(after[p])))
		if l.failed() > 0 || l.Hung > 0 || l.OK == 0 {
			pass = false
			detail = append(detail, fmt.Sprintf("%s client: every call must succeed: the servers are slow, not broken", p))
		}
	}
	if share[balancer.P2C] >= slowMaxShare {
		pass = false
		detail = append(detail, fmt.Sprintf("P2C sent %.1f %% of its calls to the slow server: want < %.0f %%", 100*share[balancer.P2C], 100*slowMaxShare))
	}
	if d := share[balancer.RoundRobin] - 0.25; d < -rrTol || d > rrTol {
		pass = false
		detail = append(detail, fmt.Sprintf("round-robin sent %.1f %% of its calls to the slow server: want 25 %% ± %.0f points (each server in turn)", 100*share[balancer.RoundRobin], 100*rrTol))
	}
	ratio := 0.0
	if p2c.P99MS > 0 {
		ratio = rr.P99MS / p2c.P99MS
	}
	r.MeasuredMS = p2c.P99MS
	r.BoundMS = rr.P99MS / slowP99Factor
	r.Measured = fmt.Sprintf("slow %.1f %% (rr %.1f %%); p99 %s vs %s (%.1f×)",
		100*share[balancer.P2C], 100*share[balancer.RoundRobin], fmtMS(p2c.P99MS), fmtMS(rr.P99MS), ratio)
	if ratio < slowP99Factor {
		pass = false
		detail = append(detail, fmt.Sprintf("P2C's p99 (%s) is only %.1f× lower than round-robin's (%s): want ≥ %d×", fmtMS(p2c.P99MS), ratio, fmtMS(rr.P99MS), slowP99Factor))
	} else {
		detail = append(detail, fmt.Sprintf("P2C's p99 is %.1f× lower than round-robin's (%s against %s; want ≥ %d×)", ratio, fmtMS(p2c.P99MS), fmtMS(rr.P99MS), slowP99Factor))
	}
	if share[balancer.P2C] >= 0.01 {
		detail = append(detail, fmt.Sprintf("P2C sent %.1f %% of its calls to the slow server: above 1 %% they set its p99. The fast servers' latency estimates (peak EWMA: a slow sample stays ~10 s) reached %s against a p50 of %s: the machine delayed calls to them (load average %s)",
			100*share[balancer.P2C], fmtDur(maxLatency(after[balancer.P2C], slow)), fmtMS(p2c.P50MS), loadAverage()))
	}
	detail = append(detail, fmt.Sprintf("both clients ran at the same time on the client host, %d workers each making an echo every %s, for %s: the same servers and the same machine noise for both (load average %s at the end)",
		slowLoad.Workers, fmtDur(slowLoad.Pace), fmtDur(slowWindow), loadAverage()))
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r
}

// slowEarlyText says how many of the slow server's P2C calls came in the
// load's first second: until its first answer its latency is unknown, and
// a draw that includes it picks it while it holds no call.
func slowEarlyText(slow string, before, early, after []endpointState) string {
	b, _ := endpointOf(before, slow)
	e, _ := endpointOf(early, slow)
	a, _ := endpointOf(after, slow)
	return fmt.Sprintf("P2C's calls to the slow server: %d in the first second (before its first answer, %s in, its latency is unknown: it is tried while it holds no call), %d in the %s after",
		e.calls()-b.calls(), fmtDur(slowSlow), a.calls()-e.calls(), fmtDur(slowWindow-time.Second))
}

// latencyText lists each server's latency, by address.
func latencyText(eps []endpointState) string {
	parts := make([]string, len(eps))
	for i, e := range eps {
		parts[i] = fmt.Sprintf("%s %s", e.Addr, fmtDur(e.Latency))
	}
	return strings.Join(parts, ", ")
}

// maxLatency is the largest latency estimate of the servers but skip.
func maxLatency(eps []endpointState, skip string) time.Duration {
	var m time.Duration
	for _, e := range eps {
		if e.Addr != skip {
			m = max(m, e.Latency)
		}
	}
	return m
}

// loadAverage is the machine's load average over 1, 5 and 15 minutes.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// ---------------------------------------------------------------------------
// black-holed

const (
	// bhDialTimeout is the client's connect timeout in this row, shortened
	// from the default 3 s: after the dead connection, four connects that
	// time out make the five transport failures in a row that eject the
	// server, in ~5 s rather than ~14 s.
	bhDialTimeout = time.Second
	// bhBack bounds the time from the restore until the server carries
	// its share again: the ejection (30 s ± 10 %), the warm-up (10 s) and
	// the share's window fit with some 15 s to spare.
	bhBack = time.Minute
	// bhWindow is the window the restored server's share is measured over,
	// and bhShareTol how far from 25 % it may be.
	bhWindow   = 3 * time.Second
	bhShareTol = 0.06
	// pollSlack is what polling the client's state (every 20 ms, through
	// the agent) may add to a time it measures, on a busy machine.
	pollSlack = 250 * time.Millisecond
)

// bhLoad is steady load with calls that hold a server 20 ms, so that some
// are in flight on the server whose link is cut: 8 workers, one call every
// 20 ms each.
var bhLoad = agentReq{Op: "load_start", Client: "c", Method: "sleep", Body: "20ms", Timeout: 5 * time.Second, Workers: 8, Pace: 20 * time.Millisecond}

// bhEjectBound bounds the time from the client's detection of the dead
// connection (the first transport failure) to the ejection: four more
// failures, each a connect that times out after a backoff delay.
func bhEjectBound() time.Duration {
	d := 4*bhDialTimeout*11/10 + pollSlack
	for n := range 4 {
		d += client.Backoff{}.Ceiling(n)
	}
	return d
}

// bhTimes are the moments of the black-holed row, on CLOCK_MONOTONIC.
type bhTimes struct {
	cut, down, eject, restore, reconnect, back, warm, shared int64
	cutTook                                                  time.Duration
}

// bhRun is what the row saw of the client.
type bhRun struct {
	victim             string
	preShare, share    float64
	preN, shareN       uint64
	atDown, atDrained  endpointState // the victim when seen failing, and once its calls had ended
	atEject            endpointState
	dialsA, dialsB     uint64 // the client's failed dials at atDrained and at the ejection
	succA, succB       uint64
	stats              client.Stats // at the ejection
	load               *loadSummary
	backErr, shareErr  error
	ejectErr, drainErr error
}

func blackHoled(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(detectBound), BaselineMS: -1,
		Bound:  fmt.Sprintf("fail ≤ %s; back ≤ %s", fmtDur(detectBound), fmtDur(bhBack)),
		Metric: "time from the cut to the end of the last failed call (calls in flight on the cut server), or to the client's detection when none was in flight"}
	f, err := env.newFleet(4, false)
	if err != nil {
		return r, err
	}
	for _, h := range f.servers {
		if _, _, err := env.startInProcServer(h.host, h.addr(), nil); err != nil {
			return r, err
		}
	}
	ag, err := env.startAgent(f.client)
	if err != nil {
		return r, err
	}
	if _, err := ag.newClientSpec(ctx, "c", clientSpec{Addrs: f.addrs(), DialTimeout: bhDialTimeout}); err != nil {
		return r, err
	}
	ready, err := waitReady(ctx, ag, "c", f.addrs())
	if err != nil {
		return r, err
	}
	if _, err := ag.do(ctx, bhLoad); err != nil {
		return r, err
	}
	victim := f.servers[1]
	run := &bhRun{victim: victim.addr().String()}
	var t bhTimes
	// A paced window of steady load: the share the victim carries
	// before the cut.
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return r, err
	}
	pre, _, err := ag.endpoints(ctx, "c")
	if err != nil {
		return r, err
	}
	shares, n := callShares(ready, pre)
	run.preShare, run.preN = shares[run.victim], n

	env.logf("cutting the link to %s under load", run.victim)
	t.cut = mono()
	if err := victim.link.Cut(); err != nil {
		return r, err
	}
	t.cutTook = since(t.cut, mono())
	if err := bhDown(ctx, ag, run, &t); err != nil {
		return r, err
	}
	env.logf("restoring the link to %s", run.victim)
	t.restore = mono()
	if err := victim.link.Restore(); err != nil {
		return r, err
	}
	if err := bhBackAgain(ctx, ag, run, &t); err != nil {
		return r, err
	}
	resp, err := ag.do(ctx, agentReq{Op: "load_stop", Client: "c"})
	if err != nil {
		return r, err
	}
	run.load = resp.Load
	return judgeBlackHoled(r, run, t), nil
}

// bhDown follows the cut server from the cut to its ejection. Failing to
// see the drain or the ejection is a finding (the row fails); without the
// detection itself (within detectBound + 3 s) nothing after it can be
// measured, and the row is an error.
func bhDown(ctx context.Context, ag *agent, run *bhRun, t *bhTimes) error {
	victim := func(eps []endpointState) endpointState { e, _ := endpointOf(eps, run.victim); return e }
	at, eps, err := waitEndpoints(ctx, ag, "c", detectBound+3*time.Second, func(eps []endpointState) bool {
		return victim(eps).State != "ready"
	})
	if err != nil {
		return err // without a detection the rest cannot be measured
	}
	t.down, run.atDown = at, victim(eps)
	// Until every call on it has ended: its counts are final then.
	_, eps, run.drainErr = waitEndpoints(ctx, ag, "c", 2*time.Second, func(eps []endpointState) bool {
		return victim(eps).InFlight == 0
	})
	run.atDrained = victim(eps)
	st, err := ag.stats(ctx, "c")
	if err != nil {
		return err
	}
	run.dialsA, run.succA = st.DialFailures, run.atDrained.Successes
	at, eps, run.ejectErr = waitEndpoints(ctx, ag, "c", bhEjectBound()+detectBound, func(eps []endpointState) bool {
		return victim(eps).Ejected
	})
	if run.ejectErr != nil {
		return nil
	}
	t.eject, run.atEject = at, victim(eps)
	if run.stats, err = ag.stats(ctx, "c"); err != nil {
		return err
	}
	run.dialsB, run.succB = run.stats.DialFailures, run.atEject.Successes
	return nil
}

// bhBackAgain follows the restored server: reconnected (still ejected),
// back from ejection, warmed up, then its share over a window.
func bhBackAgain(ctx context.Context, ag *agent, run *bhRun, t *bhTimes) error {
	if run.ejectErr != nil {
		return nil
	}
	left := func() time.Duration { return bhBack - since(t.restore, mono()) }
	victim := func(eps []endpointState) endpointState { e, _ := endpointOf(eps, run.victim); return e }
	at, _, err := waitEndpoints(ctx, ag, "c", left(), func(eps []endpointState) bool {
		return victim(eps).State == "ready"
	})
	if run.backErr = err; err != nil {
		return nil
	}
	t.reconnect = at
	if t.back, _, run.backErr = waitEndpoints(ctx, ag, "c", left(), func(eps []endpointState) bool {
		return !victim(eps).Ejected
	}); run.backErr != nil {
		return nil
	}
	at, start, err := waitEndpoints(ctx, ag, "c", left(), func(eps []endpointState) bool {
		e := victim(eps)
		return e.State == "ready" && !e.Ejected && e.WarmUp >= 1
	})
	if run.backErr = err; err != nil {
		return nil
	}
	t.warm = at
	if err := sleepCtx(ctx, bhWindow); err != nil {
		return err
	}
	end, at, err := ag.endpoints(ctx, "c")
	if err != nil {
		return err
	}
	t.shared = at
	shares, n := callShares(start, end)
	run.share, run.shareN = shares[run.victim], n
	return nil
}

// judgeBlackHoled fills in the black-holed row.
func judgeBlackHoled(r Result, run *bhRun, t bhTimes) Result {
	var detail []string
	pass := true
	fail := func(format string, args ...any) {
		pass = false
		detail = append(detail, fmt.Sprintf(format, args...))
	}
	l := run.load
	detail = append(detail, fmt.Sprintf("before the cut the victim %s carried %.1f %% of %d calls over 2 s; the cut took %s to apply",
		run.victim, 100*run.preShare, run.preN, fmtDur(t.cutTook)))

	// In flight on it: failed, within the bound.
	dead := t.down
	var last int64
	inFlight, during, late, after, untyped := 0, 0, 0, 0, 0
	for _, c := range l.Fails {
		if c.End >= t.cut {
			dead = min(dead, c.End) // the connection's end fails its calls at once
		}
	}
	var starts []string // of the failed calls, from the cut
	for _, c := range l.Fails {
		last = max(last, c.End)
		if len(starts) < 10 {
			starts = append(starts, fmtDur(since(t.cut, c.Start)))
		}
		switch {
		case c.Start < t.cut:
			inFlight++
		case c.Start < dead:
			during++
		default:
			after++
		}
		if since(t.cut, c.End) > detectBound || c.End < t.cut {
			late++
		}
		if c.Kind != "peer_dead" && c.Kind != "conn_closed" {
			untyped++
		}
	}
	worst := since(t.cut, dead)
	if last != 0 {
		worst = max(worst, since(t.cut, last))
	}
	r.MeasuredMS = ms(worst)
	detail = append(detail, fmt.Sprintf("the client saw the connection end %s after the cut (%s); %d calls failed: %d in flight at the cut, %d sent to it before the client knew; the last failed %s",
		fmtDur(since(t.cut, t.down)), endpointsText([]endpointState{run.atDown}), len(l.Fails), inFlight, during, within(worst, detectBound)))
	if len(starts) > 0 {
		detail = append(detail, fmt.Sprintf("the failed calls started at %s from the cut", strings.Join(starts, ", ")))
	}
	if len(l.Fails) >= maxFails {
		fail("more than %d calls failed: the summary keeps only the first", maxFails)
	}
	if late > 0 {
		fail("%d failed calls ended outside %s of the cut", late, fmtDur(detectBound))
	}
	if untyped > 0 {
		fail("%d failed calls ended otherwise than with ErrPeerDead or ErrConnClosed: %s", untyped, l.errorText())
	}
	if since(t.cut, t.down) > detectBound {
		fail("the client declared the peer dead %s", within(since(t.cut, t.down), detectBound))
	}
	// New calls avoid it at once.
	if after > 0 {
		fail("%d calls started after the client declared the peer dead (%s after the cut) FAILED", after, fmtDur(since(t.cut, dead)))
	} else {
		detail = append(detail, fmt.Sprintf("no call started after the client declared the peer dead (%s after the cut) failed", fmtDur(since(t.cut, dead))))
	}
	if l.Hung > 0 || l.Calls == 0 {
		fail("%d of %d calls hung", l.Hung, l.Calls)
	}
	pass = judgeEjection(run, t, &detail) && pass
	pass = judgeReturn(run, t, &detail) && pass
	r.Measured = fmt.Sprintf("fail ≤ %s; back in %s", fmtDur(worst), fmtDur(since(t.restore, t.shared)))
	if t.shared == 0 {
		r.Measured = fmt.Sprintf("fail ≤ %s; not back", fmtDur(worst))
	}
	detail = append(detail, fmt.Sprintf("load: %d calls, %d ok, errors: %s; %d workers, a %s sleep every %s each; client DialTimeout %s (default %s)",
		l.Calls, l.OK, l.errorText(), bhLoad.Workers, bhLoad.Body, fmtDur(bhLoad.Pace), fmtDur(bhDialTimeout), fmtDur(client.DefaultDialTimeout)))
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r
}

// judgeEjection judges the cut server's ejection and that no call went to
// it once it was known dead.
func judgeEjection(run *bhRun, t bhTimes, detail *[]string) bool {
	if run.drainErr != nil {
		*detail = append(*detail, fmt.Sprintf("calls stayed in flight on the dead server: %v", run.drainErr))
		return false
	}
	if run.ejectErr != nil {
		*detail = append(*detail, fmt.Sprintf("the server was NOT ejected within %s of the detection: %v", fmtDur(bhEjectBound()+detectBound), run.ejectErr))
		return false
	}
	pass := true
	d := since(t.down, t.eject)
	line := fmt.Sprintf("ejected %s after the detection (%d ejection, Stats.Ejections %d, %d dials failed meanwhile)",
		within(d, bhEjectBound()), run.atEject.Ejections, run.stats.Ejections, run.dialsB-run.dialsA)
	if d > bhEjectBound() || run.stats.Ejections < 1 {
		pass = false
		line += ": want Stats.Ejections ≥ 1 within the bound: the dead connection and four connects that time out, with their backoff delays"
	}
	*detail = append(*detail, line)
	// Its count stops growing: from the end of its last call to the
	// ejection, no answer, and no failure beyond the client's failed
	// connects (all of them when the other servers are healthy, as here;
	// the client does not count failed connects per server).
	newCalls := max(int64(run.atEject.Failures-run.atDrained.Failures)-int64(run.dialsB-run.dialsA), 0) + int64(run.succB-run.succA)
	if newCalls != 0 {
		pass = false
		*detail = append(*detail, fmt.Sprintf("its call count GREW by %d after it was declared dead (failures %d → %d, failed dials +%d, successes %d → %d)",
			newCalls, run.atDrained.Failures, run.atEject.Failures, run.dialsB-run.dialsA, run.succA, run.succB))
	} else {
		*detail = append(*detail, fmt.Sprintf("its call count stopped growing once it was declared dead: %d ok, %d failed; only its %d failed connects were added until the ejection",
			run.atEject.Successes, run.atDrained.Failures, run.dialsB-run.dialsA))
	}
	return pass
}

// judgeReturn judges the restored server's return: the ejection's length,
// the warm-up, and its share.
func judgeReturn(run *bhRun, t bhTimes, detail *[]string) bool {
	if run.ejectErr != nil {
		return false
	}
	if run.backErr != nil {
		*detail = append(*detail, fmt.Sprintf("restored, it did NOT come back within %s: %v", fmtDur(bhBack), run.backErr))
		return false
	}
	pass := true
	base := balancer.DefaultEjectionBaseTime
	lo, hi := base*9/10-pollSlack, base*11/10+pollSlack
	ej := since(t.eject, t.back)
	line := fmt.Sprintf("restored %s after the ejection; reconnected %s after the restore, still ejected; back from ejection %s after it (want %s ± 10 %%); warm %s later",
		fmtDur(since(t.eject, t.restore)), fmtDur(since(t.restore, t.reconnect)), fmtDur(ej), fmtDur(base), fmtDur(since(t.back, t.warm)))
	if ej < lo || ej > hi {
		pass = false
		line += fmt.Sprintf(": the ejection lasted OUTSIDE %s to %s", fmtDur(lo), fmtDur(hi))
	}
	if w := since(t.back, t.warm); w > balancer.DefaultWarmUp+pollSlack {
		pass = false
		line += fmt.Sprintf(": the warm-up took longer than %s", fmtDur(balancer.DefaultWarmUp))
	}
	*detail = append(*detail, line)
	back := since(t.restore, t.shared)
	line = fmt.Sprintf("then it carried %.1f %% of %d calls over %s (want 25 %% ± %.0f points), %s after the restore",
		100*run.share, run.shareN, fmtDur(bhWindow), 100*bhShareTol, within(back, bhBack))
	if d := run.share - 0.25; d < -bhShareTol || d > bhShareTol || back > bhBack {
		pass = false
		line += ": NOT its share within the bound"
	}
	*detail = append(*detail, line)
	return pass
}
