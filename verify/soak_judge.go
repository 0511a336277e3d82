package verify

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The soak's verdict: its rows, from the server's readings in the two
// fault-free windows, the agents' counters and the faults.

// windowStats summarises the server's readings in a window: medians of
// each reading, and its CPU over the window.
type windowStats struct {
	Samples    int
	FDs        int
	Goroutines int
	// Fixed is the goroutines less the requests in flight (each has its
	// handler's goroutine): what the connections and the server hold.
	Fixed     int
	Threads   int
	RSS       int64
	HeapGoal  int64
	Conns     int64
	SockInuse int
	Orphans   int
	TimeWait  int
	// Cores is the server's CPU seconds per second over the window;
	// Waited, the seconds per second its threads waited for a CPU.
	Cores  float64
	Waited float64
	// MinRSS, MaxRSS, MinFDs, MaxFDs, MinGor and MaxGor are the extremes.
	MinRSS, MaxRSS int64
	MinFDs, MaxFDs int
	MinGor, MaxGor int
}

func median[T int | int64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// statsIn summarises the readings taken in w (those that read
// everything).
func statsIn(samples []serverSample, w window) windowStats {
	var fds, gor, fixed, thr, sin, orph, tw []int
	var rss, goal, conns []int64
	var first, last *serverSample
	for i := range samples {
		s := &samples[i]
		if s.Err != "" || !w.contains(s.At) || w.from == 0 {
			continue
		}
		if first == nil {
			first = s
		}
		last = s
		fds = append(fds, s.FDs)
		gor = append(gor, s.Goroutines)
		fixed = append(fixed, s.Goroutines-int(s.InFlight))
		thr = append(thr, s.Threads)
		rss = append(rss, s.RSS)
		goal = append(goal, s.HeapGoal)
		conns = append(conns, s.Conns)
		sin = append(sin, s.SockInuse)
		orph = append(orph, s.Orphans)
		tw = append(tw, s.TimeWait)
	}
	ws := windowStats{Samples: len(fds)}
	if ws.Samples == 0 {
		return ws
	}
	ws.FDs, ws.Goroutines, ws.Fixed, ws.Threads = median(fds), median(gor), median(fixed), median(thr)
	ws.RSS, ws.HeapGoal, ws.Conns = median(rss), median(goal), median(conns)
	ws.SockInuse, ws.Orphans, ws.TimeWait = median(sin), median(orph), median(tw)
	ws.MinRSS, ws.MaxRSS = slices.Min(rss), slices.Max(rss)
	ws.MinFDs, ws.MaxFDs = slices.Min(fds), slices.Max(fds)
	ws.MinGor, ws.MaxGor = slices.Min(gor), slices.Max(gor)
	if d := since(first.At, last.At); d > 0 {
		ws.Cores = (last.CPU - first.CPU) / d.Seconds()
		ws.Waited = (last.Waited - first.Waited) / d.Seconds()
	}
	return ws
}

func (ws windowStats) text(conns int) string {
	return fmt.Sprintf("%d readings: %d connections, %d descriptors (%d–%d), %d goroutines (%d–%d), %d threads, RSS %s (%s–%s), heap goal %s, CPU %.3f cores (%.1f µs per connection per second), its threads waiting for a CPU %.3f s per second; its namespace's TCP sockets: %d in use, %d orphaned, %d in TIME_WAIT",
		ws.Samples, ws.Conns, ws.FDs, ws.MinFDs, ws.MaxFDs, ws.Goroutines, ws.MinGor, ws.MaxGor, ws.Threads,
		mib(ws.RSS), mib(ws.MinRSS), mib(ws.MaxRSS), mib(ws.HeapGoal), ws.Cores, ws.Cores*1e6/float64(max(conns, 1)), ws.Waited,
		ws.SockInuse, ws.Orphans, ws.TimeWait)
}

// windowText is the server's state in w, for the progress output.
func (k *soak) windowText(w window) string {
	return statsIn(k.samples, w).text(k.opts.Conns)
}

// Tolerances of the flat check, between the medians of the first and the
// last window.
//
// Descriptors: in a fault-free window the server holds its connections
// and a fixed few (listeners, event loops, the admin plane's own HTTP
// connection); between two such windows only a connection caught closing
// or the admin plane's next HTTP connection can differ. A leak of one
// descriptor per thousand connections the faults cycled would exceed the
// tolerance.
func fdTolerance(conns int) int { return max(8, conns/1000) }

// Goroutines, less the requests in flight: the same fixed few and a
// goroutine per connection on netconn.
func goroutineTolerance(conns int) int { return max(20, conns/1000) }

// RSS: Go's heap goal is twice the heap live after the last collection and
// freed pages stay resident until the scavenger returns them (it keeps
// about 10 % above the goal), so two readings of a process holding the
// same data differ by several percent; 4 MiB at least, one collection
// cycle's garbage in a small run.
func rssTolerance(first int64) int64 { return max(first/10, 4<<20) }

// judge makes the rows.
func (k *soak) judge(runErr error, problems []string) []Result {
	n := k.opts.Conns
	f := statsIn(k.samples, k.first)
	l := statsIn(k.samples, k.last)
	cycled := k.cycled()
	row := func(name, bound string) Result {
		return Result{Scenario: name, Bound: bound, BaselineMS: -1}
	}
	noWindows := ""
	switch {
	case f.Samples == 0 && l.Samples == 0:
		noWindows = "neither window was measured"
	case f.Samples == 0:
		noWindows = "the first window was not measured"
	case l.Samples == 0:
		noWindows = "the last window was not measured"
	}
	if noWindows != "" && runErr != nil {
		noWindows += ": " + runErr.Error()
	}
	var rows []Result

	// Descriptors.
	tol := fdTolerance(n)
	r := row("soak-fds", fmt.Sprintf("last = first ± %d", tol))
	r.Metric = "the server's open descriptors, median of the readings in the first minute after the ramp and in the last minute (both without faults)"
	r.MeasuredMS = float64(l.FDs - f.FDs)
	r.Measured = fmt.Sprintf("%d → %d", f.FDs, l.FDs)
	r.Pass = noWindows == "" && abs(l.FDs-f.FDs) <= tol
	r.Detail = strings.Join([]string{
		fmt.Sprintf("tolerance %d descriptors: between two fault-free windows only a connection caught closing or the admin plane's own HTTP connection can differ; the faults cycled %d connections, so a leak of one descriptor per %d of them would exceed it", tol, cycled, max(cycled/max(tol, 1), 1)),
		fmt.Sprintf("connections: %d → %d (want %d)", f.Conns, l.Conns, n),
	}, "\n")
	rows = append(rows, r)

	// Goroutines.
	tol = goroutineTolerance(n)
	r = row("soak-goroutines", fmt.Sprintf("last = first ± %d", tol))
	r.Metric = "the server's goroutines (its admin plane's go_goroutines) less its requests in flight (each has a handler's goroutine), medians of the two windows"
	r.MeasuredMS = float64(l.Fixed - f.Fixed)
	r.Measured = fmt.Sprintf("%d → %d", f.Fixed, l.Fixed)
	r.Pass = noWindows == "" && abs(l.Fixed-f.Fixed) <= tol
	r.Detail = fmt.Sprintf("tolerance %d goroutines: the admin plane's and the runtime's come and go; a leak of one goroutine per %d connections cycled would exceed it\ngoroutines with the handlers of the requests in flight: %d → %d; threads: %d → %d",
		tol, max(cycled/max(tol, 1), 1), f.Goroutines, l.Goroutines, f.Threads, l.Threads)
	rows = append(rows, r)

	// RSS (the heap goal in a -race build).
	rows = append(rows, k.memoryRow(f, l, cycled, noWindows))
	if noWindows != "" {
		for i := range rows {
			rows[i].Error = noWindows
		}
	}

	rows = append(rows, k.callsRow(problems), k.untouchedRow(), k.faultsRow(runErr, f, l))
	return rows
}

// memoryRow judges the server's RSS between the windows; in a -race build,
// whose RSS holds the race detector's ever-growing shadow memory, its heap
// goal.
func (k *soak) memoryRow(f, l windowStats, cycled int, noWindows string) Result {
	n := k.opts.Conns
	first, last, what := f.RSS, l.RSS, "VmRSS"
	if raceBuild {
		first, last, what = f.HeapGoal, l.HeapGoal, "heap goal (go_memstats_next_gc_bytes: twice the heap live after the last collection)"
	}
	tol := rssTolerance(first)
	r := Result{Scenario: "soak-rss", BaselineMS: -1, Bound: fmt.Sprintf("last <= first + %s", mib(tol))}
	r.Metric = "the server's " + what + ", medians of the two windows"
	r.MeasuredMS = float64(last-first) / (1 << 20)
	r.Measured = fmt.Sprintf("%s → %s", mib(first), mib(last))
	if first > 0 {
		r.Measured += fmt.Sprintf(" (%+.1f %%)", 100*float64(last-first)/float64(first))
	}
	r.Pass = noWindows == "" && last-first <= tol
	perConn := func(b int64) float64 { return float64(b) / 1024 / float64(max(n, 1)) }
	var detail []string
	if raceBuild {
		detail = append(detail, fmt.Sprintf("a -race build: its RSS (%s → %s) holds the race detector's shadow memory and history, which grow with what it has seen and are never returned; the heap goal is judged instead", mib(f.RSS), mib(l.RSS)))
	}
	detail = append(detail,
		fmt.Sprintf("tolerance %s (10 %% of the first window, 4 MiB at least): the heap goal is twice the live heap at the last collection and freed pages stay resident until the scavenger returns them; a leak of %.0f bytes per connection cycled (%d) would exceed it",
			mib(tol), float64(tol)/float64(max(cycled, 1)), cycled),
		fmt.Sprintf("RSS per connection: %.2f KiB in the first window, %.2f KiB in the last (the whole process, divided by %d)", perConn(f.RSS), perConn(l.RSS), n),
		fmt.Sprintf("heap goal: %s → %s", mib(f.HeapGoal), mib(l.HeapGoal)),
		"first window: "+f.text(n),
		"last window: "+l.text(n),
	)
	r.Detail = strings.Join(detail, "\n")
	return r
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// cycled is the connections the server accepted after the ramp: those the
// faults made the clients open again.
func (k *soak) cycled() int {
	var a, b uint64
	for _, s := range k.samples {
		if s.Err != "" {
			continue
		}
		if s.At <= k.ready || a == 0 {
			a = s.Accepted
		}
		b = s.Accepted
	}
	return int(b - min(a, b))
}

// lateText describes a late call of a client of h: when it ran, how late
// it ended, how, and the fault of its host it overlapped, if any.
func (k *soak) lateText(h *soakHost, c failedCall) string {
	how := c.Kind
	if how == "" {
		how = "ok"
	}
	where := "outside its host's faults"
	if w := h.windowOver(c.Start, c.End); w != nil {
		where = fmt.Sprintf("during fault %d (%s)", w.fault.N, w.fault.Kind)
	}
	return fmt.Sprintf("%s: %s to %s, %s after its deadline, %s, %s", h.name, k.rel(c.Start), k.rel(c.End),
		fmtDur((time.Duration(c.End-c.Start) - k.opts.callTimeout()).Round(time.Millisecond)), how, where)
}

// callsRow: every call ended, typed, within its deadline.
func (k *soak) callsRow(problems []string) Result {
	r := Result{Scenario: "soak-calls", BaselineMS: -1, Bound: "0 hung, 0 late, 0 untyped",
		Metric: "every call the clients started: ended with a success or a typed error within its deadline (+250 ms); calls ended by a killed agent are counted apart"}
	var started, ok, failed, hung, killed, late, lateStalled, untyped, skipped int64
	var stalls int
	var stallMax float64
	errs := map[string]int64{}
	var untypedText, lateText []string
	var maxMS float64
	for _, h := range k.hosts {
		for _, a := range h.agents {
			st := a.st
			if a.final != nil {
				st = *a.final
			}
			started += st.Started
			ok += st.OK
			failed += st.Failed
			skipped += st.Skipped
			maxMS = max(maxMS, st.MaxMS)
			for kind, c := range st.Errors {
				errs[kind] += c
			}
			untyped += st.Errors["untyped"]
			untypedText = append(untypedText, st.Untyped...)
			switch {
			case a.killed:
				killed += st.Started - st.OK - st.Failed
			case a.final != nil:
				hung += int64(st.InFlight)
			default:
				// No final report: what it had in flight is unknown.
				hung += int64(st.InFlight)
			}
			late += st.Late
			lateStalled += st.LateStalled
			for _, c := range st.LateCalls {
				if len(lateText) < 5 {
					lateText = append(lateText, k.lateText(h, c))
				}
			}
			stalls += st.Stalls
			stallMax = max(stallMax, st.StallMaxMS)
		}
	}
	r.MeasuredMS = maxMS
	r.Measured = fmt.Sprintf("%d started: %d ok, %d failed; %d hung, %d late", started, ok, failed, hung, late)
	detail := []string{
		fmt.Sprintf("started %d = ok %d + failed %d + in flight at the end %d + in flight in killed agents %d", started, ok, failed, hung, killed),
		fmt.Sprintf("failed by kind: %s", orNone(kindsText(errs))),
		fmt.Sprintf("late (ended more than %s after the deadline): %d; %d more were late by no more than the time their own agent did not run (frozen, or not scheduled): not tcppro's lateness", lateGrace, late, lateStalled),
		fmt.Sprintf("the agents' watchdogs saw their process not run for %s or more %d times, the longest %s (freezes included)", fmtDur(soakStallMin), stalls, fmtMS(stallMax)),
		fmt.Sprintf("longest call: %s (deadline %s)", fmtMS(maxMS), fmtDur(k.opts.callTimeout())),
		fmt.Sprintf("successful calls in the first window: %d; in the last: %d", k.calls[1]-k.calls[0], k.calls[3]-k.calls[2]),
	}
	if skipped > 0 {
		detail = append(detail, fmt.Sprintf("%d calls not started: %d already in flight in their agent", skipped, soakMaxInFlight))
	}
	if len(untypedText) > 0 {
		detail = append(detail, fmt.Sprintf("untyped errors: %q", untypedText[:min(len(untypedText), 5)]))
	}
	if len(lateText) > 0 {
		detail = append(detail, "late calls (the first 5): "+strings.Join(lateText, "; "))
	}
	detail = append(detail, problems...)
	balanced := started == ok+failed+hung+killed
	r.Pass = started > 0 && balanced && hung == 0 && late == 0 && untyped == 0 && skipped == 0 &&
		k.calls[1] > k.calls[0] && k.calls[3] > k.calls[2] && len(problems) == 0
	if !balanced {
		detail = append(detail, "the counts do NOT add up")
	}
	r.Detail = strings.Join(detail, "\n")
	return r
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// untouchedRow: outside the faults' windows no client failed a call or
// lost its connection (the server dropped nobody it should have kept).
func (k *soak) untouchedRow() Result {
	r := Result{Scenario: "soak-untouched", BaselineMS: -1, Bound: "0 failed calls, 0 lost connections",
		Metric: "the calls failed and the connections lost (or dials failed) by clients outside any fault of their host, after the ramp, at the 1 s granularity of the agents' reports"}
	var failed, mFailed int64
	var lost, mLost uint64
	var ramp int64
	kinds := map[string]int64{}
	var detail []string
	for _, h := range k.hosts {
		var hf int64
		var hl uint64
		for _, a := range h.agents {
			hf += a.untouchedFailed
			hl += a.untouchedLost
			mFailed += a.machineFailed
			mLost += a.machineLost
			ramp += a.rampFailed
			for kind, n := range a.untouchedKinds {
				kinds[kind] += n
			}
		}
		failed += hf
		lost += hl
		detail = append(detail, fmt.Sprintf("%s (%d clients, %d faults): outside its faults %d failed calls, %d connections lost or dials failed", h.name, h.n, len(h.windows), hf, hl))
	}
	if len(kinds) > 0 {
		detail = append(detail, "failed by kind: "+kindsText(kinds))
	}
	if ramp > 0 {
		detail = append(detail, fmt.Sprintf("during the first ramp: %d failed calls (not judged)", ramp))
	}
	if mFailed > 0 || mLost > 0 {
		detail = append(detail, fmt.Sprintf("not judged: %d failed calls and %d connections lost or dials failed outside any fault, during stalls of the machine: a process of the soak (an agent, as its watchdog saw, or the monitor) not run for the heartbeat timeout (%v) less the interval or more, which its peers rightly take for dead (see soak-faults' timeline)",
			mFailed, mLost, k.opts.HeartbeatTimeout))
	}
	if k.watch != nil {
		if n, longest, _ := k.watch.counts(); n > 0 {
			detail = append(detail, fmt.Sprintf("the machine did not run the soak's monitor for %s or more %d times, the longest for %s", fmtDur(soakStallMin), n, fmtDur(longest.Round(time.Millisecond))))
		}
	}
	r.MeasuredMS = float64(failed)
	r.Measured = fmt.Sprintf("%d failed, %d lost", failed, lost)
	if mFailed > 0 || mLost > 0 {
		r.Measured += fmt.Sprintf(" (+%d, %d in machine stalls)", mFailed, mLost)
	}
	r.Pass = failed == 0 && lost == 0 && k.ready != 0
	r.Detail = strings.Join(detail, "\n")
	return r
}

// faultsRow: the faults, each applied, undone and recovered from; the
// timeline.
func (k *soak) faultsRow(runErr error, f, l windowStats) Result {
	limit := soakRecoveryLimit(k.opts.Conns)
	r := Result{Scenario: "soak-faults", BaselineMS: -1, Bound: "each recovered <= " + fmtDur(limit),
		Metric: "time from the end of each fault (link restored, agent resumed, new agent started) to every connection back, slowest"}
	count := map[string]int{}
	var slowest time.Duration
	pass := k.ready != 0 && k.rampErr == "" && k.finalErr == "" && len(k.faults) > 0
	for _, fl := range k.faults {
		count[fl.Kind]++
		switch {
		case fl.Err != "" || fl.Recovered == 0:
			pass = false
		default:
			slowest = max(slowest, since(fl.End, fl.Recovered))
		}
	}
	n := int64(k.opts.Conns)
	if f.Conns != n || l.Conns != n {
		pass = false
	}
	r.MeasuredMS = ms(slowest)
	r.Measured = fmt.Sprintf("%d faults (%d cuts, %d freezes, %d kills); slowest recovery %s",
		len(k.faults), count[faultCut], count[faultFreeze], count[faultKill], fmtDur(slowest))
	detail := []string{
		fmt.Sprintf("seed %d; %d connections over %d client hosts, server transport %s, heartbeats every %v (timeout %v), %.0f calls/s, call deadline %v",
			k.seed, k.opts.Conns, len(k.hosts), k.opts.Transport, hbInterval, k.opts.HeartbeatTimeout, k.opts.Rate, k.opts.callTimeout()),
	}
	if k.ready != 0 {
		detail = append(detail, fmt.Sprintf("ramp: every connection up %s after the start", fmtDur(since(k.start, k.ready))))
	}
	for _, e := range []string{k.rampErr, k.finalErr} {
		if e != "" {
			detail = append(detail, e)
		}
	}
	if len(k.faults) == 0 {
		detail = append(detail, "no fault was applied: the run is too short for one")
	}
	detail = append(detail, k.timelineText()...)
	if runErr != nil {
		r.Error = runErr.Error()
		pass = false
	}
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r
}
