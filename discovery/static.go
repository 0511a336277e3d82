package discovery

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
)

// static is the resolver of a fixed set of addresses: a static target, or
// a DNS name that is an IP literal.
type static struct {
	addrs []string
}

// newStatic parses "host:port,host:port": each address must split with
// net.SplitHostPort and have a port (a number in 1..65535 or a service
// name); spaces around addresses are ignored. The set is sorted and
// deduplicated. Host names are kept as given, for the dialler to resolve
// at each dial.
func newStatic(target string) (*static, error) {
	if strings.TrimSpace(target) == "" {
		return nil, badTarget(target, "empty: give host:port[,host:port...] or scheme://...")
	}
	parts := strings.Split(target, ",")
	addrs := make([]string, 0, len(parts))
	for i, p := range parts {
		a := strings.TrimSpace(p)
		if a == "" {
			return nil, badTarget(target, "address %d of %d is empty", i+1, len(parts))
		}
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, badTarget(target, "address %d %q: %v (want host:port)", i+1, a, err)
		}
		if why := checkPort(port, true); why != "" {
			return nil, badTarget(target, "address %d %q: %s", i+1, a, why)
		}
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	return &static{addrs: slices.Compact(addrs)}, nil
}

// checkPort returns why port is not a port number in 1..65535 (or, with
// named, a service name such as "http"), or "".
func checkPort(port string, named bool) string {
	if port == "" {
		return "missing port"
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err == nil && n > 0:
		return ""
	case err == nil || port[0] >= '0' && port[0] <= '9':
		return "port " + strconv.Quote(port) + " is not in 1..65535"
	case !named:
		return "port " + strconv.Quote(port) + " is not a number"
	}
	for i, c := range port {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-')) {
			return "port " + strconv.Quote(port) + " is neither a number nor a service name"
		}
	}
	return ""
}

// Run reports the set once and waits for ctx to end.
func (s *static) Run(ctx context.Context, update func(Set)) {
	update(Set{Addrs: slices.Clone(s.addrs)})
	<-ctx.Done()
}

// ResolveNow does nothing: the set never changes.
func (s *static) ResolveNow() {}
