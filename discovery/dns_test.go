package discovery

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// running is a resolver run by a test: its sets arrive on sets.
type running struct {
	t    *testing.T
	r    Resolver
	sets chan Set
}

// runResolver runs the resolver of target until the end of the test.
func runResolver(t *testing.T, target string, o Options) *running {
	t.Helper()
	r, err := New(target, o)
	if err != nil {
		t.Fatalf("New(%q): %v", target, err)
	}
	run := &running{t: t, r: r, sets: make(chan Set, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(s Set) { run.sets <- s })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run still running 10s after its context ended")
		}
	})
	return run
}

// next returns the next set, failing the test after limit.
func (run *running) next(limit time.Duration) Set {
	run.t.Helper()
	select {
	case s := <-run.sets:
		return s
	case <-time.After(limit):
		run.t.Fatalf("no new set within %v", limit)
		return Set{}
	}
}

// until reads sets until one satisfies cond, failing the test after limit;
// it returns that set and when it came.
func (run *running) until(limit time.Duration, what string, cond func(Set) bool) (Set, time.Time) {
	run.t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case s := <-run.sets:
			if cond(s) {
				return s, time.Now()
			}
			run.t.Logf("set while waiting for %s: %v %v", what, s.Addrs, s.Err)
		case <-deadline:
			run.t.Fatalf("no set with %s within %v", what, limit)
		}
	}
}

// none checks that no set is pending.
func (run *running) none(why string) {
	run.t.Helper()
	select {
	case s := <-run.sets:
		run.t.Fatalf("a set %v %v came, but %s", s.Addrs, s.Err, why)
	default:
	}
}

func has(want ...string) func(Set) bool {
	return func(s Set) bool { return s.Err == nil && slices.Equal(s.Addrs, want) }
}

const web3 = "198.18.0.1 web.fleet.test\n198.18.0.2 web.fleet.test\n198.18.0.3 web.fleet.test\n"

func TestDNSNameWithThreeAddresses(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600)
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Timeout: 2 * time.Second})
	s := run.next(10 * time.Second)
	want := []string{"198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"}
	if !slices.Equal(s.Addrs, want) || s.Err != nil {
		t.Fatalf("set = %v, %v; want %v", s.Addrs, s.Err, want)
	}
}

func TestDNSRecordsChangedArriveWithinRefresh(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600) // the TTL does not shorten Refresh
	const refresh = 300 * time.Millisecond
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Refresh: refresh, MinRefresh: 50 * time.Millisecond, Timeout: 2 * time.Second})
	run.until(10*time.Second, "the three addresses", has("198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"))

	// Resolutions that find the same set report nothing.
	n := d.queries("A", "web.fleet.test")
	waitFor(t, 10*time.Second, "three more resolutions", func() bool { return d.queries("A", "web.fleet.test") >= n+3 })
	run.none("the records did not change")

	d.setHosts("198.18.0.2 web.fleet.test\n198.18.0.4 web.fleet.test\n")
	changed := time.Now()
	_, at := run.until(10*time.Second, "the new addresses", has("198.18.0.2:7420", "198.18.0.4:7420"))
	if took := at.Sub(changed); took > refresh+2*time.Second {
		t.Fatalf("the new set came %v after the change, want within Refresh (%v) and some slack", took, refresh)
	}
}

func TestDNSTTLShorterThanRefreshDecides(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 1) // answers carry TTL 1s
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Refresh: time.Hour, MinRefresh: 100 * time.Millisecond, Timeout: 2 * time.Second})
	run.until(10*time.Second, "the three addresses", has("198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"))

	// Resolutions come every TTL: three intervals take about 3 TTLs (not
	// 3 × MinRefresh), and far less than Refresh. Timed from one logged
	// query to another.
	n := d.queries("A", "web.fleet.test")
	waitFor(t, 10*time.Second, "a resolution", func() bool { return d.queries("A", "web.fleet.test") > n })
	start, n := time.Now(), d.queries("A", "web.fleet.test")
	waitFor(t, 10*time.Second, "three more resolutions", func() bool { return d.queries("A", "web.fleet.test") >= n+3 })
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Fatalf("three resolutions took %v, want about 3 × TTL (1s)", took)
	}

	d.setHosts("198.18.0.9 web.fleet.test\n")
	run.until(5*time.Second, "the new address", has("198.18.0.9:7420"))
}

func TestDNSServerStoppedKeepsTheLastSetAndRecovers(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600)
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Refresh: 500 * time.Millisecond, MinRefresh: 50 * time.Millisecond, Timeout: time.Second})
	want := []string{"198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"}
	run.until(10*time.Second, "the three addresses", has(want...))

	d.stop()
	s := run.next(10 * time.Second)
	if !slices.Equal(s.Addrs, want) || s.Err == nil {
		t.Fatalf("set with the DNS server stopped = %v, %v; want the last good set and an error", s.Addrs, s.Err)
	}
	de := errorsAsDNS(t, s.Err)
	if de.NotFound || de.Server != d.addr() || !strings.Contains(de.Error(), "web.fleet.test.") {
		t.Fatalf("Err = %q (%+v), want a failure to reach %s, not a missing name", de, *de, d.addr())
	}
	t.Logf("with the DNS server stopped: %v", s.Err)

	d.restart()
	restarted := time.Now()
	var failures int
	_, at := run.until(10*time.Second, "the set back without error", func(s Set) bool {
		if s.Err != nil {
			failures++
			if !slices.Equal(s.Addrs, want) {
				t.Errorf("set while failing = %v, want the last good set %v", s.Addrs, want)
			}
		}
		return has(want...)(s)
	})
	// The backoff is at most 1.2 × Refresh.
	if took := at.Sub(restarted); took > 600*time.Millisecond+3*time.Second {
		t.Fatalf("the set came back %v after the DNS server, want within the longest backoff and slack", took)
	}
	if failures > 2 {
		t.Fatalf("%d more sets while failing; the same failure should be reported once", failures)
	}
}

func TestDNSResolveNowResolvesWithinMinRefresh(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600)
	const minRefresh = 300 * time.Millisecond
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Refresh: time.Hour, MinRefresh: minRefresh, Timeout: 2 * time.Second})
	run.until(10*time.Second, "the three addresses", has("198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"))

	d.setHosts("198.18.0.5 web.fleet.test\n")
	asked := time.Now()
	run.r.ResolveNow()
	_, at := run.until(10*time.Second, "the new address", has("198.18.0.5:7420"))
	if took := at.Sub(asked); took > minRefresh+2*time.Second {
		t.Fatalf("the new set came %v after ResolveNow, want within MinRefresh (%v) and slack", took, minRefresh)
	}

	// Asked again and again, it resolves at most once per MinRefresh.
	n := d.queries("A", "web.fleet.test")
	const asking = 1500 * time.Millisecond
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for time.Since(start) < asking {
		run.r.ResolveNow()
		<-tick.C
	}
	tick.Stop()
	elapsed := time.Since(start)
	got := d.queries("A", "web.fleet.test") - n
	if limit := int(elapsed/minRefresh) + 1; got > limit || got < 2 {
		t.Fatalf("%d resolutions while ResolveNow was called every 10ms for %v, want 2..%d (one per MinRefresh %v)", got, elapsed, limit, minRefresh)
	}
	run.none("the records did not change")
}

func TestDNSSRVRecords(t *testing.T) {
	t.Parallel()
	hosts := "198.18.1.1 a.fleet.test\n198.18.1.2 b.fleet.test\n2001:2::2 b.fleet.test\n"
	d := startDNSMasq(t, hosts, 3600,
		"--srv-host=_tcppro._tcp.fleet.test,a.fleet.test,7420,0,10",
		"--srv-host=_tcppro._tcp.fleet.test,b.fleet.test,7421,0,10",
		"--srv-host=_tcppro._tcp.fleet.test,a.fleet.test,7423,1,10",
		"--srv-host=_tcppro._tcp.fleet.test,gone.fleet.test,7422,0,10", // no address: left out
		"--srv-host=_other._tcp.fleet.test,gone.fleet.test,7422",
	)
	run := runResolver(t, "dns+srv://"+d.addr()+"/_tcppro._tcp.fleet.test", Options{Timeout: 2 * time.Second})
	s := run.next(10 * time.Second)
	want := []string{"198.18.1.1:7420", "198.18.1.1:7423", "198.18.1.2:7421", "[2001:2::2]:7421"}
	if !slices.Equal(s.Addrs, want) || s.Err != nil {
		t.Fatalf("set = %v, %v; want %v", s.Addrs, s.Err, want)
	}

	// An SRV name whose only target has no address is not found.
	run = runResolver(t, "dns+srv://"+d.addr()+"/_other._tcp.fleet.test", Options{Timeout: 2 * time.Second})
	s = run.next(10 * time.Second)
	if de := errorsAsDNS(t, s.Err); !de.NotFound || s.Addrs != nil || de.Type != "SRV" {
		t.Fatalf("set = %v, %v; want no addresses and a not-found SRV error", s.Addrs, s.Err)
	}
}

func TestDNSAAAARecords(t *testing.T) {
	t.Parallel()
	hosts := "::1 six.fleet.test\n2001:2::1 six.fleet.test\n198.18.0.1 dual.fleet.test\n::1 dual.fleet.test\n"
	d := startDNSMasq(t, hosts, 3600)
	for name, want := range map[string][]string{
		"six.fleet.test":  {"[2001:2::1]:7420", "[::1]:7420"},
		"dual.fleet.test": {"198.18.0.1:7420", "[::1]:7420"},
	} {
		run := runResolver(t, "dns://"+d.addr()+"/"+name+":7420", Options{Timeout: 2 * time.Second})
		if s := run.next(10 * time.Second); !slices.Equal(s.Addrs, want) || s.Err != nil {
			t.Errorf("set of %s = %v, %v; want %v", name, s.Addrs, s.Err, want)
		}
	}
}

func TestDNSNXDOMAINKeepsTheLastSet(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600)
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", Options{Refresh: 300 * time.Millisecond, MinRefresh: 50 * time.Millisecond, Timeout: 2 * time.Second})
	want := []string{"198.18.0.1:7420", "198.18.0.2:7420", "198.18.0.3:7420"}
	run.until(10*time.Second, "the three addresses", has(want...))

	d.setHosts("198.18.0.9 other.fleet.test\n")
	s := run.next(10 * time.Second)
	if !slices.Equal(s.Addrs, want) {
		t.Fatalf("set after NXDOMAIN = %v, %v; want the last good set", s.Addrs, s.Err)
	}
	if de := errorsAsDNS(t, s.Err); !de.NotFound || de.Reason != "NXDOMAIN" || de.Type != "A/AAAA" {
		t.Fatalf("Err = %v (%+v), want NXDOMAIN of A/AAAA", s.Err, *de)
	}

	d.setHosts(web3)
	run.until(10*time.Second, "the set back without error", has(want...))
}

func TestDNSLookupsBackOffAfterFailures(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, "198.18.0.9 other.fleet.test\n", 3600)
	o := Options{Refresh: 2 * time.Second, MinRefresh: 50 * time.Millisecond, Timeout: 2 * time.Second}
	run := runResolver(t, "dns://"+d.addr()+"/web.fleet.test:7420", o)
	s := run.next(10 * time.Second)
	if de := errorsAsDNS(t, s.Err); !de.NotFound || s.Addrs != nil {
		t.Fatalf("first set = %v, %v; want no addresses and NXDOMAIN", s.Addrs, s.Err)
	}
	first := time.Now()
	// Waits 50, 100, 200, 400ms (±20%) before the 2nd to 5th lookups;
	// without the backoff they would take 4 × MinRefresh = 200ms. Asking
	// for resolutions does not shorten the backoff.
	waitFor(t, 10*time.Second, "five lookups", func() bool {
		run.r.ResolveNow()
		return d.queries("A", "web.fleet.test") >= 5
	})
	if took := time.Since(first); took < 500*time.Millisecond {
		t.Fatalf("five failed lookups within %v, want them backing off (about 750ms)", took)
	}
	run.none("the same failure is reported once")

	// REFUSED (a name outside the server's zone) fails the same way.
	run = runResolver(t, "dns://"+d.addr()+"/web.example:7420", o)
	s = run.next(10 * time.Second)
	if de := errorsAsDNS(t, s.Err); de.NotFound || de.Reason != "REFUSED" {
		t.Fatalf("set = %v, %v; want REFUSED", s.Addrs, s.Err)
	}
}
