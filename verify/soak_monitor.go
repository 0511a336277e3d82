package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// The soak's monitor: every soakTick the server is sampled and every live
// agent read; what the agents report is accounted to the faults
// (soak_faults.go).

// runUntil samples the server and reads the agents every soakTick until
// deadline, or until cond (if not nil) holds after a tick; it reports
// whether cond held. It fails if the server exits.
func (k *soak) runUntil(ctx context.Context, deadline time.Time, cond func() bool) (bool, error) {
	for {
		next := time.Now().Add(soakTick)
		if err := k.tick(ctx); err != nil {
			return false, err
		}
		if cond != nil && cond() {
			return true, nil
		}
		if !time.Now().Before(deadline) {
			return false, nil
		}
		if deadline.Before(next) {
			next = deadline
		}
		if err := sleepCtx(ctx, time.Until(next)); err != nil {
			return false, err
		}
	}
}

// tick samples the server and reads every live agent (at once, each
// bounded: a frozen agent answers nothing).
func (k *soak) tick(ctx context.Context) error {
	now := mono()
	if gap := since(k.lastTick, now); k.lastTick != 0 && gap > soakStall {
		// Late: the machine did not run the monitor (its watchdog says
		// for how long), or reading the server or an agent took long.
		k.note(fmt.Sprintf("the monitor ran %s after its previous reading, not %s (the monitor itself did not run for %s of it): %s",
			fmtDur(gap), fmtDur(soakTick), fmtDur(k.watch.stalledIn(k.lastTick, now).Round(time.Millisecond)), hostLoad()))
	}
	k.lastTick = now
	if k.srv.hasExited() {
		return fmt.Errorf("the server exited (%v)%s", k.srv.err, k.srv.stderr.suffix())
	}
	k.samples = append(k.samples, k.smp.sample(ctx))
	var live []*soakAgent
	var hosts []*soakHost
	for _, h := range k.hosts {
		if a := h.agent(); !a.killed && a.final == nil {
			live = append(live, a)
			hosts = append(hosts, h)
		}
	}
	sts := make([]*soakStatus, len(live))
	ats := make([]int64, len(live))
	var wg sync.WaitGroup
	for i, a := range live {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
			defer cancel()
			if r, err := a.ag.do(pctx, agentReq{Op: "soak_peek"}); err == nil {
				sts[i], ats[i] = r.Soak, r.Mono
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for i, st := range sts {
		if st != nil {
			k.account(hosts[i], live[i], st, ats[i])
		}
	}
	k.minuteLine()
	return nil
}

// soakStall is a gap between two ticks that says the machine did not run
// the monitor when it should have.
const soakStall = 2*soakTick + 500*time.Millisecond

// hostLoad describes the machine's CPU load: the load average and the
// share of time some task waited for a CPU (PSI).
func hostLoad() string {
	s := "host load average"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			s += " " + strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "some "); ok {
				s += ", CPU pressure (some task waiting) " + strings.TrimSpace(rest)
				break
			}
		}
	}
	return s
}

// allUp reports whether every client is connected, as the agents and the
// server see it.
func (k *soak) allUp() bool {
	if len(k.samples) == 0 || k.samples[len(k.samples)-1].Conns != int64(k.opts.Conns) {
		return false
	}
	for _, h := range k.hosts {
		if !k.hostUp(h) {
			return false
		}
	}
	return true
}

// upCheck is a condition for runUntil: every connection up at two ticks
// in a row (a report read at the moment a frozen agent resumes shows its
// clients as they were before the freeze, until their loops have run).
type upCheck struct {
	k     *soak
	n     int
	first int64 // mono: the first of the ticks in a row that saw every connection up
}

func (k *soak) upTwice() *upCheck { return &upCheck{k: k} }

func (u *upCheck) check() bool {
	if !u.k.allUp() {
		u.n = 0
		return false
	}
	if u.n == 0 {
		u.first = mono()
	}
	u.n++
	return u.n >= 2
}

// hostUp reports whether h's current agent has every client connected.
func (k *soak) hostUp(h *soakHost) bool {
	a := h.agent()
	return !a.killed && a.st.Clients == h.n && a.st.Ready == h.n && a.st.Warm == h.n
}

func (k *soak) upText() string {
	s := "server: "
	if len(k.samples) > 0 {
		s += fmt.Sprintf("%d connections", k.samples[len(k.samples)-1].Conns)
	} else {
		s += "no reading"
	}
	for _, h := range k.hosts {
		a := h.agent()
		s += fmt.Sprintf("; %s: %d/%d clients, %d connected, %d first calls ended", h.name, a.st.Clients, h.n, a.st.Ready, a.st.Warm)
		if a.st.FirstError != "" {
			s += " (" + a.st.FirstError + ")"
		}
	}
	return s
}

// The server's memory has settled after the ramp when it has completed
// soakSettleGCs collections and its RSS (judgedMemory) has stayed within
// soakSettleRSS over soakSettleSpan.
const (
	soakSettleGCs  = 2
	soakSettleRSS  = 0.02
	soakSettleSpan = 10 * time.Second
)

// judgedMemory is the server's memory as the soak judges it: RSS, or in a
// -race build the heap goal (see raceBuild).
func judgedMemory(s serverSample) int64 {
	if raceBuild {
		return s.HeapGoal
	}
	return s.RSS
}

// gcsSoFar is the server's collections in its latest full reading (a
// reading that failed has none).
func (k *soak) gcsSoFar() uint64 {
	for i := len(k.samples) - 1; i >= 0; i-- {
		if k.samples[i].Err == "" {
			return k.samples[i].GCs
		}
	}
	return 0
}

// awaitSettled runs the soak until the server's memory has settled (see
// settled, collections counted from now) or until is reached, notes which,
// and returns the time since from (mono), when what happened, at which it
// stopped waiting; the named window starts then either way.
func (k *soak) awaitSettled(ctx context.Context, from int64, until time.Time, what, window string) (time.Duration, error) {
	gc0 := k.gcsSoFar()
	settled, err := k.runUntil(ctx, until, func() bool { return k.settled(gc0) })
	if err != nil {
		return 0, err
	}
	d := since(from, mono())
	if settled {
		k.note(fmt.Sprintf("the server's memory settled %s after %s (%d collections, RSS steady over %s)", fmtDur(d), what, soakSettleGCs, fmtDur(soakSettleSpan)))
	} else {
		k.note(fmt.Sprintf("the server's memory had not settled %s after %s (%d collections and RSS within %.0f %% over %s wanted); the %s window starts anyway",
			fmtDur(d), what, soakSettleGCs, 100*soakSettleRSS, fmtDur(soakSettleSpan), window))
	}
	return d, nil
}

// settled reports whether the server's memory has settled, gc0 being its
// collections when the wait began (the end of the ramp, or of the faults).
func (k *soak) settled(gc0 uint64) bool {
	last := k.samples[len(k.samples)-1]
	if last.Err != "" || last.GCs < gc0+soakSettleGCs {
		return false
	}
	lo, hi := judgedMemory(last), judgedMemory(last)
	for i := len(k.samples) - 1; i >= 0; i-- {
		s := k.samples[i]
		if s.Err != "" {
			return false
		}
		lo, hi = min(lo, judgedMemory(s)), max(hi, judgedMemory(s))
		if since(s.At, last.At) >= soakSettleSpan {
			return float64(hi-lo) <= soakSettleRSS*float64(lo)
		}
	}
	return false
}

// okSoFar is the successful calls the agents have reported so far.
func (k *soak) okSoFar() int64 {
	var n int64
	for _, h := range k.hosts {
		for _, a := range h.agents {
			n += a.st.OK
		}
	}
	return n
}

// stopAgents ends the load of every live agent and takes its final
// report.
func (k *soak) stopAgents() error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, h := range k.hosts {
		if len(h.agents) == 0 {
			continue
		}
		a := h.agent()
		if a.killed || a.final != nil {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), k.opts.callTimeout()+hangGrace+time.Minute)
			defer cancel()
			r, err := a.ag.do(ctx, agentReq{Op: "soak_stop"})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: the final report: %w", h.name, err))
				return
			}
			a.final = r.Soak
		})
	}
	wg.Wait()
	// What happened between their last report and the end.
	for _, h := range k.hosts {
		if len(h.agents) > 0 {
			if a := h.agent(); a.final != nil {
				k.account(h, a, a.final, mono())
			}
		}
	}
	return errors.Join(errs...)
}
