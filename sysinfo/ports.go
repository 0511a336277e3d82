package sysinfo

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of TCP ports, such as the kernel's
// ephemeral range net.ipv4.ip_local_port_range.
type PortRange struct{ Lo, Hi int }

// Contains reports whether port lies in r (both ends included).
func (r PortRange) Contains(port int) bool { return port >= r.Lo && port <= r.Hi }

// Width is the number of ports in r; 0 for an empty or inverted range.
func (r PortRange) Width() int {
	if r.Hi < r.Lo {
		return 0
	}
	return r.Hi - r.Lo + 1
}

// String formats r the way ip_local_reserved_ports does: "8000-8010", or
// "9000" for a single port.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// PortSet is a list of port ranges, the format of
// net.ipv4.ip_local_reserved_ports ("8000-8010,9000").
type PortSet []PortRange

// Contains reports whether any range of s contains port.
func (s PortSet) Contains(port int) bool {
	for _, r := range s {
		if r.Contains(port) {
			return true
		}
	}
	return false
}

// String formats s as a sysctl value ("8000-8010,9000"); "" for an empty set.
func (s PortSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Add returns s with the given ports added, sorted and with adjacent or
// overlapping ranges merged. s itself is not modified.
func (s PortSet) Add(ports ...int) PortSet {
	all := append(PortSet(nil), s...)
	for _, p := range ports {
		all = append(all, PortRange{p, p})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Lo != all[j].Lo {
			return all[i].Lo < all[j].Lo
		}
		return all[i].Hi < all[j].Hi
	})
	var out PortSet
	for _, r := range all {
		if n := len(out); n > 0 && r.Lo <= out[n-1].Hi+1 {
			if r.Hi > out[n-1].Hi {
				out[n-1].Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// ParsePortSet parses a comma-separated list of ports and inclusive ranges
// ("8000-8010,9000"). Blank input is the empty set. Ports must lie in
// 0..65535 and ranges must not be inverted.
func ParsePortSet(s string) (PortSet, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return PortSet{}, nil
	}
	var set PortSet
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port set item %q: %w", item, err)
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port set item %q: %w", item, err)
			}
			if b < a {
				return nil, fmt.Errorf("port set item %q: inverted range", item)
			}
		}
		set = append(set, PortRange{a, b})
	}
	return set, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 0-65535", n)
	}
	return n, nil
}

// LocalPortRange reads net.ipv4.ip_local_port_range, the range the kernel
// picks ephemeral (client-side and port-0) ports from.
func (f FS) LocalPortRange() (PortRange, error) {
	const name = "net.ipv4.ip_local_port_range"
	v, err := f.SysctlInts(name, 2)
	if err != nil {
		return PortRange{}, err
	}
	r := PortRange{v[0], v[1]}
	if r.Lo < 0 || r.Hi > 65535 || r.Hi < r.Lo {
		return PortRange{}, f.malformed(sysctlPath(name), fmt.Sprintf("%d %d", v[0], v[1]), "not a valid port range")
	}
	return r, nil
}

// ReservedPorts reads net.ipv4.ip_local_reserved_ports, the ports the
// kernel never hands out as ephemeral ports. An empty file is the empty set.
func (f FS) ReservedPorts() (PortSet, error) {
	const name = "net.ipv4.ip_local_reserved_ports"
	s, err := f.Sysctl(name)
	if err != nil {
		return nil, err
	}
	set, err := ParsePortSet(s)
	if err != nil {
		return nil, f.malformed(sysctlPath(name), s, err.Error())
	}
	return set, nil
}
