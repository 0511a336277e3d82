package verify

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcppro/tcppro/server"
)

// ---------------------------------------------------------------------------
// dns-change

const (
	// dnsRefresh is the clients' refresh interval in dns-change (the
	// default is 30 s): a resolution at most this long after the last.
	dnsRefresh = 3 * time.Second
	// dnsTTL is the records' TTL: longer than dnsRefresh, so that the
	// refresh interval, not the TTL, sets the pace.
	dnsTTL = time.Minute
	// dnsSlack covers the lookup itself and the 20 ms poll of the
	// client's servers.
	dnsSlack = 500 * time.Millisecond
	// dnsBound is how soon after the records change a client must have
	// replaced its servers.
	dnsBound = dnsRefresh + dnsSlack
	// dnsDownFor is how long the DNS server stays stopped under load.
	dnsDownFor = 3 * dnsRefresh
	// fleetName is the name the fleet's servers are found under.
	fleetName = "svc." + fleetDomain
)

// dnsChange: four servers, a client that finds them through dnsmasq on its
// own host. The name first resolves to s1 and s2; the records are replaced
// by s3 and s4 under steady load; then dnsmasq is stopped.
func dnsChange(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(dnsBound), BaselineMS: -1,
		Metric: "time from the DNS server serving the new records to the client's servers being exactly the new ones"}
	f, err := env.newFleet(4, false)
	if err != nil {
		return r, err
	}
	for _, h := range f.servers {
		if _, _, err := env.startInProcServer(h.host, addr(netip.IPv4Unspecified(), servicePort), nil); err != nil {
			return r, err
		}
	}
	hostAddrs := func(hs ...*fleetHost) []netip.Addr {
		out := make([]netip.Addr, len(hs))
		for i, h := range hs {
			out[i] = h.addr().Addr()
		}
		return out
	}
	oldSet, newSet := f.servers[:2], f.servers[2:]
	dns, err := env.startDNS(ctx, f.client, fleetName, hostAddrs(oldSet...), dnsTTL)
	if err != nil {
		return r, err
	}
	ag, err := env.startAgent(f.client)
	if err != nil {
		return r, err
	}
	target := fmt.Sprintf("dns://127.0.0.1:53/%s:%d", fleetName, servicePort)
	if _, err := ag.newClientSpec(ctx, "c", clientSpec{Target: target, Refresh: dnsRefresh}); err != nil {
		return r, err
	}
	if _, _, err := waitEndpoints(ctx, ag, "c", 10*time.Second, func(eps []endpointState) bool {
		return sameAddrs(eps, f.addrs(oldSet...)) && allReady(eps)
	}); err != nil {
		return r, err
	}
	if _, err := ag.do(ctx, agentReq{Op: "load_start", Client: "c", Method: "echo", Body: "fleet", Workers: 4, Pace: 10 * time.Millisecond, Timeout: 2 * time.Second}); err != nil {
		return r, err
	}
	// A second of load on the first set, then the change.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	env.logf("replacing the records of %s: %v -> %v", fleetName, f.addrs(oldSet...), f.addrs(newSet...))
	tChange := mono()
	if err := dns.setHosts(fleetName, hostAddrs(newSet...)); err != nil {
		return r, err
	}
	// Timed from the moment dnsmasq serves the new records (it reloads
	// them on SIGHUP, a few milliseconds later).
	if err := servesA(ctx, f.client, fleetName, newSet[0].addr().Addr(), 5*time.Second); err != nil {
		return r, err
	}
	t0 := mono()
	var detail []string
	pass := true
	tFollow, eps, err := waitEndpoints(ctx, ag, "c", dnsBound+10*time.Second, func(eps []endpointState) bool { return sameAddrs(eps, f.addrs(newSet...)) })
	if err != nil {
		pass = false
		r.MeasuredMS = ms(dnsBound + 10*time.Second)
		detail = append(detail, fmt.Sprintf("the client did NOT follow the new records: %v", err))
	} else {
		d := since(t0, tFollow)
		r.MeasuredMS = ms(d)
		pass = pass && d <= dnsBound
		detail = append(detail, fmt.Sprintf("the client's servers were exactly the new records %s after dnsmasq served them (%s after the SIGHUP that reloaded them): %s (refresh interval %s, + %s for the lookup and the poll)",
			within(d, dnsBound), fmtDur(since(tChange, t0)), endpointsText(eps), fmtDur(dnsRefresh), fmtDur(dnsSlack)))
	}
	// The new servers carry the calls.
	before, _, err := ag.endpoints(ctx, "c")
	if err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	after, _, err := ag.endpoints(ctx, "c")
	if err != nil {
		return r, err
	}
	shares, n := callShares(before, after)
	carried := n > 0
	for _, a := range f.addrs(newSet...) {
		carried = carried && shares[a] > 0
	}
	pass = pass && carried
	detail = append(detail, fmt.Sprintf("the next second's %d calls went to %s", n, sharesText(shares)))

	env.logf("stopping the DNS server for %s under load", fmtDur(dnsDownFor))
	st0, err := ag.stats(ctx, "c")
	if err != nil {
		return r, err
	}
	if err := dns.stop(); err != nil {
		return r, err
	}
	down := mono()
	kept := true
	var lastEps []endpointState
	for since(down, mono()) < dnsDownFor {
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return r, err
		}
		if lastEps, _, err = ag.endpoints(ctx, "c"); err != nil {
			return r, err
		}
		kept = kept && sameAddrs(lastEps, f.addrs(newSet...))
	}
	st1, err := ag.stats(ctx, "c")
	if err != nil {
		return r, err
	}
	if kept {
		detail = append(detail, fmt.Sprintf("with the DNS server stopped for %s the client kept its last good set (%s); it took %d resolution result(s) meanwhile (the failure is reported, the set kept)",
			fmtDur(dnsDownFor), endpointsText(lastEps), st1.Resolutions-st0.Resolutions))
	} else {
		pass = false
		detail = append(detail, fmt.Sprintf("with the DNS server stopped the client's set CHANGED: %s", endpointsText(lastEps)))
	}
	resp, err := ag.do(ctx, agentReq{Op: "load_stop", Client: "c"})
	if err != nil {
		return r, err
	}
	l := resp.Load
	if l.failed() == 0 && l.Hung == 0 {
		detail = append(detail, fmt.Sprintf("0 failed calls of %d, through the change and the DNS outage", l.Calls))
	} else {
		pass = false
		detail = append(detail, fmt.Sprintf("%d of %d calls FAILED (%s), %d hung; untyped: %s", l.failed(), l.Calls, l.errorText(), l.Hung, strings.Join(l.Untyped, "; ")))
	}
	r.Measured = fmt.Sprintf("%s, %d/%d failed", fmtMS(r.MeasuredMS), l.failed(), l.Calls)
	r.Bound = fmt.Sprintf("<= %s, 0 failed", fmtDur(dnsBound))
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// subsetting

const (
	subsetServers = 20
	subsetClients = 100
	subsetSize    = 5
	// subsetMaxRatio bounds connections per server, max over min.
	subsetMaxRatio = 1.25
	// subsetBound is how long the clients get to connect.
	subsetBound = 10 * time.Second
)

// subsetting: 100 clients with consecutive subset ids, each connecting to
// 5 of 20 servers (one host each); every server must end up with about as
// many connections as every other.
func subsetting(ctx context.Context, env *Env) (Result, error) {
	r := Result{BaselineMS: -1, BoundMS: ms(subsetBound), Bound: fmt.Sprintf("max/min <= %.2f", subsetMaxRatio),
		Metric: "connections per server: the most loaded server's over the least loaded's (measured_ms: the time every client took to connect to its whole subset)"}
	f, err := env.newFleet(subsetServers, false)
	if err != nil {
		return r, err
	}
	srvs := make([]*server.Server, len(f.servers))
	for i, h := range f.servers {
		if srvs[i], _, err = env.startInProcServer(h.host, h.addr(), nil); err != nil {
			return r, err
		}
	}
	ag, err := env.startAgent(f.client)
	if err != nil {
		return r, err
	}
	start := mono()
	for id := 1; id <= subsetClients; id++ {
		name := fmt.Sprintf("c%d", id)
		if _, err := ag.newClientSpec(ctx, name, clientSpec{Addrs: f.addrs(), Subset: subsetSize, SubsetID: id}); err != nil {
			return r, err
		}
	}
	// Every client connected to its whole subset.
	for id := 1; id <= subsetClients; id++ {
		name := fmt.Sprintf("c%d", id)
		left := subsetBound - since(start, mono())
		if _, _, err := waitEndpoints(ctx, ag, name, max(left, 0), func(eps []endpointState) bool {
			return len(eps) == subsetSize && allReady(eps)
		}); err != nil {
			return r, err
		}
	}
	conns := make([]int64, len(srvs))
	lo, hi := int64(-1), int64(0)
	var total int64
	for i, s := range srvs {
		conns[i] = s.Stats().Active
		total += conns[i]
		hi = max(hi, conns[i])
		if lo < 0 || conns[i] < lo {
			lo = conns[i]
		}
	}
	var detail []string
	ratio := float64(hi) / float64(max(lo, 1))
	r.MeasuredMS = ms(since(start, mono()))
	r.Measured = fmt.Sprintf("%d..%d conns, %.2f", lo, hi, ratio)
	r.Pass = lo > 0 && ratio <= subsetMaxRatio && total == subsetClients*subsetSize
	detail = append(detail, fmt.Sprintf("%d clients with subset ids 1..%d, each connected to its %d of %d servers within %s: %d connections",
		subsetClients, subsetClients, subsetSize, subsetServers, fmtDur(since(start, mono())), total))
	detail = append(detail, fmt.Sprintf("connections per server: %v (min %d, max %d: max/min %.2f, bound %.2f)", conns, lo, hi, ratio, subsetMaxRatio))
	if total != subsetClients*subsetSize {
		detail = append(detail, fmt.Sprintf("the servers hold %d connections, want %d", total, subsetClients*subsetSize))
	}
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}
