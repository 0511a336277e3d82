package balancer

import (
	"slices"
	"strings"
	"time"
)

// EndpointStats is an endpoint's state.
type EndpointStats struct {
	Addr       string
	Ready      bool          // it has a connection that takes calls
	Ejected    bool          // ejected as an outlier
	EjectedFor time.Duration // what is left of the ejection
	Ejections  uint64        // times ejected
	WarmUp     float64       // its warm-up factor: 1 when warm
	InFlight   int64         // calls on it now
	Latency    time.Duration // its latency (peak EWMA) now
	Successes  uint64        // calls answered
	Failures   uint64        // failed connects, and calls that failed on it (not application errors)
}

// Stats is a snapshot of the balancer's counters.
type Stats struct {
	Ejections uint64 // ejections so far
	Returns   uint64 // returns from ejection so far
	Ejected   int    // endpoints ejected now
	Panic     bool   // every ready endpoint is ejected, and they are picked anyway
}

// Stats returns the balancer's counters.
func (b *Balancer[T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{Ejections: b.ejections, Returns: b.returns, Panic: b.panicking}
	for _, e := range b.eps {
		if e.ejected {
			s.Ejected++
		}
	}
	return s
}

// Endpoints returns the state of each endpoint, sorted by address.
func (b *Balancer[T]) Endpoints() []EndpointStats {
	now := b.nanos()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]EndpointStats, 0, len(b.eps))
	for _, e := range b.eps {
		es := EndpointStats{
			Addr:      e.Addr,
			Ready:     e.ready,
			Ejected:   e.ejected,
			Ejections: e.ejections,
			WarmUp:    e.warmFactor(now, b.cfg.WarmUp),
			InFlight:  e.inFlight.Load(),
			Latency:   time.Duration(e.latencyNow(now, b.cfg.Decay)),
			Successes: e.totalOK + e.ok.Load(),
			Failures:  e.totalBad + e.bad.Load(),
		}
		if e.ejected {
			es.EjectedFor = time.Duration(max(e.until-now, 0))
		}
		out = append(out, es)
	}
	slices.SortFunc(out, func(a, b EndpointStats) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// latencyNow is the latency decayed to now (0 when none is known).
func (e *Endpoint[T]) latencyNow(now int64, tau time.Duration) float64 {
	l, _ := e.currentLatency(now, tau)
	return l
}
