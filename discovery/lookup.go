package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DNSError is the Err of a Set when a DNS resolution failed (the Set
// keeps the last good addresses). Its text is stable across attempts that
// fail the same way, so that a resolver reports a failure once.
type DNSError struct {
	Name   string // the name looked up, fully qualified
	Type   string // the records looked up: "A", "AAAA", "A/AAAA", "SRV"
	Server string // the DNS server asked last (host:port)
	// Reason is "timeout", "SERVFAIL", "REFUSED" (or another response
	// code), "NXDOMAIN", "no records", "no SRV target has addresses", or
	// the failure of the exchange ("connection refused", ...).
	Reason string
	// NotFound says that the name, or every SRV target, has no such
	// records: NXDOMAIN or an empty answer.
	NotFound bool
	// Err is the failure of the exchange with the server, or nil.
	Err error
	// Config is why the system's DNS servers could not be read from
	// /etc/resolv.conf, when 127.0.0.1:53 was asked instead; or nil.
	Config error
}

func (e *DNSError) Error() string {
	s := fmt.Sprintf("discovery: dns: lookup %s %s at %s: %s", e.Type, e.Name, e.Server, e.Reason)
	if e.Config != nil {
		s += fmt.Sprintf(" (the system's DNS servers are unknown: %v)", e.Config)
	}
	return s
}

// Unwrap returns Err and Config.
func (e *DNSError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Err, e.Config} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// fallbackServer is asked when the system's DNS servers cannot be read.
const fallbackServer = "127.0.0.1:53"

// systemServers reads the DNS servers (host:53) of a resolv.conf file; when
// that fails, the answer is fallbackServer and why.
func systemServers(path string) ([]string, error) {
	conf, err := dns.ClientConfigFromFile(path)
	if err == nil && len(conf.Servers) == 0 {
		err = fmt.Errorf("%s lists no nameserver", path)
	}
	if err != nil {
		return []string{fallbackServer}, err
	}
	servers := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		servers[i] = net.JoinHostPort(s, conf.Port)
	}
	return servers, nil
}

// querier asks DNS servers: each query goes to the servers in turn, each
// try bounded by try; a timeout is tried again (3 tries in all, or one per
// server if there are more), any other failure only on another server.
type querier struct {
	servers []string
	config  error // why servers is the fallback
	try     time.Duration
}

// maxCNAMEs bounds the chain of aliases followed from a name.
const maxCNAMEs = 8

// udpSize is the EDNS0 buffer size offered (the DNS flag day 2020 value);
// a truncated answer is asked again over TCP.
const udpSize = 1232

// lookup returns the records of type qtype of name, following CNAMEs, and
// the smallest TTL of the records used, or a *DNSError.
func (q *querier) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, uint32, error) {
	ttl := ^uint32(0)
	for range maxCNAMEs {
		resp, server, err := q.query(ctx, name, qtype)
		if err != nil {
			return nil, 0, err
		}
		// Follow the aliases of name within the answer.
		owner := name
		for range maxCNAMEs {
			var next string
			for _, rr := range resp.Answer {
				if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
					next, ttl = c.Target, min(ttl, c.Hdr.Ttl)
					break
				}
			}
			if next == "" {
				break
			}
			owner = next
		}
		var rrs []dns.RR
		for _, rr := range resp.Answer {
			if h := rr.Header(); h.Rrtype == qtype && strings.EqualFold(h.Name, owner) {
				rrs, ttl = append(rrs, rr), min(ttl, h.Ttl)
			}
		}
		if len(rrs) > 0 {
			return rrs, ttl, nil
		}
		if owner == name {
			return nil, 0, q.fail(name, qtype, server, "no records", nil)
		}
		name = owner // an alias the server did not follow: ask for it
	}
	return nil, 0, q.fail(name, qtype, q.servers[0], "more than 8 CNAMEs", nil)
}

// query sends one question, with the tries described on querier, and
// returns an answer with NOERROR and the server that gave it, or a
// *DNSError.
func (q *querier) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.SetEdns0(udpSize, false)
	tries := max(3, len(q.servers))
	var failed error
	for i := 0; i < tries && ctx.Err() == nil; i++ {
		server := q.servers[i%len(q.servers)]
		resp, err := q.exchange(ctx, server, m)
		switch {
		case err != nil:
			reason := exchangeFailure(err)
			failed = q.fail(name, qtype, server, reason, err)
			if reason != "timeout" && i+1 >= len(q.servers) {
				return nil, "", failed
			}
		case resp.Rcode == dns.RcodeSuccess:
			return resp, server, nil
		case resp.Rcode == dns.RcodeNameError:
			return nil, "", q.fail(name, qtype, server, "NXDOMAIN", nil)
		default:
			reason := dns.RcodeToString[resp.Rcode]
			if reason == "" {
				reason = fmt.Sprintf("response code %d", resp.Rcode)
			}
			failed = q.fail(name, qtype, server, reason, nil)
			if i+1 >= len(q.servers) {
				return nil, "", failed
			}
		}
	}
	if failed == nil {
		failed = q.fail(name, qtype, q.servers[0], "timeout", ctx.Err())
	}
	return nil, "", failed
}

// fail makes the *DNSError of a query.
func (q *querier) fail(name string, qtype uint16, server, reason string, err error) *DNSError {
	return &DNSError{
		Name: name, Type: dns.TypeToString[qtype], Server: server, Reason: reason,
		NotFound: reason == "NXDOMAIN" || reason == "no records",
		Err:      err, Config: q.config,
	}
}

// exchangeFailure names the failure of an exchange in words that do not
// change from one attempt to the next (no local port).
func exchangeFailure(err error) string {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}

// exchange asks server within q.try: over UDP, and again over TCP if the
// answer was truncated.
func (q *querier) exchange(ctx context.Context, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, q.try)
	defer cancel()
	resp, err := exchangeOver(ctx, "udp", server, m)
	if err == nil && resp.Truncated {
		resp, err = exchangeOver(ctx, "tcp", server, m)
	}
	return resp, err
}

// exchangeOver sends m to server over network and reads the answer, until
// ctx ends (its deadline bounds the exchange; its cancellation closes the
// connection).
func exchangeOver(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, UDPSize: udpSize}
	if d, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(d)
	}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.Close()
		close(closed)
	})
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return resp, err
}

// ipsOf is the result of a lookup of A or AAAA records.
type ipsOf struct {
	ips []netip.Addr
	ttl uint32
	err error
}

// lookupIPs returns the addresses of name (its A and AAAA records, asked
// at once) and their smallest TTL. When both lookups fail, the first
// failure is returned; when one fails and the other answered, the answered
// family's addresses are returned with a *familyError; a name without
// records of either family is a *DNSError with NotFound.
func (q *querier) lookupIPs(ctx context.Context, name string) ([]netip.Addr, uint32, error) {
	var res [2]ipsOf
	var wg sync.WaitGroup
	for i, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Go(func() {
			rrs, ttl, err := q.lookup(ctx, name, qtype)
			res[i] = ipsOf{ttl: ttl, err: err}
			for _, rr := range rrs {
				var ip net.IP
				switch rr := rr.(type) {
				case *dns.A:
					ip = rr.A
				case *dns.AAAA:
					ip = rr.AAAA
				}
				if a, ok := netip.AddrFromSlice(ip); ok {
					res[i].ips = append(res[i].ips, a.Unmap())
				}
			}
		})
	}
	wg.Wait()
	var ips []netip.Addr
	ttl := ^uint32(0)
	var notFound *DNSError
	var failed *familyError
	for i, r := range res {
		var de *DNSError
		switch {
		case r.err == nil:
			ips, ttl = append(ips, r.ips...), min(ttl, r.ttl)
		case errors.As(r.err, &de) && de.NotFound:
			if notFound == nil || de.Reason == "NXDOMAIN" {
				notFound = de
			}
		case failed != nil:
			return nil, 0, failed.err // both failed: the first failure
		default:
			failed = &familyError{v6: i == 1, err: r.err}
		}
	}
	if failed != nil {
		return ips, ttl, failed
	}
	if len(ips) == 0 {
		if notFound == nil { // records, but none a valid address
			notFound = q.fail(name, dns.TypeA, q.servers[0], "no records", nil)
		}
		e := *notFound
		e.Type = "A/AAAA"
		return nil, 0, &e
	}
	return ips, ttl, nil
}

// familyError is the failure of one of a name's A and AAAA lookups while
// the other answered (with records or without): lookupIPs returns the
// answered family's addresses with it.
type familyError struct {
	v6  bool  // the AAAA lookup failed; else the A lookup
	err error // its *DNSError
}

func (e *familyError) Error() string { return e.err.Error() }
func (e *familyError) Unwrap() error { return e.err }

// srvParallel bounds the SRV targets looked up at once.
const srvParallel = 8

// lookupSRV returns the addresses of the SRV records of name (each
// target's A and AAAA records with the record's port; priority and weight
// are not used: every target is a server) and their smallest TTL. A
// target without addresses is left out; any other failure fails the
// whole.
func (q *querier) lookupSRV(ctx context.Context, name string) ([]string, uint32, error) {
	rrs, ttl, err := q.lookup(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	ports := map[string][]uint16{} // by target
	var targets []string
	for _, rr := range rrs {
		s := rr.(*dns.SRV)
		t := strings.ToLower(s.Target)
		if t == "." {
			continue // "no service here" (RFC 2782)
		}
		if ports[t] == nil {
			targets = append(targets, t)
		}
		ports[t] = append(ports[t], s.Port)
	}
	res := make([]ipsOf, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, srvParallel)
	for i, t := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ips, ttl, err := q.lookupIPs(ctx, t)
			res[i] = ipsOf{ips, ttl, err}
		})
	}
	wg.Wait()
	var addrs []string
	for i, r := range res {
		var de *DNSError
		switch {
		case r.err == nil:
			ttl = min(ttl, r.ttl)
			for _, ip := range r.ips {
				for _, p := range ports[targets[i]] {
					addrs = append(addrs, netip.AddrPortFrom(ip, p).String())
				}
			}
		case errors.As(r.err, &de) && de.NotFound:
		default:
			var fe *familyError
			if errors.As(r.err, &fe) {
				return nil, 0, fe.err // a target half known fails the whole too
			}
			return nil, 0, r.err
		}
	}
	if len(addrs) == 0 {
		e := q.fail(name, dns.TypeSRV, q.servers[0], "no SRV target has addresses", nil)
		e.NotFound = true
		return nil, 0, e
	}
	return addrs, ttl, nil
}
