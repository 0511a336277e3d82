package balancer

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"
)

// Outcome is how a call on an endpoint ended.
type Outcome int

// Outcomes.
const (
	// Answered: a RESPONSE, or an ERROR from the application. Its latency
	// is a sample; it ends a run of transport failures.
	Answered Outcome = iota
	// TimedOut: the call's deadline passed while it was on the endpoint.
	// The time it waited is a latency sample (a lower bound); it counts
	// against the success rate.
	TimedOut
	// Refused: the server refused the call (BUSY, OVERLOADED,
	// SHUTTING_DOWN). It counts against the success rate.
	Refused
	// TransportFailure: the call's connection ended under it (a dead
	// peer, a reset, a write timeout). It counts against the success rate;
	// the connection's end itself is reported once, with Failed, so that
	// one connection lost with many calls on it is one failure in a row.
	TransportFailure
	// Abandoned: the caller gave up (cancelled). It counts for nothing.
	Abandoned
)

// Start records a call sent to e and returns its start time, for Done.
func (b *Balancer[T]) Start(e *Endpoint[T]) int64 {
	e.inFlight.Add(1)
	return b.nanos()
}

// Done records the end of a call started at start.
func (b *Balancer[T]) Done(e *Endpoint[T], start int64, o Outcome) {
	e.inFlight.Add(-1)
	switch o {
	case Answered:
		now := b.nanos()
		e.observe(now, float64(now-start), b.cfg.Decay)
		e.ok.Add(1)
		if e.failures.Load() != 0 {
			e.failures.Store(0)
		}
	case TimedOut:
		now := b.nanos()
		e.observe(now, float64(now-start), b.cfg.Decay)
		e.bad.Add(1)
	case Refused:
		e.bad.Add(1)
	case TransportFailure:
		e.bad.Add(1)
	}
}

// Failed records a transport failure of e's connection: a connect that
// failed (refused by the kernel, timed out, reset during the handshake), or
// a connection that ended without GOAWAY (a dead peer, a reset, a write
// timeout). A server's refusal (BUSY, SHUTTING_DOWN) is not one.
func (b *Balancer[T]) Failed(e *Endpoint[T]) {
	e.bad.Add(1)
	b.failure(e)
}

// failure counts a transport failure in a row, and ejects e at the
// threshold.
func (b *Balancer[T]) failure(e *Endpoint[T]) {
	limit := b.cfg.Ejection.ConsecutiveFailures
	if n := e.failures.Add(1); limit <= 0 || n < int64(limit) {
		return
	}
	b.mu.Lock()
	ej := b.ejectLocked(e, b.nanos(), fmt.Sprintf("%d transport failures in a row", limit))
	if ej != nil {
		b.publishLocked()
	}
	b.mu.Unlock()
	if ej != nil {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	ej.log(b.cfg.Logger)
}

// event is an ejection or a return, logged outside the lock.
type event struct {
	addr   string
	eject  bool
	d      time.Duration
	reason string
}

func (ev *event) log(l *slog.Logger) {
	switch {
	case ev == nil:
	case ev.eject:
		l.Warn("balancer: server ejected", "addr", ev.addr, "for", ev.d.Round(time.Millisecond), "reason", ev.reason)
	default:
		l.Info("balancer: server back from ejection", "addr", ev.addr)
	}
}

// ejectLocked ejects e unless it is ejected already, removed, or the cap
// on ejected endpoints is reached; it returns the event to log, nil if
// nothing changed.
func (b *Balancer[T]) ejectLocked(e *Endpoint[T], now int64, reason string) *event {
	e.failures.Store(0)
	if e.index < 0 || e.ejected {
		return nil
	}
	ejected := 0
	for _, o := range b.eps {
		if o.ejected {
			ejected++
		}
	}
	if ejected >= max(1, len(b.eps)*b.cfg.Ejection.MaxPercent/100) {
		return nil
	}
	e.count++
	e.ejections++
	b.ejections++
	d := min(time.Duration(e.count)*b.cfg.Ejection.BaseTime, b.cfg.Ejection.MaxTime)
	d = time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
	e.ejected, e.until = true, now+int64(d)
	e.warmUntil.Store(0)
	return &event{addr: e.Addr, eject: true, d: d, reason: reason}
}

// Tick runs the balancer's timed rules: endpoints whose ejection has
// ended return (warmed in), and every Interval success rates are compared
// and ejection counts decrease. It returns when it wants to be called
// next.
func (b *Balancer[T]) Tick() time.Time {
	now := b.nanos()
	var events []*event
	b.mu.Lock()
	changed := false
	for _, e := range b.eps {
		if e.ejected && e.until <= now {
			e.ejected = false
			b.returns++
			changed = true
			if b.cfg.WarmUp > 0 {
				e.pendingWarm = true
				if e.ready {
					e.startWarmUp(now, b.cfg.WarmUp)
				}
			}
			events = append(events, &event{addr: e.Addr})
		}
	}
	if now >= b.nextInterval {
		b.nextInterval = now + int64(b.cfg.Ejection.Interval)
		for _, ev := range b.intervalLocked(now) {
			events = append(events, ev)
			changed = true
		}
	}
	if changed {
		b.publishLocked()
	}
	next := b.nextInterval
	for _, e := range b.eps {
		if e.ejected {
			next = min(next, e.until)
		}
	}
	b.mu.Unlock()
	for _, ev := range events {
		ev.log(b.cfg.Logger)
	}
	return b.base.Add(time.Duration(next))
}

// intervalLocked ends an interval: it takes the interval's outcomes,
// ejects endpoints whose success rate is far below the fleet's, and
// decreases the ejection count of those that had no failure.
func (b *Balancer[T]) intervalLocked(now int64) []*event {
	cfg := b.cfg.Ejection
	type rate struct {
		e *Endpoint[T]
		r float64
	}
	var rates []rate
	for _, e := range b.eps {
		ok, bad := e.ok.Swap(0), e.bad.Swap(0)
		e.totalOK += ok
		e.totalBad += bad
		if bad == 0 && !e.ejected && e.count > 0 {
			e.count--
		}
		if calls := ok + bad; cfg.SuccessRateMinCalls > 0 && calls >= uint64(cfg.SuccessRateMinCalls) && !e.ejected {
			rates = append(rates, rate{e, float64(ok) / float64(calls)})
		}
	}
	if len(rates) < cfg.SuccessRateMinEndpoints {
		return nil
	}
	var sum, sq float64
	for _, r := range rates {
		sum += r.r
	}
	mean := sum / float64(len(rates))
	for _, r := range rates {
		sq += (r.r - mean) * (r.r - mean)
	}
	stdev := math.Sqrt(sq / float64(len(rates)))
	threshold := mean - max(cfg.SuccessRateStdevFactor*stdev, minSuccessGap)
	var events []*event
	for _, r := range rates {
		if r.r < threshold {
			reason := fmt.Sprintf("success rate %.1f%% against the fleet's %.1f%%", 100*r.r, 100*mean)
			if ev := b.ejectLocked(r.e, now, reason); ev != nil {
				events = append(events, ev)
			}
		}
	}
	return events
}
