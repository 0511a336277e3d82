package balancer

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
)

// clock is a fake clock.
type clock struct{ t time.Time }

func newClock() *clock                   { return &clock{t: time.Unix(1e9, 0)} }
func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func always(int) bool { return true }

// fleet makes a balancer over n ready endpoints (valued 0..n-1) on a fake
// clock.
func fleet(t *testing.T, cfg Config, n int) (*Balancer[int], []*Endpoint[int], *clock) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	b := New[int](cfg, clk.now)
	var eps []*Endpoint[int]
	for i := range n {
		eps = append(eps, b.Add(fmt.Sprintf("10.0.0.%d:7420", i+1), i))
	}
	for _, e := range eps {
		b.SetReady(e, true)
	}
	return b, eps, clk
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		cfg   Config
	}{
		{"Policy", Config{Policy: "random"}},
		{"Decay", Config{Decay: -1}},
		{"Subset", Config{Subset: -1}},
		{"SubsetID", Config{SubsetID: -2}},
		{"Ejection.MaxTime", Config{Ejection: Ejection{BaseTime: time.Minute, MaxTime: time.Second}}},
		{"Ejection.MaxPercent", Config{Ejection: Ejection{MaxPercent: 101}}},
		{"Ejection.SuccessRateStdevFactor", Config{Ejection: Ejection{SuccessRateStdevFactor: -1}}},
	} {
		err := tc.cfg.Validate()
		var ce *session.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: got %v, want a ConfigError naming %s", tc.cfg, err, tc.field)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestPickSpreadsByLoad: with equal latencies, P2C keeps the calls in
// flight even across endpoints (each pick goes to the less loaded of two).
func TestPickSpreadsByLoad(t *testing.T) {
	b, eps, _ := fleet(t, Config{}, 4)
	for range 400 {
		e := b.Pick(nil, always)
		b.Start(e)
	}
	for _, e := range eps {
		if n := e.inFlight.Load(); n < 95 || n > 105 {
			t.Errorf("%s holds %d of 400 calls in flight, want about 100", e.Addr, n)
		}
	}
}

// TestPickUnknownWithCallsLoses: an endpoint that has not answered yet
// is tried while it holds no call, but one that holds a call unanswered
// loses against any endpoint that has answered: a server that hangs on its
// first call does not draw the client's calls.
func TestPickUnknownWithCallsLoses(t *testing.T) {
	b, eps, clk := fleet(t, Config{}, 2)
	known, fresh := eps[0], eps[1]
	start := b.Start(known)
	clk.advance(20 * time.Millisecond)
	b.Done(known, start, Answered)

	// Nothing in flight on the fresh one: it is the cheaper.
	if e := b.Pick(nil, always); e != fresh {
		t.Fatalf("picked %s, want the endpoint with no answer and no call yet", e.Addr)
	}
	b.Start(fresh) // and its answer never comes
	for i := range 200 {
		if e := b.Pick(nil, always); e != known {
			t.Fatalf("pick %d went to %s, which holds an unanswered call and has never answered", i, e.Addr)
		}
	}
}

func TestPickAvoidAndUsable(t *testing.T) {
	for _, p := range []Policy{P2C, RoundRobin} {
		b, eps, _ := fleet(t, Config{Policy: p}, 3)
		for range 100 {
			if e := b.Pick(eps[0], always); e == eps[0] {
				t.Fatalf("%s: picked the endpoint to avoid while others are ready", p)
			}
			if e := b.Pick(nil, func(v int) bool { return v == 2 }); e != eps[2] {
				t.Fatalf("%s: picked %v, want the only usable endpoint", p, e)
			}
			if e := b.Pick(eps[1], func(v int) bool { return v == 1 }); e != eps[1] {
				t.Fatalf("%s: picked %v, want the endpoint to avoid when it is the only usable one", p, e)
			}
		}
		if e := b.Pick(nil, func(int) bool { return false }); e != nil {
			t.Fatalf("%s: picked %v with none usable", p, e)
		}
	}
	b := New[int](Config{Logger: quiet}, nil)
	if e := b.Pick(nil, always); e != nil {
		t.Fatalf("picked %v from an empty set", e)
	}
}

func TestReadyAndRemove(t *testing.T) {
	b, eps, _ := fleet(t, Config{}, 3)
	b.SetReady(eps[0], false)
	b.Remove(eps[1])
	b.Remove(eps[1]) // twice is harmless
	b.SetReady(eps[1], true)
	for range 50 {
		if e := b.Pick(nil, always); e != eps[2] {
			t.Fatalf("picked %s, want the only ready endpoint left", e.Addr)
		}
	}
	if eps := b.Endpoints(); len(eps) != 2 {
		t.Fatalf("%d endpoints listed, want 2", len(eps))
	}
}

// sim runs callers closed-loop against endpoints whose latency is given,
// on the balancer's fake clock, and returns the calls each endpoint
// answered and the latencies.
type sim struct {
	b       *Balancer[int]
	clk     *clock
	latency func(ep int) time.Duration
	calls   []int
	lat     []time.Duration
	q       doneQueue
}

type done struct {
	at    time.Time
	e     *Endpoint[int]
	start int64
	began time.Time
}

type doneQueue []done

func (q doneQueue) Len() int           { return len(q) }
func (q doneQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q doneQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *doneQueue) Push(x any)        { *q = append(*q, x.(done)) }
func (q *doneQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

func (s *sim) send() {
	e := s.b.Pick(nil, always)
	start := s.b.Start(e)
	s.calls[e.Value]++
	heap.Push(&s.q, done{at: s.clk.t.Add(s.latency(e.Value)), e: e, start: start, began: s.clk.t})
}

// run keeps callers calls in flight for d of fake time.
func (s *sim) run(callers int, d time.Duration) {
	end := s.clk.t.Add(d)
	for range callers {
		s.send()
	}
	for s.clk.t.Before(end) {
		x := heap.Pop(&s.q).(done)
		s.clk.t = x.at
		s.b.Done(x.e, x.start, Answered)
		s.lat = append(s.lat, x.at.Sub(x.began))
		s.send()
	}
}

// drain ends the calls in flight, sending no more.
func (s *sim) drain() {
	for len(s.q) > 0 {
		x := heap.Pop(&s.q).(done)
		s.b.Done(x.e, x.start, Answered)
	}
}

func (s *sim) p99() time.Duration {
	l := slices.Clone(s.lat)
	slices.Sort(l)
	return l[len(l)*99/100]
}

// TestSlowEndpointAvoided: one of four endpoints answers 10× slower. P2C
// gives it under 10% of the calls (round-robin: 25%), and the fleet's p99
// falls at least 3× against round-robin.
func TestSlowEndpointAvoided(t *testing.T) {
	latency := func(ep int) time.Duration {
		if ep == 3 {
			return 10 * time.Millisecond
		}
		return time.Millisecond
	}
	result := map[Policy]*sim{}
	for _, p := range []Policy{P2C, RoundRobin} {
		b, _, clk := fleet(t, Config{Policy: p}, 4)
		s := &sim{b: b, clk: clk, latency: latency, calls: make([]int, 4)}
		s.run(8, 30*time.Second)
		result[p] = s
		total := 0
		for _, n := range s.calls {
			total += n
		}
		t.Logf("%s: calls per endpoint %v, share of the slow one %.1f%%, p99 %v", p, s.calls, 100*float64(s.calls[3])/float64(total), s.p99())
	}
	p2c, rr := result[P2C], result[RoundRobin]
	total := 0
	for _, n := range p2c.calls {
		total += n
	}
	if share := float64(p2c.calls[3]) / float64(total); share >= 0.10 {
		t.Errorf("the slow endpoint got %.1f%% of the calls, want < 10%%", 100*share)
	}
	if ratio := float64(rr.p99()) / float64(p2c.p99()); ratio < 3 {
		t.Errorf("p99 round-robin %v / P2C %v = %.1f×, want ≥ 3×", rr.p99(), p2c.p99(), ratio)
	}
}

// TestWarmUp: an endpoint that joins a serving fleet starts with a small
// share and reaches its full share by the end of the warm-up; the first
// set of a client is not warmed.
func TestWarmUp(t *testing.T) {
	b, eps, clk := fleet(t, Config{WarmUp: 10 * time.Second}, 3)
	for _, e := range eps {
		if f := e.warmFactor(b.nanos(), b.cfg.WarmUp); f != 1 {
			t.Fatalf("%s of the first set has warm-up factor %v, want 1", e.Addr, f)
		}
	}
	s := &sim{b: b, clk: clk, latency: func(int) time.Duration { return time.Millisecond }, calls: make([]int, 4)}
	s.run(8, time.Second) // the fleet serves
	joiner := b.Add("10.0.0.9:7420", 3)
	b.SetReady(joiner, true)
	share := func(d time.Duration) float64 {
		s.calls = make([]int, 4)
		s.run(8, d)
		total := 0
		for _, n := range s.calls {
			total += n
		}
		return float64(s.calls[3]) / float64(total)
	}
	first := share(time.Second)
	s.drain()
	clk.advance(10 * time.Second)
	b.Tick()
	later := share(time.Second)
	t.Logf("joiner's share: first second %.1f%%, after the warm-up %.1f%%", 100*first, 100*later)
	if first > 0.15 {
		t.Errorf("the joiner got %.1f%% in its first second, want well under its 25%% share", 100*first)
	}
	if later < 0.20 || later > 0.30 {
		t.Errorf("the joiner got %.1f%% after the warm-up, want about 25%%", 100*later)
	}
}

func TestSubsetEven(t *testing.T) {
	for _, tc := range []struct{ servers, clients, size int }{{20, 100, 5}, {23, 100, 5}, {40, 300, 7}} {
		var addrs []string
		for i := range tc.servers {
			addrs = append(addrs, fmt.Sprintf("10.0.%d.1:7420", i))
		}
		conns := map[string]int{}
		for id := range tc.clients {
			sub := Subset(addrs, tc.size, id)
			if len(sub) != tc.size || !slices.IsSorted(sub) || len(slices.Compact(slices.Clone(sub))) != tc.size {
				t.Fatalf("client %d: subset %v, want %d distinct sorted servers", id, sub, tc.size)
			}
			if again := Subset(addrs, tc.size, id); !slices.Equal(sub, again) {
				t.Fatalf("client %d: subsets differ between calls: %v, %v", id, sub, again)
			}
			for _, a := range sub {
				conns[a]++
			}
		}
		lo, hi := math.MaxInt, 0
		for _, a := range addrs {
			lo, hi = min(lo, conns[a]), max(hi, conns[a])
		}
		t.Logf("%d clients × %d servers, subset %d: connections per server %d..%d", tc.clients, tc.servers, tc.size, lo, hi)
		// Even when size divides the servers and a whole number of rounds
		// of clients; close otherwise (the leftovers change every round).
		want := 1.0
		if tc.servers%tc.size != 0 || tc.clients%(tc.servers/tc.size) != 0 {
			want = 1.4
		}
		if lo == 0 || float64(hi)/float64(lo) > want {
			t.Errorf("%d clients × %d servers, subset %d: connections per server %d..%d, want max/min ≤ %v", tc.clients, tc.servers, tc.size, lo, hi, want)
		}
	}
	if got := Subset([]string{"b:1", "a:1", "a:1"}, 0, 7); !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Fatalf("Subset with size 0 = %v, want every server, sorted, once", got)
	}
}
