package discovery

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeDNS is a DNS server on 127.0.0.1 that answers every query with the
// response code rcode and no records, or, with rcode -1, never answers.
// It counts the queries it receives.
func fakeDNS(t *testing.T, rcode int) (addr string, queries func() int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed by the cleanup
			}
			n.Add(1)
			req := new(dns.Msg)
			if rcode < 0 || req.Unpack(buf[:k]) != nil {
				continue
			}
			if out, err := new(dns.Msg).SetRcode(req, rcode).Pack(); err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String(), n.Load
}

func TestDNSTimeoutBoundsEachResolution(t *testing.T) {
	t.Parallel()
	addr, queries := fakeDNS(t, -1)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	run := runResolver(t, "dns://"+addr+"/web.fleet.test:7420", Options{Refresh: time.Hour, MinRefresh: time.Minute, Timeout: timeout})
	s := run.next(10 * time.Second)
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("the first set came after %v, want within Timeout (%v) and slack", took, timeout)
	}
	if de := errorsAsDNS(t, s.Err); de.Reason != "timeout" || de.NotFound || s.Addrs != nil {
		t.Fatalf("set = %v, %v; want no addresses and a timeout", s.Addrs, s.Err)
	}
	// A and AAAA, each tried three times (after a third of Timeout); the
	// next resolution waits MinRefresh (1m).
	waitFor(t, 10*time.Second, "6 queries", func() bool { return queries() >= 6 })
	if n := queries(); n != 6 {
		t.Fatalf("the silent server got %d queries, want 6 (A and AAAA, 3 tries each)", n)
	}
}

func TestRunReturnsAtOnceWhenStoppedDuringAResolution(t *testing.T) {
	t.Parallel()
	addr, queries := fakeDNS(t, -1)
	r, err := New("dns+srv://"+addr+"/_tcppro._tcp.fleet.test", Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(s Set) { t.Errorf("a set %v %v from a resolution that cannot end", s.Addrs, s.Err) })
	}()
	waitFor(t, 10*time.Second, "the query to arrive", func() bool { return queries() > 0 })
	stopped := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context ended")
	}
	if took := time.Since(stopped); took > 2*time.Second {
		t.Fatalf("Run returned %v after its context ended during a resolution with Timeout 1m, want at once", took)
	}
}

func TestDNSServerFailureTriesTheNextServer(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, web3, 3600)
	servfail, asked := fakeDNS(t, dns.RcodeServerFailure)
	ctx := context.Background()

	q := &querier{servers: []string{servfail, d.addr()}, try: time.Second}
	ips, ttl, err := q.lookupIPs(ctx, "web.fleet.test.")
	if err != nil || len(ips) != 3 || ttl != 3600 {
		t.Fatalf("lookup past a failing server = %v, TTL %d, %v; want 3 addresses with TTL 3600", ips, ttl, err)
	}
	if n := asked(); n != 2 {
		t.Fatalf("the failing server was asked %d times, want once for A and once for AAAA", n)
	}

	run := runResolver(t, "dns://"+servfail+"/web.fleet.test:7420", Options{Timeout: 2 * time.Second})
	s := run.next(10 * time.Second)
	if de := errorsAsDNS(t, s.Err); de.Reason != "SERVFAIL" || de.NotFound || de.Server != servfail || s.Addrs != nil {
		t.Fatalf("set = %v, %v; want no addresses and SERVFAIL from %s", s.Addrs, s.Err, servfail)
	}
}

func TestDNSLargeAnswerIsAskedAgainOverTCP(t *testing.T) {
	t.Parallel()
	var hosts strings.Builder
	var want []string
	for i := 1; i <= 150; i++ { // 150 A records: more than 1232 bytes
		ip := net.IPv4(198, 18, 2, byte(i)).String()
		hosts.WriteString(ip + " many.fleet.test\n")
		want = append(want, ip+":7420")
	}
	slices.Sort(want)
	d := startDNSMasq(t, hosts.String(), 3600)
	run := runResolver(t, "dns://"+d.addr()+"/many.fleet.test:7420", Options{Timeout: 2 * time.Second})
	if s := run.next(10 * time.Second); !slices.Equal(s.Addrs, want) || s.Err != nil {
		t.Fatalf("set of a name with 150 addresses: %d addresses, %v; want all 150", len(s.Addrs), s.Err)
	}
	// dnsmasq's log may trail its answers a little.
	waitFor(t, 10*time.Second, "a query over UDP and again over TCP", func() bool { return d.queries("A", "many.fleet.test") >= 2 })
}

func TestSystemServersFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search fleet.test\nnameserver 198.18.0.53\nnameserver ::1\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := systemServers(conf); err != nil || !slices.Equal(got, []string{"198.18.0.53:53", "[::1]:53"}) {
		t.Fatalf("systemServers = %v, %v; want both nameservers on port 53", got, err)
	}

	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search fleet.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, says := range map[string]string{empty: "lists no nameserver", filepath.Join(dir, "missing"): "no such file"} {
		got, err := systemServers(path)
		if err == nil || !strings.Contains(err.Error(), says) || !slices.Equal(got, []string{"127.0.0.1:53"}) {
			t.Errorf("systemServers(%s) = %v, %v; want 127.0.0.1:53 and an error saying %q", path, got, err, says)
		}
	}
}

func TestUnreadableResolvConfIsReportedWithTheFailure(t *testing.T) {
	t.Parallel()
	r, err := New("dns:///web.fleet.test:7420", Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "resolv.conf")
	r.(*dnsResolver).resolvConf = missing
	// Whatever answers on 127.0.0.1:53 (likely nothing), the name of the
	// reserved .test domain is not found there.
	s := runOnce(t, r)
	de := errorsAsDNS(t, s.Err)
	if de.Server != "127.0.0.1:53" || !errors.Is(s.Err, fs.ErrNotExist) || !strings.Contains(s.Err.Error(), missing) {
		t.Fatalf("Err = %v; want a failure at 127.0.0.1:53 that names %s and matches fs.ErrNotExist", s.Err, missing)
	}
}

// fakeDNSBy is a DNS server on 127.0.0.1 that answers each query with
// what answer returns for its question: a response code and records.
func fakeDNSBy(t *testing.T, answer func(q dns.Question) (int, []dns.RR)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed by the cleanup
			}
			req := new(dns.Msg)
			if req.Unpack(buf[:k]) != nil || len(req.Question) != 1 {
				continue
			}
			rcode, rrs := answer(req.Question[0])
			m := new(dns.Msg).SetRcode(req, rcode)
			m.Answer = rrs
			if out, err := m.Pack(); err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// TestDNSOneFamilyFailing: a DNS server that refuses AAAA queries (or
// fails A ones) does not make a name unusable: the family that answers is
// taken, the failed family's last good addresses are kept, and the
// failure is reported.
func TestDNSOneFamilyFailing(t *testing.T) {
	t.Parallel()
	type mode struct{ a, aaaa string } // an address, or "" to refuse, "servfail"
	var cur atomic.Pointer[mode]
	cur.Store(&mode{a: "198.18.0.1"})
	rr := func(s string) []dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Error(err)
			return nil
		}
		return []dns.RR{r}
	}
	addr := fakeDNSBy(t, func(q dns.Question) (int, []dns.RR) {
		m := cur.Load()
		v, typ := m.a, "A"
		if q.Qtype == dns.TypeAAAA {
			v, typ = m.aaaa, "AAAA"
		}
		switch v {
		case "":
			return dns.RcodeRefused, nil
		case "servfail":
			return dns.RcodeServerFailure, nil
		}
		return dns.RcodeSuccess, rr(q.Name + " 60 IN " + typ + " " + v)
	})
	run := runResolver(t, "dns://"+addr+"/web.fleet.test:7420", Options{Refresh: 200 * time.Millisecond, MinRefresh: 50 * time.Millisecond, Timeout: time.Second})

	// AAAA refused from the start: the A records make the set.
	s := run.next(10 * time.Second)
	if de := errorsAsDNS(t, s.Err); !slices.Equal(s.Addrs, []string{"198.18.0.1:7420"}) || de.Type != "AAAA" || de.Reason != "REFUSED" {
		t.Fatalf("set with AAAA refused = %v, %v; want the A address and AAAA's REFUSED", s.Addrs, s.Err)
	}

	// Both answer; then AAAA is refused again while A changes: the new A
	// address, and the last good AAAA one.
	cur.Store(&mode{a: "198.18.0.1", aaaa: "2001:2::1"})
	run.until(10*time.Second, "both families", has("198.18.0.1:7420", "[2001:2::1]:7420"))
	cur.Store(&mode{a: "198.18.0.2"})
	s, _ = run.until(10*time.Second, "the new A address and the kept AAAA one", func(s Set) bool {
		return slices.Equal(s.Addrs, []string{"198.18.0.2:7420", "[2001:2::1]:7420"})
	})
	if de := errorsAsDNS(t, s.Err); de.Type != "AAAA" || de.Reason != "REFUSED" {
		t.Fatalf("Err = %v, want AAAA's REFUSED", s.Err)
	}

	// A fails, AAAA answers: the A address kept.
	cur.Store(&mode{a: "servfail", aaaa: "2001:2::3"})
	s, _ = run.until(10*time.Second, "the kept A address and the new AAAA one", func(s Set) bool {
		return slices.Equal(s.Addrs, []string{"198.18.0.2:7420", "[2001:2::3]:7420"})
	})
	if de := errorsAsDNS(t, s.Err); de.Type != "A" || de.Reason != "SERVFAIL" {
		t.Fatalf("Err = %v, want A's SERVFAIL", s.Err)
	}

	// Both fail: the last set is kept, with the failure of A.
	cur.Store(&mode{a: "", aaaa: "servfail"})
	s, _ = run.until(10*time.Second, "the failure of both", func(s Set) bool {
		var de *DNSError
		return errors.As(s.Err, &de) && de.Type == "A" && de.Reason == "REFUSED"
	})
	if !slices.Equal(s.Addrs, []string{"198.18.0.2:7420", "[2001:2::3]:7420"}) {
		t.Fatalf("set with both failing = %v, want the last good one", s.Addrs)
	}
}

// TestDNSOneFamilyFailingKeepsThePace: a server that always refuses AAAA
// does not put an A-only name into backoff: the A records' TTL still sets
// when the name is resolved again.
func TestDNSOneFamilyFailingKeepsThePace(t *testing.T) {
	t.Parallel()
	var a atomic.Pointer[string]
	first := "198.18.0.1"
	a.Store(&first)
	addr := fakeDNSBy(t, func(q dns.Question) (int, []dns.RR) {
		if q.Qtype != dns.TypeA {
			return dns.RcodeRefused, nil
		}
		r, err := dns.NewRR(q.Name + " 1 IN A " + *a.Load())
		if err != nil {
			t.Error(err)
			return dns.RcodeServerFailure, nil
		}
		return dns.RcodeSuccess, []dns.RR{r}
	})
	run := runResolver(t, "dns://"+addr+"/web.fleet.test:7420", Options{Refresh: time.Hour, MinRefresh: 100 * time.Millisecond, Timeout: time.Second})
	if s := run.next(10 * time.Second); !slices.Equal(s.Addrs, []string{"198.18.0.1:7420"}) {
		t.Fatalf("first set %v, %v", s.Addrs, s.Err)
	}
	// Long enough for a backoff from 100 ms to have grown past 3 s.
	time.Sleep(3500 * time.Millisecond) // the resolver's own pace is what is tested
	second := "198.18.0.2"
	a.Store(&second)
	changed := time.Now()
	_, at := run.until(10*time.Second, "the new A address", func(s Set) bool {
		return slices.Equal(s.Addrs, []string{"198.18.0.2:7420"})
	})
	if took := at.Sub(changed); took > 2*time.Second {
		t.Fatalf("the new A record came %v after the change, want within its TTL (1 s) and some slack", took)
	}
}
