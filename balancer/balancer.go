package balancer

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer picks endpoints; each carries a value of type T for its user
// (the client's per-server state). It is safe for concurrent use.
type Balancer[T any] struct {
	cfg  Config
	now  func() time.Time
	base time.Time // the clock's reading at New; times below are ns since

	picks atomic.Pointer[[]*Endpoint[T]] // what Pick chooses from
	rr    atomic.Uint64
	wake  chan struct{} // capacity 1: Tick is wanted sooner

	mu           sync.Mutex
	eps          []*Endpoint[T] // every endpoint, in no order
	nextInterval int64
	panicking    bool
	ejections    uint64
	returns      uint64
}

// Endpoint is one server of the set. Addr and Value are its user's; the
// rest is the balancer's.
type Endpoint[T any] struct {
	Addr  string
	Value T

	// Read on every pick, written on every call: atomics and a small lock.
	inFlight  atomic.Int64
	failures  atomic.Int64  // transport failures in a row
	ok, bad   atomic.Uint64 // outcomes in the current interval
	warmUntil atomic.Int64  // end of the warm-up; 0: warm
	lmu       sync.Mutex
	latency   float64 // peak EWMA, ns
	known     bool    // latency is an estimate: a sample, or the fleet's mean
	stamp     int64   // time of the last change of latency

	// Under the balancer's mu.
	index       int // in eps; -1 once removed
	ready       bool
	ejected     bool
	until       int64 // end of the ejection
	count       int   // ejection multiplier
	ejections   uint64
	pendingWarm bool // warm up from the next time it is ready
	totalOK     uint64
	totalBad    uint64
}

// New returns a balancer with cfg (which must be valid) on the clock now
// (time.Now when nil).
func New[T any](cfg Config, now func() time.Time) *Balancer[T] {
	if now == nil {
		now = time.Now
	}
	b := &Balancer[T]{cfg: cfg.withDefaults(), now: now, wake: make(chan struct{}, 1)}
	b.base = now()
	b.nextInterval = int64(b.cfg.Ejection.Interval)
	b.picks.Store(&[]*Endpoint[T]{})
	return b
}

// Wake returns a channel that receives when Tick should run sooner than it
// last asked (an endpoint was ejected).
func (b *Balancer[T]) Wake() <-chan struct{} { return b.wake }

// Config returns the configuration, with defaults filled in.
func (b *Balancer[T]) Config() Config { return b.cfg }

// nanos is the time on the balancer's clock.
func (b *Balancer[T]) nanos() int64 { return int64(b.now().Sub(b.base)) }

// Add adds an endpoint for addr, not ready. When another endpoint is
// ready, the new one joins a serving fleet: it is warmed in and its
// latency starts at the fleet's mean.
func (b *Balancer[T]) Add(addr string, v T) *Endpoint[T] {
	now := b.nanos()
	e := &Endpoint[T]{Addr: addr, Value: v, stamp: now}
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum float64
	n, known := 0, 0
	for _, o := range b.eps {
		if o.ready {
			if l, ok := o.currentLatency(now, b.cfg.Decay); ok {
				sum += l
				known++
			}
			n++
		}
	}
	if n > 0 {
		e.pendingWarm = b.cfg.WarmUp > 0
	}
	if known > 0 {
		e.latency, e.known = sum/float64(known), true
	}
	e.index = len(b.eps)
	b.eps = append(b.eps, e)
	return e
}

// Remove takes e out of the set: it is picked no more. Calls on it may
// still end (Done) afterwards.
func (b *Balancer[T]) Remove(e *Endpoint[T]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.index < 0 {
		return
	}
	last := b.eps[len(b.eps)-1]
	b.eps[e.index], last.index = last, e.index
	b.eps = b.eps[:len(b.eps)-1]
	e.index, e.ready = -1, false
	b.publishLocked()
}

// SetReady says whether e can take calls (it has a connection that is
// open and not going away).
func (b *Balancer[T]) SetReady(e *Endpoint[T], ready bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.index < 0 || e.ready == ready {
		return
	}
	e.ready = ready
	if ready && e.pendingWarm {
		e.startWarmUp(b.nanos(), b.cfg.WarmUp)
	}
	b.publishLocked()
}

func (e *Endpoint[T]) startWarmUp(now int64, d time.Duration) {
	e.pendingWarm = false
	e.warmUntil.Store(now + int64(d))
}

// publishLocked rebuilds what Pick chooses from: the ready endpoints not
// ejected; when there is none, the ready ones that are ejected (the panic
// rule).
func (b *Balancer[T]) publishLocked() {
	picks := make([]*Endpoint[T], 0, len(b.eps))
	for _, e := range b.eps {
		if e.ready && !e.ejected {
			picks = append(picks, e)
		}
	}
	panicking := false
	if len(picks) == 0 {
		for _, e := range b.eps {
			if e.ready {
				picks = append(picks, e)
			}
		}
		panicking = len(picks) > 0
	}
	if panicking && !b.panicking {
		b.cfg.Logger.Warn("balancer: every ready server is ejected; calling them anyway (panic rule)", "servers", len(picks))
	}
	b.panicking = panicking
	b.picks.Store(&picks)
}

// Pick returns an endpoint to call, other than avoid when there is one,
// among those for which usable is true; nil when none is.
func (b *Balancer[T]) Pick(avoid *Endpoint[T], usable func(T) bool) *Endpoint[T] {
	list := *b.picks.Load()
	n := len(list)
	switch {
	case n == 0:
		return nil
	case n == 1:
		if e := list[0]; usable(e.Value) {
			return e
		}
		return nil
	case b.cfg.Policy == RoundRobin:
		return b.pickRoundRobin(list, avoid, usable)
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	x, y := list[i], list[j]
	okx := x != avoid && usable(x.Value)
	oky := y != avoid && usable(y.Value)
	switch {
	case okx && oky:
		now := b.nanos()
		if y.cost(now, b.cfg.Decay).less(x.cost(now, b.cfg.Decay)) {
			x, y = y, x
		}
		// x won; while warming, it takes the call only in proportion.
		if x.warmUntil.Load() != 0 && rand.Float64() > x.warmFactor(now, b.cfg.WarmUp) {
			return y
		}
		return x
	case okx:
		return x
	case oky:
		return y
	}
	return scan(list, i, avoid, usable)
}

// scan returns the first usable endpoint from list[from] on, other than
// avoid when there is one: the slow path, for when the candidates drawn
// are going away.
func scan[T any](list []*Endpoint[T], from int, avoid *Endpoint[T], usable func(T) bool) *Endpoint[T] {
	var fallback *Endpoint[T]
	for k := range list {
		e := list[(from+k)%len(list)]
		if !usable(e.Value) {
			continue
		}
		if e != avoid {
			return e
		}
		fallback = e
	}
	return fallback
}

func (b *Balancer[T]) pickRoundRobin(list []*Endpoint[T], avoid *Endpoint[T], usable func(T) bool) *Endpoint[T] {
	n := len(list)
	from := int(b.rr.Add(1) % uint64(n))
	now := int64(-1)
	for k := range n {
		e := list[(from+k)%n]
		if e == avoid || !usable(e.Value) {
			continue
		}
		if e.warmUntil.Load() != 0 {
			if now < 0 {
				now = b.nanos()
			}
			if rand.Float64() > e.warmFactor(now, b.cfg.WarmUp) {
				continue // warming: taken only in proportion
			}
		}
		return e
	}
	return scan(list, from, avoid, usable)
}

// cost is what a pick compares: an endpoint that holds calls and has no
// latency estimate yet (it may hang on every one) loses against every
// endpoint that has answered, and among those unknown the one with fewer
// calls in flight wins (Finagle's penalty); the others compare
// (latency + 1 ns) × (calls in flight + 1).
type cost struct {
	unknown bool
	value   float64
}

// less reports whether a is the cheaper.
func (a cost) less(b cost) bool {
	if a.unknown != b.unknown {
		return !a.unknown
	}
	return a.value < b.value
}

// cost is the endpoint's cost at now.
func (e *Endpoint[T]) cost(now int64, tau time.Duration) cost {
	l, known := e.currentLatency(now, tau)
	n := e.inFlight.Load()
	if !known && n > 0 {
		return cost{unknown: true, value: float64(n)}
	}
	return cost{value: (l + 1) * float64(n+1)}
}

// warmFactor is 0.1 at the start of the warm-up, 1 at its end.
func (e *Endpoint[T]) warmFactor(now int64, warmUp time.Duration) float64 {
	until := e.warmUntil.Load()
	if until == 0 || now >= until {
		if until != 0 {
			e.warmUntil.CompareAndSwap(until, 0)
		}
		return 1
	}
	return 1 - 0.9*float64(until-now)/float64(warmUp)
}

// currentLatency is the latency decayed to now, and whether there is an
// estimate (a sample, or the fleet's mean when the endpoint joined).
func (e *Endpoint[T]) currentLatency(now int64, tau time.Duration) (float64, bool) {
	e.lmu.Lock()
	l, s, known := e.latency, e.stamp, e.known
	e.lmu.Unlock()
	return l * decay(now-s, tau), known
}

// observe takes a latency sample: the latency becomes the larger of the
// sample and the decayed latency.
func (e *Endpoint[T]) observe(now int64, rtt float64, tau time.Duration) {
	e.lmu.Lock()
	if now > e.stamp {
		e.latency *= decay(now-e.stamp, tau)
		e.stamp = now
	}
	e.latency = max(e.latency, rtt)
	e.known = true
	e.lmu.Unlock()
}

// decay is the weight left to a value after dt: exp(-dt/tau).
func decay(dt int64, tau time.Duration) float64 {
	if dt <= 0 {
		return 1
	}
	return math.Exp(-float64(dt) / float64(tau))
}
