package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/refservice"
	"github.com/tcppro/tcppro/server"
)

// The fleet scenarios run several servers, each on a host of its own
// linked to the clients' host, and where they need one a registry host
// (etcd) linked to every other host: each server host is linked to the
// client host and to the registry host, so a cut of a server's client link
// leaves its registration alone.

// etcdPort is the registry's client port; fleetPrefix the key prefix the
// servers register under.
const (
	etcdPort    = 2379
	fleetPrefix = "/tcppro/verify/"
)

// fleet is a lab of servers, a client host and maybe a registry host.
type fleet struct {
	env      *Env
	lab      *faultnet.Lab
	client   *faultnet.Host
	registry *faultnet.Host // nil without a registry
	regLink  *faultnet.Link // between the client and the registry
	servers  []*fleetHost
}

// fleetHost is a server's host and its links.
type fleetHost struct {
	host    *faultnet.Host
	link    *faultnet.Link // to the client host
	regLink *faultnet.Link // to the registry host, nil without one
}

// addr is the server's service address as the client host reaches it.
func (h *fleetHost) addr() netip.AddrPort { return addr(h.link.Addr(h.host), servicePort) }

// newFleet builds a lab with n server hosts (s1..sn), a client host and,
// when registry is set, a registry host.
func (e *Env) newFleet(n int, registry bool) (*fleet, error) {
	lab, err := e.newLab()
	if err != nil {
		return nil, err
	}
	f := &fleet{env: e, lab: lab}
	if f.client, err = lab.AddHost("client"); err != nil {
		return nil, err
	}
	if registry {
		if f.registry, err = lab.AddHost("registry"); err != nil {
			return nil, err
		}
		if f.regLink, err = lab.Link(f.client, f.registry); err != nil {
			return nil, err
		}
	}
	for range n {
		if _, err := f.addHost(); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// addHost adds a server host, linked to the client host (and the
// registry).
func (f *fleet) addHost() (*fleetHost, error) {
	h, err := f.lab.AddHost("s" + strconv.Itoa(len(f.servers)+1))
	if err != nil {
		return nil, err
	}
	fh := &fleetHost{host: h}
	if fh.link, err = f.lab.Link(f.client, h); err != nil {
		return nil, err
	}
	if f.registry != nil {
		if fh.regLink, err = f.lab.Link(h, f.registry); err != nil {
			return nil, err
		}
	}
	f.servers = append(f.servers, fh)
	return fh, nil
}

// etcdTarget is the registry's target as seen from the client host, or
// from server host h.
func (f *fleet) etcdTarget(h *fleetHost) string {
	a := f.regLink.Addr(f.registry)
	if h != nil {
		a = h.regLink.Addr(f.registry)
	}
	return "etcd://" + addr(a, etcdPort).String() + fleetPrefix
}

// addrs lists the service addresses of the servers given (all when none).
func (f *fleet) addrs(hs ...*fleetHost) []string {
	if len(hs) == 0 {
		hs = f.servers
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.addr().String()
	}
	return out
}

// startRegistered starts a `tcppro serve` process on h that registers its
// address in the fleet's registry with the given lease TTL, and waits until
// it accepts connections.
func (f *fleet) startRegistered(ctx context.Context, h *fleetHost, ttl time.Duration, extra ...string) (*serverProc, error) {
	args := append([]string{
		"--register", f.etcdTarget(h),
		"--register-addr", h.addr().String(),
		"--register-ttl", ttl.String(),
	}, extra...)
	return f.env.startServer(ctx, h.host, h.addr(), args...)
}

// delayed wraps the reference service so that every answer takes at least
// d more: a server that is slower than its peers for a reason of its own.
func delayed(d time.Duration) server.Handler {
	next := refservice.Handler()
	if d <= 0 {
		return next
	}
	return server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return next.ServeTCP(ctx, req)
	})
}

// ---------------------------------------------------------------------------
// External programs: etcd and dnsmasq.

// Programs a scenario may need besides tcppro (Scenario.Needs).
const (
	needEtcd    = "etcd"
	needDNSMasq = "dnsmasq"
)

// EtcdBinEnv names the etcd binary the registry scenarios run, instead of
// "etcd" on PATH.
const EtcdBinEnv = "TCPPRO_ETCD_BIN"

// findProgram returns the path of a program a scenario needs, or an error
// that says how to install it.
func findProgram(name string) (string, error) {
	switch name {
	case needEtcd:
		if b := os.Getenv(EtcdBinEnv); b != "" {
			return b, nil
		}
		if b, err := exec.LookPath("etcd"); err == nil {
			return b, nil
		}
		return "", fmt.Errorf("needs etcd, the registry: no etcd on PATH (apt-get install etcd-server, or set %s)", EtcdBinEnv)
	case needDNSMasq:
		if b, err := exec.LookPath("dnsmasq"); err == nil {
			return b, nil
		}
		const debian = "/usr/sbin/dnsmasq" // not on a user's PATH
		if _, err := os.Stat(debian); err == nil {
			return debian, nil
		}
		return "", errors.New("needs dnsmasq, a DNS server: none found (apt-get install dnsmasq-base)")
	}
	return "", fmt.Errorf("unknown program %q", name)
}

// startExternal starts program bin with args inside h, its output kept
// for diagnostics. It is killed when the scenario ends.
func (e *Env) startExternal(h *faultnet.Host, name, bin string, args ...string) (*proc, error) {
	cmd := h.Command(e.ctx, bin, args...)
	cmd.WaitDelay = 2 * time.Second
	p := &proc{name: name, cmd: cmd, stderr: &tailBuffer{max: 8 << 10}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	e.onClose(p.kill)
	return p, nil
}

// tempDir makes a directory removed when the scenario ends, readable by
// every user (dnsmasq reads its files as nobody).
func (e *Env) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	e.onClose(func() { os.RemoveAll(dir) })
	return dir, os.Chmod(dir, 0o755)
}

// etcdProc is the registry: one etcd member on the registry host,
// listening on every address of it.
type etcdProc struct {
	env  *Env
	host *faultnet.Host
	bin  string
	dir  string
	p    *proc
}

// startEtcd starts the fleet's registry and waits until it is healthy.
func (f *fleet) startEtcd(ctx context.Context) (*etcdProc, error) {
	bin, err := findProgram(needEtcd)
	if err != nil {
		return nil, err
	}
	dir, err := f.env.tempDir("tcppro-verify-etcd-")
	if err != nil {
		return nil, err
	}
	s := &etcdProc{env: f.env, host: f.registry, bin: bin, dir: dir}
	return s, s.start(ctx)
}

// start starts the member (again, on the same data after stop) and waits
// until it answers /health.
func (s *etcdProc) start(ctx context.Context) error {
	client := "http://0.0.0.0:" + strconv.Itoa(etcdPort)
	peer := "http://127.0.0.1:2380"
	p, err := s.env.startExternal(s.host, "etcd", s.bin,
		"--name", "registry",
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", "http://127.0.0.1:"+strconv.Itoa(etcdPort),
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "registry="+peer,
		"--logger", "zap", "--log-level", "warn")
	if err != nil {
		return err
	}
	s.p = p
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return s.host.Dial(ctx, network, a)
		},
	}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://127.0.0.1:" + strconv.Itoa(etcdPort) + "/health")
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			resp.Body.Close()
			if ok {
				return nil
			}
		}
		if p.hasExited() {
			return fmt.Errorf("etcd exited (%v)%s", p.err, p.stderr.suffix())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy after 20s: %v%s", err, p.stderr.suffix())
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// stop stops the member (SIGTERM) and waits for it to exit.
func (s *etcdProc) stop() error {
	if s.p.hasExited() {
		return nil
	}
	_ = s.p.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.p.waitExit(10 * time.Second); err != nil && !s.p.hasExited() {
		s.p.kill()
		return err
	}
	return nil
}

// dnsServer is dnsmasq on a host's loopback, port 53, answering A records
// for names under fleetDomain from a hosts file that setHosts replaces.
type dnsServer struct {
	hosts string // the hosts file
	p     *proc
}

// fleetDomain is the zone the DNS server answers for.
const fleetDomain = "fleet.test"

// startDNS starts dnsmasq on h with name resolving to addrs, the records'
// TTL ttl, and waits until it answers.
func (e *Env) startDNS(ctx context.Context, h *faultnet.Host, name string, addrs []netip.Addr, ttl time.Duration) (*dnsServer, error) {
	bin, err := findProgram(needDNSMasq)
	if err != nil {
		return nil, err
	}
	dir, err := e.tempDir("tcppro-verify-dns-")
	if err != nil {
		return nil, err
	}
	d := &dnsServer{hosts: filepath.Join(dir, "hosts")}
	if err := d.writeHosts(name, addrs); err != nil {
		return nil, err
	}
	p, err := e.startExternal(h, "dnsmasq", bin,
		"--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port=53",
		"--addn-hosts="+d.hosts, "--local=/"+fleetDomain+"/",
		"--local-ttl="+strconv.Itoa(int(ttl/time.Second)), "--log-facility=-")
	if err != nil {
		return nil, err
	}
	d.p = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = net.DialTimeout("udp", "127.0.0.1:53", time.Second)
			return err
		})
		if err == nil {
			// A query for the name: an answer means dnsmasq is up.
			err = probeDNS(c, name)
			c.Close()
			if err == nil {
				return d, nil
			}
		}
		if p.hasExited() {
			return nil, fmt.Errorf("dnsmasq exited (%v)%s", p.err, p.stderr.suffix())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dnsmasq not answering after 10s: %v%s", err, p.stderr.suffix())
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// servesA waits until the DNS server on h (127.0.0.1:53) answers name's A
// query with a as one of the records, up to limit.
func servesA(ctx context.Context, h *faultnet.Host, name string, a netip.Addr, limit time.Duration) error {
	want := a.As4()
	deadline := time.Now().Add(limit)
	for {
		var answer []byte
		err := h.Do(func() error {
			c, err := net.DialTimeout("udp", "127.0.0.1:53", time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			answer, err = queryA(c, name)
			return err
		})
		// The record's data is the address's 4 bytes, at the end of
		// the answer for a name with one record, somewhere in it for
		// more.
		if err == nil && strings.Contains(string(answer), string(want[:])) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the DNS server does not answer %s with %v after %s (%v)", name, a, fmtDur(limit), err)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// probeDNS sends one A query for name on c and waits for an answer.
func probeDNS(c net.Conn, name string) error {
	_, err := queryA(c, name)
	return err
}

// queryA sends one A query for name on c and returns the answer.
func queryA(c net.Conn, name string) ([]byte, error) {
	q := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	q = append(q, 0, 0, 1, 0, 1)
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	if n < 12 || buf[0] != 0x12 || buf[1] != 0x34 {
		return nil, errors.New("not a DNS answer")
	}
	return buf[:n], nil
}

// writeHosts writes the hosts file: name resolving to addrs.
func (d *dnsServer) writeHosts(name string, addrs []netip.Addr) error {
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "%s %s\n", a, name)
	}
	tmp := d.hosts + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.hosts)
}

// setHosts replaces the records of name and makes dnsmasq read them
// (SIGHUP).
func (d *dnsServer) setHosts(name string, addrs []netip.Addr) error {
	if err := d.writeHosts(name, addrs); err != nil {
		return err
	}
	return d.p.cmd.Process.Signal(syscall.SIGHUP)
}

// stop stops dnsmasq and waits for it to exit.
func (d *dnsServer) stop() error {
	_ = d.p.cmd.Process.Signal(syscall.SIGTERM)
	return d.p.waitExit(5 * time.Second)
}

// ---------------------------------------------------------------------------
// What a client sees of the fleet.

// waitEndpoints polls the client's servers until cond holds, and returns
// when it was first seen to hold (polled every 20 ms), or an error after
// limit.
func waitEndpoints(ctx context.Context, ag *agent, name string, limit time.Duration, cond func([]endpointState) bool) (int64, []endpointState, error) {
	deadline := time.Now().Add(limit)
	for {
		eps, at, err := ag.endpoints(ctx, name)
		if err != nil {
			return 0, nil, err
		}
		if cond(eps) {
			return at, eps, nil
		}
		if time.Now().After(deadline) {
			return 0, eps, fmt.Errorf("client %s: its servers did not reach the expected state within %s: %s", name, fmtDur(limit), endpointsText(eps))
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return 0, nil, err
		}
	}
}

// allReady reports whether every server of the set is ready.
func allReady(eps []endpointState) bool {
	for _, e := range eps {
		if e.State != "ready" {
			return false
		}
	}
	return len(eps) > 0
}

// endpointOf returns the client's view of server a.
func endpointOf(eps []endpointState, a string) (endpointState, bool) {
	for _, e := range eps {
		if e.Addr == a {
			return e, true
		}
	}
	return endpointState{}, false
}

// addrSet is the set of the servers' addresses.
func addrSet(eps []endpointState) map[string]bool {
	m := make(map[string]bool, len(eps))
	for _, e := range eps {
		m[e.Addr] = true
	}
	return m
}

// sameAddrs reports whether eps are exactly the servers addrs.
func sameAddrs(eps []endpointState, addrs []string) bool {
	if len(eps) != len(addrs) {
		return false
	}
	set := addrSet(eps)
	for _, a := range addrs {
		if !set[a] {
			return false
		}
	}
	return true
}

// callShares returns each server's share of the calls made between two
// snapshots of a client's servers, and the number of those calls.
func callShares(before, after []endpointState) (map[string]float64, uint64) {
	prev := make(map[string]uint64, len(before))
	for _, e := range before {
		prev[e.Addr] = e.calls()
	}
	calls := make(map[string]uint64, len(after))
	var total uint64
	for _, e := range after {
		n := e.calls() - min(prev[e.Addr], e.calls())
		calls[e.Addr] = n
		total += n
	}
	shares := make(map[string]float64, len(calls))
	for a, n := range calls {
		if total > 0 {
			shares[a] = float64(n) / float64(total)
		}
	}
	return shares, total
}

// sharesText formats shares as "a 25.1 %, b 24.9 %", by address.
func sharesText(shares map[string]float64) string {
	addrs := make([]string, 0, len(shares))
	for a := range shares {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = fmt.Sprintf("%s %.1f %%", a, 100*shares[a])
	}
	return strings.Join(parts, ", ")
}

// endpointsText describes a client's servers, one "addr state" each.
func endpointsText(eps []endpointState) string {
	if len(eps) == 0 {
		return "no servers"
	}
	parts := make([]string, len(eps))
	for i, e := range eps {
		s := e.Addr + " " + e.State
		if e.Ejected {
			s += " ejected"
		}
		if e.LastError != "" {
			s += " (" + e.LastError + ")"
		}
		parts[i] = s
	}
	return strings.Join(parts, ", ")
}

// FleetScenarios returns the fleet's rows (the last of Scenarios): they
// run several servers, registered in etcd or named in DNS where the row
// needs it, and measure how the clients' discovery and balancing follow.
// Their servers are `tcppro serve` processes with the flags of the real
// program (--register, SIGHUP upgrades), so their Go tests run where the
// test binary plays tcppro (package main's).
func FleetScenarios() []Scenario { return fleetScenarios() }

func fleetScenarios() []Scenario {
	return []Scenario{
		{Name: "rolling-restart", Bound: rollingBound, Run: rollingRestart, Needs: []string{needEtcd},
			Description: "4 registered servers under steady load are each upgraded in place (SIGHUP), then drained and restarted, one after the other: 0 failed calls, 0 refused connects"},
		{Name: "slow-instance", Bound: slowBound, Run: slowInstance,
			Description: "1 of 4 servers answers 10× slower (200 ms, the others 20 ms): it gets < 10 % of the calls (round-robin: 25 %) and the fleet's p99 is ≥ 3× better than round-robin's, in the same run"},
		{Name: "black-holed", Bound: detectBound, Run: blackHoled,
			Description: "1 of 4 servers' link is cut silently: calls in flight on it fail within the heartbeat bound, new calls avoid it at once, it is ejected; restored, it carries its share again within a minute"},
		{Name: "scale-out", Bound: scaleOutBound, Run: scaleOut, Needs: []string{needEtcd},
			Description: "a 5th server registers under calls of 20 ms: within the servers' MaxConnAge + grace (shortened to 12 s + 3 s) it carries 20 % ± 5 points of the calls"},
		{Name: "registry-loss", Bound: registryLossBound, Run: registryLoss, Needs: []string{needEtcd},
			Description: "etcd stopped for 30 s: no failed calls, servers keep retrying registration, clients keep their last set; a SIGKILLed server leaves the set within its lease TTL + 2 s"},
		{Name: "dns-change", Bound: dnsBound, Run: dnsChange, Needs: []string{needDNSMasq},
			Description: "the DNS records are replaced: clients follow within the refresh interval (+ 0.5 s); the DNS server stopped: the last good set is kept, no failed calls"},
		{Name: "subsetting", Bound: subsetBound, Run: subsetting,
			Description: "100 clients × 20 servers, subset 5: connections per server max/min ≤ 1.25"},
	}
}
