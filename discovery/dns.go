package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

func init() {
	Register("dns", func(rest string, o Options) (Resolver, error) { return newDNS("dns", rest, o) })
	Register("dns+srv", func(rest string, o Options) (Resolver, error) { return newDNS("dns+srv", rest, o) })
}

// systemResolvConf is where the system's DNS servers are read from, at
// each resolution of a target without RESOLVER.
const systemResolvConf = "/etc/resolv.conf"

// dnsResolver resolves a DNS name: its A and AAAA records with a fixed
// port, or its SRV records.
type dnsResolver struct {
	opts       Options
	name       string // fully qualified
	port       string // of every address; "" for SRV
	srv        bool
	server     string // the DNS server to ask (host:port); "" for the system's
	resolvConf string // where the system's servers are read from
	now        chan struct{}
}

// newDNS parses the rest of "dns://[RESOLVER]/name:port" or
// "dns+srv://[RESOLVER]/name". A dns name that is an IP literal resolves
// to itself (a static resolver).
func newDNS(scheme, rest string, o Options) (Resolver, error) {
	target := scheme + "://" + rest
	srv := scheme == "dns+srv"
	form := "name:port"
	if srv {
		form = "_service._proto.name"
	}
	authority, path, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, badTarget(target, "no name: write %s:///%s (three slashes), or %s://RESOLVER/%s to ask the DNS server RESOLVER", scheme, form, scheme, form)
	}
	r := &dnsResolver{opts: o, srv: srv, resolvConf: systemResolvConf, now: make(chan struct{}, 1)}
	if authority != "" {
		server, why := parseServer(authority)
		if why != "" {
			return nil, badTarget(target, "RESOLVER %q: %s (want the host:port of a DNS server)", authority, why)
		}
		r.server = server
	}
	if path == "" {
		return nil, badTarget(target, "no name after the slash: want %s://%s/%s", scheme, authority, form)
	}
	host := path
	if srv {
		if strings.Contains(path, ":") {
			return nil, badTarget(target, "%q: an SRV name takes no port (the SRV records carry the ports)", path)
		}
		if _, err := netip.ParseAddr(path); err == nil {
			return nil, badTarget(target, "%q is an address, not an SRV name", path)
		}
	} else {
		var port string
		var err error
		if host, port, err = net.SplitHostPort(path); err != nil {
			return nil, badTarget(target, "%q: %v (want %s)", path, err, form)
		}
		if why := checkPort(port, false); why != "" {
			return nil, badTarget(target, "%q: %s", path, why)
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return &static{addrs: []string{net.JoinHostPort(host, port)}}, nil
		}
		r.port = port
	}
	if why := checkName(host); why != "" {
		return nil, badTarget(target, "name %q: %s", host, why)
	}
	r.name = strings.ToLower(strings.TrimSuffix(host, ".")) + "."
	return r, nil
}

// parseServer returns the host:port of a RESOLVER given as host:port, or
// as a host (port 53), or why it is neither.
func parseServer(a string) (string, string) {
	if host, port, err := net.SplitHostPort(a); err == nil {
		if host == "" {
			return "", "no host"
		}
		return a, checkPort(port, false)
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return net.JoinHostPort(a, "53"), ""
	}
	if why := checkName(a); why != "" {
		return "", why
	}
	return net.JoinHostPort(a, "53"), ""
}

// checkName returns why name is not a DNS name (labels of letters, digits,
// '-' and '_', each 1 to 63 long, 253 in all, an optional final dot), or
// "".
func checkName(name string) string {
	name = strings.TrimSuffix(name, ".")
	switch {
	case name == "":
		return "empty"
	case len(name) > 253:
		return "longer than 253 characters"
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return "empty label"
		case len(label) > 63:
			return "label " + label + " is longer than 63 characters"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "character " + string(c) + " in label " + label + " (want letters, digits, '-', '_')"
			}
		}
	}
	return ""
}

// ResolveNow asks for a resolution at once, or as soon as MinRefresh has
// passed since the last one ended; while lookups back off after failures,
// the backoff wins.
func (r *dnsResolver) ResolveNow() {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Run resolves the name until ctx ends (see Options for the timing).
func (r *dnsResolver) Run(ctx context.Context, update func(Set)) {
	var (
		last     Set
		reported bool
		good     []string // the last good addresses
		failures int      // consecutive failed resolutions
		timer    = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		select {
		case <-r.now: // asked before this resolution: it answers that
		default:
		}
		addrs, ttl, err := r.resolve(ctx)
		if ctx.Err() != nil {
			return
		}
		done := time.Now()
		var set Set
		var wait time.Duration
		var fe *familyError
		// pace is the wait after an answer: Refresh, or the TTL when
		// shorter (never below MinRefresh).
		pace := func() time.Duration {
			if ttl < r.opts.Refresh {
				return max(ttl, r.opts.MinRefresh)
			}
			return r.opts.Refresh
		}
		switch {
		case err == nil:
			good, failures = addrs, 0
			set = Set{Addrs: addrs}
			wait = pace()
		case errors.As(err, &fe):
			// One family answered: take it, keep the other's last good
			// addresses, and go on at the answered family's pace (its
			// TTL, ResolveNow): a server that always refuses AAAA must
			// not keep an A-only name in backoff. The failure is
			// reported.
			merged := append(addrs, ofFamily(good, fe.v6)...)
			slices.Sort(merged)
			if merged = slices.Compact(merged); len(merged) > 0 {
				good = merged
			}
			failures = 0
			set = Set{Addrs: good, Err: fe.err}
			wait = pace()
		default:
			set = Set{Addrs: good, Err: err}
			wait = backoff(r.opts, failures)
			failures++
		}
		if !reported || !sameSet(last, set) {
			last, reported = set, true
			update(Set{Addrs: slices.Clone(set.Addrs), Err: set.Err})
		}
		// Timers (Go 1.23 on) drop a stale expiry on Reset.
		next := done.Add(wait)
		timer.Reset(wait)
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				waiting = false
			case <-r.now:
				if soonest := done.Add(r.opts.MinRefresh); failures == 0 && soonest.Before(next) {
					next = soonest
					timer.Reset(time.Until(next))
				}
			}
		}
	}
}

// backoff is the wait after the (failures+1)-th failed resolution in a
// row: MinRefresh doubling up to Refresh, jittered by ±20%, never below
// MinRefresh.
func backoff(o Options, failures int) time.Duration {
	d := o.MinRefresh
	for i := 0; i < failures && d < o.Refresh; i++ {
		d *= 2
	}
	d = min(d, o.Refresh)
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return max(d, o.MinRefresh)
}

// sameSet reports whether two sets have the same addresses and errors
// with the same text.
func sameSet(a, b Set) bool {
	if !slices.Equal(a.Addrs, b.Addrs) || (a.Err == nil) != (b.Err == nil) {
		return false
	}
	return a.Err == nil || a.Err.Error() == b.Err.Error()
}

// resolve looks the name up once, within Options.Timeout: the sorted,
// deduplicated addresses and the smallest TTL of the records used.
func (r *dnsResolver) resolve(ctx context.Context) ([]string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	q := &querier{servers: []string{r.server}, try: r.opts.Timeout / 3}
	if r.server == "" {
		q.servers, q.config = systemServers(r.resolvConf)
	}
	var addrs []string
	var ttl uint32
	var err error
	if r.srv {
		addrs, ttl, err = q.lookupSRV(ctx, r.name)
	} else {
		var ips []netip.Addr
		ips, ttl, err = q.lookupIPs(ctx, r.name)
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip.String(), r.port))
		}
	}
	var fe *familyError
	if err != nil && !errors.As(err, &fe) {
		return nil, 0, err
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), time.Duration(ttl) * time.Second, err
}

// ofFamily returns the addresses of addrs (host:port) that are IPv6 when
// v6 is set, IPv4 otherwise.
func ofFamily(addrs []string, v6 bool) []string {
	var out []string
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil && ap.Addr().Unmap().Is6() == v6 {
			out = append(out, a)
		}
	}
	return out
}
