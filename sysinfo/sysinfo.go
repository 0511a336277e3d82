// Package sysinfo reads the Linux state that decides how TCP services
// behave: networking sysctls (port ranges, reserved ports, retry counts,
// keepalive, queue limits, buffer sizes), the TCP socket tables for IPv4 and
// IPv6 with states and queue lengths, the kernel's TCP counters, and which
// process owns each socket together with its open-file limit.
//
// Everything is read from an FS, a root directory laid out like / (so
// proc/sys/net/..., proc/net/..., proc/PID/...). Host() is the live machine;
// tests point Root at a fixture tree. Nothing here judges what it reads:
// that is package doctor's job.
//
// Errors wrap the path they concern: a missing file satisfies
// errors.Is(err, fs.ErrNotExist), and a file whose content cannot be parsed
// yields a *MalformedError (errors.Is(err, ErrMalformed)) naming the file
// and the offending content.
package sysinfo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FS is a view of a machine's /proc. Root "" or "/" is the live host;
// anything else is a fixture tree laid out like / (proc/sys/net/...,
// proc/net/..., proc/PID/...).
type FS struct{ Root string }

// Host is the live machine.
func Host() FS { return FS{Root: "/"} }

// IsHost reports whether f reads the live machine rather than a fixture
// tree. Only the live machine can answer queries that have no file form
// (netlink sock_diag).
func (f FS) IsHost() bool { return f.Root == "" || filepath.Clean(f.Root) == "/" }

// Path is the location of rel ("proc/net/tcp") under f's root.
func (f FS) Path(rel string) string {
	root := f.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, rel)
}

// ErrMalformed is matched (errors.Is) by every error about a file whose
// content could not be parsed.
var ErrMalformed = errors.New("malformed content")

// MalformedError reports a file whose content could not be parsed.
type MalformedError struct {
	Path    string // the file, under the FS root
	Content string // the offending content, trimmed and shortened
	Reason  string // what is wrong with it
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("%s: malformed content %q: %s", e.Path, e.Content, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

func (f FS) malformed(rel, content, reason string) error {
	content = strings.TrimSpace(content)
	if len(content) > 80 {
		content = content[:77] + "..."
	}
	return &MalformedError{Path: f.Path(rel), Content: content, Reason: reason}
}

// readFile reads rel under the root. The *fs.PathError from os carries the
// full path, so errors.Is(err, fs.ErrNotExist) works.
func (f FS) readFile(rel string) ([]byte, error) {
	return os.ReadFile(f.Path(rel))
}

// Names of the sysctls this package knows about, in dotted form.
const (
	SysctlLocalPortRange    = "net.ipv4.ip_local_port_range"
	SysctlReservedPorts     = "net.ipv4.ip_local_reserved_ports"
	SysctlTimestamps        = "net.ipv4.tcp_timestamps"
	SysctlTWReuse           = "net.ipv4.tcp_tw_reuse"
	SysctlSynRetries        = "net.ipv4.tcp_syn_retries"
	SysctlSynLinearTimeouts = "net.ipv4.tcp_syn_linear_timeouts" // Linux 6.9+
	SysctlSynackRetries     = "net.ipv4.tcp_synack_retries"
	SysctlRetries2          = "net.ipv4.tcp_retries2"
	SysctlKeepaliveTime     = "net.ipv4.tcp_keepalive_time"
	SysctlKeepaliveIntvl    = "net.ipv4.tcp_keepalive_intvl"
	SysctlKeepaliveProbes   = "net.ipv4.tcp_keepalive_probes"
	SysctlFinTimeout        = "net.ipv4.tcp_fin_timeout"
	SysctlSomaxconn         = "net.core.somaxconn"
	SysctlMaxSynBacklog     = "net.ipv4.tcp_max_syn_backlog"
	SysctlAbortOnOverflow   = "net.ipv4.tcp_abort_on_overflow"
	SysctlRmem              = "net.ipv4.tcp_rmem"
	SysctlWmem              = "net.ipv4.tcp_wmem"
)

// sysctlPath maps "net.ipv4.tcp_syn_retries" to
// "proc/sys/net/ipv4/tcp_syn_retries".
func sysctlPath(name string) string {
	return "proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// SysctlPath is the file behind a dotted sysctl name, under f's root.
func (f FS) SysctlPath(name string) string { return f.Path(sysctlPath(name)) }

// Sysctl reads a sysctl by its dotted name ("net.ipv4.tcp_syn_retries") and
// returns its value with surrounding white space removed.
func (f FS) Sysctl(name string) (string, error) {
	b, err := f.readFile(sysctlPath(name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// SysctlInt reads a sysctl holding one integer.
func (f FS) SysctlInt(name string) (int, error) {
	v, err := f.SysctlInts(name, 1)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// SysctlInts reads a sysctl holding exactly n white-space separated
// integers, such as ip_local_port_range (2) or tcp_rmem (3).
func (f FS) SysctlInts(name string, n int) ([]int, error) {
	s, err := f.Sysctl(name)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(s)
	if len(fields) != n {
		return nil, f.malformed(sysctlPath(name), s, fmt.Sprintf("want %d integer(s), found %d field(s)", n, len(fields)))
	}
	out := make([]int, n)
	for i, fld := range fields {
		v, err := strconv.Atoi(fld)
		if err != nil {
			return nil, f.malformed(sysctlPath(name), s, fmt.Sprintf("%q is not an integer", fld))
		}
		out[i] = v
	}
	return out, nil
}
