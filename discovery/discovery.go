// Package discovery turns a target — the name of a set of servers — into
// the addresses of the servers, and keeps them current for as long as a
// client runs: names are re-resolved periodically and when connections to
// them fail, never once for ever (design practice 11).
//
// A target selects its resolver by scheme:
//
//	host:port,host:port           static: the addresses given
//	dns:///name:port              DNS A/AAAA records of name, each with port
//	dns://RESOLVER/name:port      the same, asking the DNS server RESOLVER (host:port, or host for port 53)
//	dns+srv:///_service._tcp.name DNS SRV records (their targets' A/AAAA records, with the SRV ports)
//	dns+srv://RESOLVER/_service._tcp.name
//
// SRV priorities and weights are not used: every target is a server (the
// client balances by load), and a target without addresses is left out.
// Static addresses are passed through as given: a host name in them is
// resolved by the dialler at each dial. A DNS name is looked up with the
// system's DNS servers (/etc/resolv.conf) or RESOLVER, as given (fully
// qualified: the search list is not applied); a name that is an IP literal
// is its own address, without DNS. Names are resolved again every
// Options.Refresh, sooner when an answer's TTL is shorter, and soon after
// ResolveNow; when a lookup fails (timeout, SERVFAIL, REFUSED, NXDOMAIN,
// no records) the last good addresses are kept, the failure is reported
// in Set.Err (a *DNSError), and lookups back off. When only one of a
// name's A and AAAA lookups fails (a server that refuses or drops AAAA
// queries), the other's answer is taken and the failed family's last good
// addresses are kept: the set is reported with the failure in Set.Err, and
// resolutions go on at the answered family's pace. (A dns+srv target with
// one family failing fails the whole resolution, as any target failure
// does.)
//
// Other schemes (etcd) live in packages of their own, which register
// themselves with Register, so that programs not using them do not link
// them.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Set is one resolution of a target: the addresses (host:port, sorted,
// without duplicates) of its servers. When a resolution fails, the
// resolver keeps the last good addresses and reports the failure in Err.
type Set struct {
	Addrs []string
	Err   error
}

// Resolver resolves a target into sets of addresses for as long as it runs.
type Resolver interface {
	// Run resolves until ctx ends, calling update with each set that
	// differs from the last one in its addresses or its error (never
	// concurrently; the first call as soon as a first resolution has
	// succeeded or failed). It returns when ctx ends, and leaves no
	// goroutine behind. A resolver is run once.
	Run(ctx context.Context, update func(Set))
	// ResolveNow asks for a new resolution soon: connections to the
	// addresses fail. Resolvers rate-limit it (DNS: at most one
	// resolution per Options.MinRefresh, and none sooner than the
	// backoff after failed lookups allows). It never blocks, and may be
	// called at any time, before Run, during it, or after it returned.
	ResolveNow()
}

// Options configure the resolvers. Zero fields take the documented
// defaults; negative ones, and a MinRefresh longer than Refresh, are
// refused by New (ErrBadOptions).
//
// After a failed resolution the next one waits a backoff instead of
// Refresh: MinRefresh, doubling after each further failure up to Refresh,
// each delay jittered by ±20% (never below MinRefresh). Failed
// resolutions keep the last good set.
type Options struct {
	// Refresh is how often a name is resolved again. Default 30s; a DNS
	// answer's TTL shortens it (never below MinRefresh).
	Refresh time.Duration
	// MinRefresh is the shortest time between the end of one resolution
	// of a name and the start of the next, also when ResolveNow asks for
	// one or a TTL is shorter. Default 1s, or Refresh if that is shorter.
	MinRefresh time.Duration
	// Timeout bounds each resolution: the DNS exchanges it needs, with
	// their retries (UDP queries are retried after a third of Timeout,
	// going through the DNS servers in turn). Default 5s.
	Timeout time.Duration
}

// Defaults, as documented on Options.
const (
	DefaultRefresh    = 30 * time.Second
	DefaultMinRefresh = time.Second
	DefaultTimeout    = 5 * time.Second
)

// Builder makes the resolver of a target with its scheme: rest is what
// follows "scheme://", and opts have their defaults filled in. Its errors
// about rest wrap ErrBadTarget.
type Builder func(rest string, opts Options) (Resolver, error)

// ErrBadTarget matches (errors.Is) every error of New about the target's
// form.
var ErrBadTarget = errors.New("discovery: bad target")

// ErrBadOptions matches (errors.Is) every error of New about Options.
var ErrBadOptions = errors.New("discovery: bad options")

// badTarget is an error of New about target, wrapping ErrBadTarget.
func badTarget(target, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrBadTarget, target, fmt.Sprintf(format, args...))
}

var (
	buildersMu sync.RWMutex
	builders   = map[string]Builder{}
)

// Register makes New use b for targets with the given scheme. It panics on
// a scheme registered twice.
func Register(scheme string, b Builder) {
	buildersMu.Lock()
	defer buildersMu.Unlock()
	if _, dup := builders[scheme]; dup {
		panic("discovery: scheme " + scheme + " registered twice")
	}
	builders[scheme] = b
}

// New returns the resolver of target (see the package comment).
func New(target string, opts Options) (Resolver, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok {
		return newStatic(target)
	}
	buildersMu.RLock()
	b := builders[scheme]
	buildersMu.RUnlock()
	if b == nil {
		return nil, badTarget(target, "unknown scheme %q (known: static host:port,...; dns; dns+srv; and those registered)", scheme)
	}
	return b(rest, opts.withDefaults())
}

func (o Options) withDefaults() Options {
	if o.Refresh == 0 {
		o.Refresh = DefaultRefresh
	}
	if o.MinRefresh == 0 {
		o.MinRefresh = min(DefaultMinRefresh, o.Refresh)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

func (o Options) validate() error {
	bad := func(field string, v time.Duration, why string) error {
		return fmt.Errorf("%w: %s %v %s", ErrBadOptions, field, v, why)
	}
	switch {
	case o.Refresh < 0:
		return bad("Refresh", o.Refresh, "must not be negative")
	case o.MinRefresh < 0:
		return bad("MinRefresh", o.MinRefresh, "must not be negative")
	case o.Timeout < 0:
		return bad("Timeout", o.Timeout, "must not be negative")
	}
	if o = o.withDefaults(); o.MinRefresh > o.Refresh {
		return bad("MinRefresh", o.MinRefresh, fmt.Sprintf("must not exceed Refresh (%v)", o.Refresh))
	}
	return nil
}
