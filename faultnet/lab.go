package faultnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// ErrUnsupported is matched (errors.Is) by the error New returns when the
// lab cannot run here: not root, `ip` or `nft` missing, or network
// namespaces or nftables unusable. The error text gives the reason.
var ErrUnsupported = errors.New("faultnet: unsupported")

// ErrClosed is returned by operations on a lab that has been closed.
var ErrClosed = errors.New("faultnet: lab closed")

const (
	// namePrefix starts the name of every namespace a lab creates.
	namePrefix = "tcpprofl-"
	// netnsDir is where iproute2 keeps named namespaces (its default
	// NETNS_RUN_DIR).
	netnsDir = "/run/netns"
	// table is the nftables table the lab owns inside each of its namespaces.
	table = "tcppro_faultnet"
	// maxLinks bounds the links of one lab: one /24 of 198.18.0.0/15 each.
	maxLinks = 512
)

// labRange is the only range lab addresses are taken from.
var labRange = netip.MustParsePrefix("198.18.0.0/15")

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

// Option configures New.
type Option func(*config)

type config struct {
	log      *slog.Logger
	geteuid  func() int
	lookPath func(string) (string, error)
}

// WithLogger logs every command the lab runs at debug level.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.log = l }
}

// withEnv replaces how New checks for root and finds programs (tests fake an
// unsupported machine with it).
func withEnv(geteuid func() int, lookPath func(string) (string, error)) Option {
	return func(c *config) {
		c.geteuid = geteuid
		c.lookPath = lookPath
	}
}

// Lab is a set of network namespaces ("hosts") joined by veth links. Its
// methods are safe for concurrent use. Close it when done.
type Lab struct {
	prefix string
	run    runner
	stop   func() bool // stops the context.AfterFunc that closes the lab

	mu       sync.Mutex // guards the fields below; held while the lab changes
	closed   bool
	closeErr error
	hosts    []*Host
	links    []*Link
	nlinks   int // links attempted: a failed one still uses up its number

	closedCh chan struct{} // closed when Close has finished
}

// New checks that the lab can run here and returns an empty lab. The error
// matches ErrUnsupported (errors.Is) when it cannot, with the reason. New
// also removes namespaces left behind by runs that are gone (see
// CleanStale). When ctx is done the lab closes itself: pass a context from
// signal.NotifyContext to clean up on Ctrl-C.
func New(ctx context.Context, opts ...Option) (*Lab, error) {
	cfg := config{
		log:      slog.New(slog.DiscardHandler),
		geteuid:  os.Geteuid,
		lookPath: exec.LookPath,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if euid := cfg.geteuid(); euid != 0 {
		return nil, fmt.Errorf("%w: not root (euid %d): network namespaces and nftables need CAP_SYS_ADMIN and CAP_NET_ADMIN", ErrUnsupported, euid)
	}
	ipPath, err := cfg.lookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("%w: `ip` (iproute2) not found: %v", ErrUnsupported, err)
	}
	nftPath, err := cfg.lookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("%w: `nft` (nftables) not found: %v", ErrUnsupported, err)
	}
	r := runner{ipPath: ipPath, nftPath: nftPath, log: cfg.log}
	if err := probeOnce(r); err != nil {
		return nil, err
	}
	if err := cleanStale(r); err != nil {
		cfg.log.Warn("faultnet: cleaning stale namespaces", "err", err)
	}
	prefix, err := newPrefix()
	if err != nil {
		return nil, err
	}
	l := &Lab{prefix: prefix, run: r, closedCh: make(chan struct{})}
	l.stop = context.AfterFunc(ctx, func() {
		if err := l.Close(); err != nil {
			cfg.log.Warn("faultnet: closing lab on context end", "err", err)
		}
	})
	return l, nil
}

// Prefix returns the per-run prefix of the lab's namespace names.
func (l *Lab) Prefix() string { return l.prefix }

// AddHost creates a host: a network namespace named "<prefix>-<name>" with
// its loopback up and the lab's nftables table. name is 1 to 32 letters,
// digits or underscores, unique in the lab.
func (l *Lab) AddHost(name string) (*Host, error) {
	if !hostNameRE.MatchString(name) {
		return nil, fmt.Errorf("faultnet: host name %q: want 1 to 32 letters, digits or underscores", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	for _, h := range l.hosts {
		if h.name == name {
			return nil, fmt.Errorf("faultnet: host %q already exists", name)
		}
	}
	ns := l.prefix + "-" + name
	if err := l.run.ip(nil, "netns", "add", ns); err != nil {
		return nil, err
	}
	h, err := l.setupHost(name, ns)
	if err != nil {
		// The namespace is deleted by Close, which looks for the prefix.
		return nil, errors.Join(err, l.run.deleteNetns(ns))
	}
	l.hosts = append(l.hosts, h)
	return h, nil
}

func (l *Lab) setupHost(name, ns string) (*Host, error) {
	if err := l.run.ip(nil, "-n", ns, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	script := fmt.Sprintf(`add table inet %[1]s
add chain inet %[1]s pre { type filter hook prerouting priority -300; policy accept; }
add chain inet %[1]s host
add rule inet %[1]s pre iifname != "lo" jump host
`, table)
	if err := l.run.nft(ns, script); err != nil {
		return nil, err
	}
	fd, err := openNetns(ns)
	if err != nil {
		return nil, err
	}
	return &Host{lab: l, name: name, netns: ns, fd: fd}, nil
}

// Link joins a and b with a veth pair. Link number i (from 0) gets
// 198.18.0.0/15's i-th /24: a is .1, b is .2, so a lab has at most 512
// links. Both ends are up when Link returns. Inside each namespace the
// interface is named "fl<i>".
func (l *Lab) Link(a, b *Host) (*Link, error) {
	if a == nil || b == nil || a.lab != l || b.lab != l {
		return nil, errors.New("faultnet: Link: hosts must belong to this lab")
	}
	if a == b {
		return nil, fmt.Errorf("faultnet: Link: cannot link host %q to itself", a.name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	i := l.nlinks
	if i >= maxLinks {
		return nil, fmt.Errorf("faultnet: Link: a lab has at most %d links", maxLinks)
	}
	l.nlinks++
	subnet, err := linkSubnet(i)
	if err != nil {
		return nil, err
	}
	addrA := subnet.Addr().Next()
	addrB := addrA.Next()
	lk := &Link{lab: l, index: i, a: a, b: b, subnet: subnet, addrA: addrA, addrB: addrB, ifname: "fl" + strconv.Itoa(i)}
	// Created inside a, with its peer moved straight into b: the pair never
	// exists in the root namespace.
	if err := l.run.ip(nil, "-n", a.netns, "link", "add", lk.ifname, "type", "veth", "peer", "name", lk.ifname, "netns", b.netns); err != nil {
		return nil, err
	}
	for _, side := range []struct {
		h    *Host
		addr netip.Addr
	}{{a, addrA}, {b, addrB}} {
		batch := fmt.Sprintf("addr add %s dev %s\nlink set %s up\n", netip.PrefixFrom(side.addr, 24), lk.ifname, lk.ifname)
		if err := l.run.ip(strings.NewReader(batch), "-n", side.h.netns, "-batch", "-"); err != nil {
			return nil, err
		}
		script := fmt.Sprintf("add chain inet %[1]s %[2]s\nadd rule inet %[1]s pre iifname %[3]q jump %[2]s\n", table, lk.chain(), lk.ifname)
		if err := l.run.nft(side.h.netns, script); err != nil {
			return nil, err
		}
	}
	l.links = append(l.links, lk)
	a.links = append(a.links, lk)
	b.links = append(b.links, lk)
	return lk, nil
}

// linkSubnet returns the /24 of link number i: 198.18.0.0/24,
// 198.18.1.0/24, ... 198.19.255.0/24.
func linkSubnet(i int) (netip.Prefix, error) {
	if i < 0 || i >= maxLinks {
		return netip.Prefix{}, fmt.Errorf("faultnet: link number %d out of range", i)
	}
	base := labRange.Addr().As4()
	base[1] += byte(i >> 8)
	base[2] = byte(i)
	p := netip.PrefixFrom(netip.AddrFrom4(base), 24)
	if !labRange.Contains(p.Addr()) || p.Bits() < labRange.Bits() {
		return netip.Prefix{}, fmt.Errorf("faultnet: internal error: %v outside %v", p, labRange)
	}
	return p, nil
}

// Close kills every process still running in the lab's namespaces and
// deletes the namespaces, and with them their veth links and nftables
// tables. It is idempotent and safe to call from any goroutine, including a
// signal handler's; later calls return the first call's result.
//
// Sockets still open in the process keep a deleted namespace alive in the
// kernel (unnamed and unreachable) until they are closed: close them.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	if l.stop != nil {
		l.stop()
	}
	var errs []error
	for _, h := range l.hosts {
		h.closeFD()
	}
	// Every namespace with the prefix, not only l.hosts: this also catches
	// one whose AddHost failed half-way.
	names, err := listNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range names {
		if strings.HasPrefix(ns, l.prefix+"-") {
			errs = append(errs, l.run.removeNetns(ns))
		}
	}
	l.closeErr = errors.Join(errs...)
	close(l.closedCh)
	return l.closeErr
}

func (l *Lab) checkOpen() error {
	if l.closed {
		return ErrClosed
	}
	return nil
}

// CleanStale removes the namespaces of labs whose owning process is gone
// (killed or crashed runs), after killing any process still inside them.
// Namespaces of live labs, this process's included, are left alone. New
// calls it.
func CleanStale() error {
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("%w: `ip` (iproute2) not found: %v", ErrUnsupported, err)
	}
	return cleanStale(runner{ipPath: ipPath, log: slog.New(slog.DiscardHandler)})
}

func cleanStale(r runner) error {
	names, err := listNetns()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		pid, start, ok := parseName(ns)
		if !ok || processAlive(pid, start) {
			continue
		}
		r.log.Info("faultnet: removing stale namespace", "netns", ns)
		errs = append(errs, r.removeNetns(ns))
	}
	return errors.Join(errs...)
}

// newPrefix returns "tcpprofl-<pid>-<start>-<rand>": start is the process's
// start time in clock ticks since boot, which with the pid identifies the
// process even after its pid is reused.
func newPrefix() (string, error) {
	pid := os.Getpid()
	_, start, err := procStat(pid)
	if err != nil {
		return "", fmt.Errorf("faultnet: reading own start time: %w", err)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%d-%d-%s", namePrefix, pid, start, hex.EncodeToString(b[:])), nil
}

// parseName extracts the owner's pid and start time from a lab namespace
// name; ok is false for any other name.
func parseName(ns string) (pid int, start uint64, ok bool) {
	rest, found := strings.CutPrefix(ns, namePrefix)
	if !found {
		return 0, 0, false
	}
	parts := strings.SplitN(rest, "-", 4)
	if len(parts) < 3 {
		return 0, 0, false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return 0, 0, false
	}
	start, err = strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return pid, start, true
}

// processAlive reports whether the process pid that started at start (clock
// ticks since boot) still exists. A zombie counts as gone.
func processAlive(pid int, start uint64) bool {
	state, s, err := procStat(pid)
	return err == nil && s == start && state != 'Z' && state != 'X'
}

// listNetns lists the named network namespaces (iproute2's).
func listNetns() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("faultnet: listing namespaces: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

var (
	probeMu  sync.Mutex
	probeErr error
	probed   bool
)

// probeOnce checks, once per process, that a namespace can be created and
// nftables used inside it, with a throwaway namespace named like a lab's
// (so CleanStale would catch it if this process died half-way).
func probeOnce(r runner) error {
	probeMu.Lock()
	defer probeMu.Unlock()
	if probed {
		return probeErr
	}
	probed = true
	probeErr = probe(r)
	return probeErr
}

func probe(r runner) error {
	prefix, err := newPrefix()
	if err != nil {
		return err
	}
	ns := prefix + "-probe"
	if err := r.ip(nil, "netns", "add", ns); err != nil {
		return fmt.Errorf("%w: cannot create a network namespace: %v", ErrUnsupported, err)
	}
	err = r.nft(ns, fmt.Sprintf("add table inet %s\n", table))
	if derr := r.deleteNetns(ns); derr != nil {
		return derr
	}
	if err != nil {
		return fmt.Errorf("%w: nftables unusable inside a namespace: %v", ErrUnsupported, err)
	}
	return nil
}
