package discovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStaticTargets(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"127.0.0.1:7420", []string{"127.0.0.1:7420"}},
		{"b.example:7420,a.example:7420", []string{"a.example:7420", "b.example:7420"}},
		{"a:1, b:2 ,a:1,a:1", []string{"a:1", "b:2"}},
		{"[::1]:7420,127.0.0.1:7420", []string{"127.0.0.1:7420", "[::1]:7420"}},
		{"[fe80::1%eth0]:7420", []string{"[fe80::1%eth0]:7420"}},
		{"host.example:http", []string{"host.example:http"}},
		{":7420", []string{":7420"}},
		{"Host.Example:65535", []string{"Host.Example:65535"}},
	} {
		r, err := New(tc.target, Options{})
		if err != nil {
			t.Errorf("New(%q): %v", tc.target, err)
			continue
		}
		if got := runOnce(t, r); !slices.Equal(got.Addrs, tc.want) || got.Err != nil {
			t.Errorf("New(%q) resolves to %v, %v; want %v", tc.target, got.Addrs, got.Err, tc.want)
		}
	}
}

// runOnce runs r until its first set, and stops it.
func runOnce(t *testing.T, r Resolver) Set {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sets := make(chan Set, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(s Set) {
			select {
			case sets <- s:
			default:
				t.Errorf("a second set %v before the run was stopped", s)
			}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case s := <-sets:
		r.ResolveNow() // does nothing for a fixed set; never blocks
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no set within 10s")
		return Set{}
	}
}

func TestStaticRunReportsOnceAndWaitsForTheEnd(t *testing.T) {
	r, err := New("a:1,b:2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.ResolveNow() // before Run: never blocks
	ctx, cancel := context.WithCancel(context.Background())
	var sets []Set
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(s Set) { sets = append(sets, s) })
	}()
	r.ResolveNow()
	r.ResolveNow()
	select {
	case <-done:
		t.Fatal("Run returned before its context ended")
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context ended")
	}
	if len(sets) != 1 || !slices.Equal(sets[0].Addrs, []string{"a:1", "b:2"}) {
		t.Fatalf("sets = %v, want one set [a:1 b:2]", sets)
	}
}

func TestBadTargets(t *testing.T) {
	for _, tc := range []struct {
		target string
		says   string // a part of the error
	}{
		{"", "empty"},
		{"  ", "empty"},
		{"a:1,", "address 2 of 2 is empty"},
		{"a:1,,b:2", "address 2 of 3 is empty"},
		{"no-port", `address 1 "no-port"`},
		{"a:1,no-port", `address 2 "no-port"`},
		{"a:", "missing port"},
		{"a:0", `port "0" is not in 1..65535`},
		{"a:65536", `port "65536" is not in 1..65535`},
		{"a:-1", `port "-1" is neither a number nor a service name`},
		{"a:1:2", "too many colons"},
		{"[::1:80", "missing ']'"},
		{"ftp://x", `unknown scheme "ftp"`},
		{"dns://web.fleet.test:80", "three slashes"},
		{"dns:///", "no name after the slash"},
		{"dns://127.0.0.1:53/", "no name after the slash"},
		{"dns:///web.fleet.test", "missing port"},
		{"dns:///web.fleet.test:", "missing port"},
		{"dns:///web.fleet.test:0", "not in 1..65535"},
		{"dns:///web.fleet.test:http", "not a number"},
		{"dns:///web fleet.test:80", "character"},
		{"dns:///web..test:80", "empty label"},
		{"dns:///" + strings.Repeat("a", 64) + ".test:80", "longer than 63"},
		{"dns:///" + strings.Repeat("abcdefgh.", 29) + "test:80", "longer than 253"},
		{"dns://:53/web.fleet.test:80", `RESOLVER ":53": no host`},
		{"dns://127.0.0.1:0/web.fleet.test:80", `RESOLVER "127.0.0.1:0"`},
		{"dns://bad host/web.fleet.test:80", `RESOLVER "bad host"`},
		{"dns+srv://_tcppro._tcp.fleet.test", "three slashes"},
		{"dns+srv:///", "no name after the slash"},
		{"dns+srv:///_tcppro._tcp.fleet.test:7420", "takes no port"},
		{"dns+srv:///198.18.0.1", "is an address"},
		{"dns+srv:///_a._tcp.fleet.test/x", "character /"},
	} {
		_, err := New(tc.target, Options{})
		switch {
		case err == nil:
			t.Errorf("New(%q) accepted", tc.target)
		case !errors.Is(err, ErrBadTarget):
			t.Errorf("New(%q) = %v, not an ErrBadTarget", tc.target, err)
		case !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.target):
			t.Errorf("New(%q) = %q, want it to name the target and say %q", tc.target, err, tc.says)
		}
	}
}

func TestDNSTargets(t *testing.T) {
	for _, tc := range []struct {
		target, server, name, port string
		srv                        bool
	}{
		{"dns:///web.fleet.test:7420", "", "web.fleet.test.", "7420", false},
		{"dns:///Web.Fleet.Test.:7420", "", "web.fleet.test.", "7420", false},
		{"dns://127.0.0.1:5353/web.fleet.test:7420", "127.0.0.1:5353", "web.fleet.test.", "7420", false},
		{"dns://127.0.0.1/web.fleet.test:7420", "127.0.0.1:53", "web.fleet.test.", "7420", false},
		{"dns://[::1]:5353/web.fleet.test:7420", "[::1]:5353", "web.fleet.test.", "7420", false},
		{"dns://::1/web.fleet.test:7420", "[::1]:53", "web.fleet.test.", "7420", false},
		{"dns://ns.fleet.test/web:1", "ns.fleet.test:53", "web.", "1", false},
		{"dns+srv:///_tcppro._tcp.fleet.test", "", "_tcppro._tcp.fleet.test.", "", true},
		{"dns+srv://127.0.0.1:5353/_tcppro._tcp.fleet.test.", "127.0.0.1:5353", "_tcppro._tcp.fleet.test.", "", true},
	} {
		r, err := New(tc.target, Options{})
		if err != nil {
			t.Errorf("New(%q): %v", tc.target, err)
			continue
		}
		d, ok := r.(*dnsResolver)
		if !ok {
			t.Errorf("New(%q) = %T, want a DNS resolver", tc.target, r)
			continue
		}
		if d.server != tc.server || d.name != tc.name || d.port != tc.port || d.srv != tc.srv {
			t.Errorf("New(%q) = server %q name %q port %q srv %v; want %q %q %q %v",
				tc.target, d.server, d.name, d.port, d.srv, tc.server, tc.name, tc.port, tc.srv)
		}
	}
}

func TestDNSTargetOfAnIPLiteralResolvesToItself(t *testing.T) {
	for target, want := range map[string]string{
		"dns:///198.18.0.1:7420":                "198.18.0.1:7420",
		"dns:///[::1]:7420":                     "[::1]:7420",
		"dns://127.0.0.1:1/[2001:2::1]:7420":    "[2001:2::1]:7420",
		"dns:///[fe80::1%eth0]:7420":            "[fe80::1%eth0]:7420",
		"dns://203.0.113.1:53/198.18.0.2:65535": "198.18.0.2:65535",
	} {
		r, err := New(target, Options{})
		if err != nil {
			t.Errorf("New(%q): %v", target, err)
			continue
		}
		if _, ok := r.(*static); !ok {
			t.Errorf("New(%q) = %T, want a fixed set without DNS", target, r)
		}
		if got := runOnce(t, r); !slices.Equal(got.Addrs, []string{want}) || got.Err != nil {
			t.Errorf("New(%q) resolves to %v, %v; want [%s]", target, got.Addrs, got.Err, want)
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		says string
	}{
		{Options{Refresh: -time.Second}, "Refresh"},
		{Options{MinRefresh: -time.Second}, "MinRefresh"},
		{Options{Timeout: -time.Second}, "Timeout"},
		{Options{Refresh: time.Second, MinRefresh: 2 * time.Second}, "must not exceed Refresh"},
		{Options{MinRefresh: time.Minute}, "must not exceed Refresh (30s)"},
	} {
		_, err := New("dns:///web.fleet.test:7420", tc.opts)
		if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("New with %+v = %v, want an ErrBadOptions saying %q", tc.opts, err, tc.says)
		}
	}
}

func TestOptionDefaults(t *testing.T) {
	for _, tc := range []struct{ in, want Options }{
		{Options{}, Options{Refresh: 30 * time.Second, MinRefresh: time.Second, Timeout: 5 * time.Second}},
		{Options{Refresh: 200 * time.Millisecond}, Options{Refresh: 200 * time.Millisecond, MinRefresh: 200 * time.Millisecond, Timeout: 5 * time.Second}},
		{Options{MinRefresh: 5 * time.Second, Timeout: time.Second}, Options{Refresh: 30 * time.Second, MinRefresh: 5 * time.Second, Timeout: time.Second}},
	} {
		r, err := New("dns:///web.fleet.test:7420", tc.in)
		if err != nil {
			t.Fatalf("New with %+v: %v", tc.in, err)
		}
		if got := r.(*dnsResolver).opts; got != tc.want {
			t.Errorf("Options %+v resolve with %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestBackoffDoublesFromMinRefreshToRefreshJittered(t *testing.T) {
	o := Options{Refresh: 10 * time.Second, MinRefresh: 100 * time.Millisecond}
	for failures, nominal := range []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000} {
		nominal *= time.Millisecond
		lo, hi := max(nominal*8/10, o.MinRefresh), nominal*12/10
		for range 100 {
			if d := backoff(o, failures); d < lo || d > hi {
				t.Fatalf("backoff after %d failures = %v, want within [%v, %v]", failures+1, d, lo, hi)
			}
		}
	}
	if d := backoff(o, 1000); d > 12*time.Second {
		t.Fatalf("backoff after many failures = %v, want at most 1.2 × Refresh", d)
	}
}
