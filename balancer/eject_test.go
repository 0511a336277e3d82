package balancer

import (
	"testing"
	"time"
)

func ejectCfg() Config {
	return Config{Ejection: Ejection{ConsecutiveFailures: 3, BaseTime: 30 * time.Second, MaxTime: 300 * time.Second, Interval: 10 * time.Second}}
}

func fail(b *Balancer[int], e *Endpoint[int], n int) {
	for range n {
		b.Failed(e)
	}
}

// TestConsecutiveFailuresEject: transport failures in a row eject an
// endpoint for BaseTime (±10%); it is not picked meanwhile, and comes back
// (warmed in) when Tick runs at the time it asked for.
func TestConsecutiveFailuresEject(t *testing.T) {
	b, eps, clk := fleet(t, ejectCfg(), 4)
	fail(b, eps[0], 2)
	b.Done(eps[0], b.Start(eps[0]), Answered) // an answer ends the run
	fail(b, eps[0], 2)
	b.Done(eps[0], b.Start(eps[0]), Refused) // refusals are not transport failures
	if s := b.Stats(); s.Ejected != 0 {
		t.Fatalf("ejected after runs of 2 failures: %+v", s)
	}
	select {
	case <-b.Wake():
		t.Fatal("Wake fired before any ejection")
	default:
	}
	for range 10 { // calls failed by a connection's end: not in the run
		b.Done(eps[0], b.Start(eps[0]), TransportFailure)
	}
	if s := b.Stats(); s.Ejected != 0 {
		t.Fatalf("calls failed by one connection's end ejected: %+v", s)
	}
	b.Failed(eps[0]) // a failed connect completes a run of 3
	select {
	case <-b.Wake(): // the ejection's end must be timed
	default:
		t.Fatal("an ejection did not wake the Tick loop")
	}
	s := b.Stats()
	if s.Ejected != 1 || !b.Endpoints()[0].Ejected {
		t.Fatalf("not ejected after 3 transport failures in a row: %+v", s)
	}
	if d := b.Endpoints()[0].EjectedFor; d < 27*time.Second || d > 33*time.Second {
		t.Fatalf("ejected for %v, want 30s ±10%%", d)
	}
	for range 200 {
		if e := b.Pick(nil, always); e == eps[0] {
			t.Fatal("picked an ejected endpoint while healthy ones remain")
		}
	}
	next := b.Tick()
	if d := next.Sub(clk.t); d != 10*time.Second {
		t.Fatalf("Tick asks to run again in %v, want the interval 10s", d)
	}
	until := clk.t.Add(b.Endpoints()[0].EjectedFor)
	for i := 0; b.Stats().Ejected > 0; i++ {
		if i == 10 || next.After(until) {
			t.Fatalf("Tick asked for %v, after the ejection's end %v", next, until)
		}
		clk.t = next
		next = b.Tick()
	}
	if !clk.t.Equal(until) {
		t.Fatalf("returned at %v, want the ejection's end %v", clk.t, until)
	}
	s = b.Stats()
	if s.Ejected != 0 || s.Returns != 1 {
		t.Fatalf("not back at the end of the ejection: %+v", s)
	}
	if f := b.Endpoints()[0].WarmUp; f >= 0.2 {
		t.Fatalf("back from ejection with warm-up factor %v, want it warming in from 0.1", f)
	}
	// A second ejection lasts twice as long.
	fail(b, eps[0], 3)
	if d := b.Endpoints()[0].EjectedFor; d < 54*time.Second || d > 66*time.Second {
		t.Fatalf("second ejection lasts %v, want 60s ±10%%", d)
	}
}

// TestEjectionCountDecays: every interval without failure takes one off
// the ejection multiplier.
func TestEjectionCountDecays(t *testing.T) {
	b, eps, clk := fleet(t, ejectCfg(), 4)
	fail(b, eps[0], 3)
	for clk.t = b.Tick(); b.Stats().Ejected > 0; clk.t = b.Tick() {
	}
	// Two clean intervals: the count goes from 1 to 0 (the first interval
	// also holds the ejection's failures).
	clk.t = b.Tick()
	clk.t = b.Tick()
	b.Tick()
	fail(b, eps[0], 3)
	if d := b.Endpoints()[0].EjectedFor; d > 33*time.Second {
		t.Fatalf("ejected for %v after clean intervals, want the base time again", d)
	}
}

// TestMaxEjectionPercent: at most half of the endpoints are ejected at
// once; and with two endpoints, one may be.
func TestMaxEjectionPercent(t *testing.T) {
	b, eps, _ := fleet(t, ejectCfg(), 4)
	for _, e := range eps {
		fail(b, e, 3)
	}
	if s := b.Stats(); s.Ejected != 2 {
		t.Fatalf("%d of 4 ejected, want at most 2 (50%%)", s.Ejected)
	}
	b, eps, _ = fleet(t, ejectCfg(), 2)
	fail(b, eps[0], 3)
	fail(b, eps[1], 3)
	if s := b.Stats(); s.Ejected != 1 {
		t.Fatalf("%d of 2 ejected, want 1", s.Ejected)
	}
}

// TestPanicRule: when every ready endpoint is ejected they are picked
// anyway; as soon as one healthy endpoint is ready, only it is.
func TestPanicRule(t *testing.T) {
	cfg := ejectCfg()
	cfg.Ejection.MaxPercent = 100
	b, eps, _ := fleet(t, cfg, 3)
	b.SetReady(eps[2], false)
	fail(b, eps[0], 3)
	fail(b, eps[1], 3)
	s := b.Stats()
	if s.Ejected != 2 || !s.Panic {
		t.Fatalf("want 2 ejected and panic, got %+v", s)
	}
	seen := map[*Endpoint[int]]bool{}
	for range 100 {
		seen[b.Pick(nil, always)] = true
	}
	if !seen[eps[0]] || !seen[eps[1]] || len(seen) != 2 {
		t.Fatalf("in panic, picked %v; want both ejected ready endpoints", seen)
	}
	b.SetReady(eps[2], true)
	for range 100 {
		if e := b.Pick(nil, always); e != eps[2] {
			t.Fatalf("picked %s while a healthy endpoint is ready", e.Addr)
		}
	}
	if b.Stats().Panic {
		t.Fatal("still in panic with a healthy endpoint")
	}
}

// TestSuccessRateEjection: with enough calls, an endpoint whose success
// rate is far below the fleet's is ejected at the end of the interval;
// rates that differ by noise eject none.
func TestSuccessRateEjection(t *testing.T) {
	b, eps, clk := fleet(t, ejectCfg(), 6)
	for i, e := range eps {
		for k := range 200 {
			o := Answered
			switch {
			case i == 5 && k%2 == 0:
				o = TimedOut // 50% success
			case i == 4 && k == 0:
				o = Refused // 99.5%: noise
			}
			b.Done(e, b.Start(e), o)
		}
	}
	clk.t = b.Tick()
	b.Tick()
	for _, es := range b.Endpoints() {
		want := es.Addr == eps[5].Addr
		if es.Ejected != want {
			t.Errorf("%s (%d ok, %d failed): ejected %v, want %v", es.Addr, es.Successes, es.Failures, es.Ejected, want)
		}
	}
	// Too few endpoints with enough calls: no comparison.
	b, eps, clk = fleet(t, ejectCfg(), 4)
	for i, e := range eps {
		for k := range 200 {
			o := Answered
			if i == 3 && k%2 == 0 {
				o = TimedOut
			}
			b.Done(e, b.Start(e), o)
		}
	}
	clk.t = b.Tick()
	b.Tick()
	if s := b.Stats(); s.Ejected != 0 {
		t.Fatalf("ejected with only 4 endpoints to compare: %+v", s)
	}
}

// TestRemovedWhileEjected: an ejected endpoint that leaves the set frees
// its place under the cap.
func TestRemovedWhileEjected(t *testing.T) {
	b, eps, _ := fleet(t, ejectCfg(), 2)
	fail(b, eps[0], 3)
	b.Remove(eps[0])
	e := b.Add("10.0.0.9:7420", 9)
	b.SetReady(e, true)
	fail(b, eps[1], 3)
	if s := b.Stats(); s.Ejected != 1 {
		t.Fatalf("%+v: want the remaining endpoint ejectable", s)
	}
}
