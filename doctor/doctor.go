// Package doctor audits a Linux host against the TCP practices tcppro is
// built on and says, per check, what it found, why it matters and the exact
// fix. It only judges: every fact comes from package sysinfo, so a fixture
// tree can stand in for the host.
//
// # Checks and thresholds
//
// Worst cases are computed from the host's actual values, the way the
// kernel computes them (see connectTimeout, deadPeerTimeout).
//
//	ephemeral-listeners  warn: a listener's port is inside ip_local_port_range and not in
//	                     ip_local_reserved_ports (an outgoing connection can take it while
//	                     the service restarts).
//	planned-port-N       one per Options.Ports: fail inside the range and not reserved, or not
//	                     a port; warn when something already listens on it; ok otherwise.
//	tcp-timestamps       warn: tcp_timestamps=0; fail: tcp_timestamps=0 with tcp_tw_reuse=1
//	                     (configured reuse that silently does nothing).
//	syn-retries          connect() give-up time T: ok T ≤ 30 s, warn T ≤ 180 s, fail above
//	                     (tcp_syn_retries=3 → 15 s, 19 s with 4 linear timeouts; 6 → 127/131 s).
//	synack-retries       half-open (SYN_RECV) lifetime: ok ≤ 63 s (the default 5), warn ≤ 300 s,
//	                     fail above.
//	retries2             dead-peer give-up time: ok ≤ 120 s (tcp_retries2 ≤ 8 → 102.2 s),
//	                     warn ≤ 1000 s (the default 15 → 924.6 s), fail above.
//	keepalive            time + intvl×probes: ok ≤ 300 s, warn ≤ 7875 s (the kernel default),
//	                     fail above.
//	listen-overflows     warn: TcpExt ListenOverflows or ListenDrops non-zero (they count since
//	                     boot, so they cannot say "now": a full queue now is accept-queue's fail).
//	somaxconn            fail: below Options.Backlog; warn: below 1024, or below the backlog of
//	                     a running listener (its next restart will get a shorter queue).
//	accept-queue         fail: a listener's accept queue is full now (queued > backlog, the
//	                     kernel's drop condition); warn: at 80% or more.
//	close-wait           per process: warn 1–9 CLOSE_WAIT sockets, fail 10 or more (a socket
//	                     stays in CLOSE_WAIT only until its owner calls close, so a handful
//	                     seen at one instant means a process that does not close on EOF).
//	time-wait            TIME_WAIT sockets from ephemeral ports to the busiest destination,
//	                     against the range width: ok < 25%, warn < 75%, fail at 75% or more
//	                     (only warn where tcp_tw_reuse applies to that destination).
//	open-files           per process: warn at 80% of its soft RLIMIT_NOFILE, fail at 95%.
//
// A check whose inputs cannot be read (missing or malformed file, no
// permission) is a warn whose Found says which file and why.
package doctor

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tcppro/tcppro/sysinfo"
)

// Status is a check's verdict.
type Status string

// The statuses, from best to worst.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

func (s Status) rank() int {
	switch s {
	case OK:
		return 0
	case Warn:
		return 1
	}
	return 2
}

// Check is one line of the report.
type Check struct {
	ID     string `json:"id"`     // stable identifier, such as "syn-retries"
	Status Status `json:"status"` // ok, warn or fail
	Found  string `json:"found"`  // what was found on the host
	Why    string `json:"why"`    // why it matters, with the consequence in seconds where there is one
	Fix    string `json:"fix"`    // the exact fix; empty when the status is ok
}

// Summary counts the checks by status; Status is the worst one.
type Summary struct {
	Total  int    `json:"total"`
	OK     int    `json:"ok"`
	Warn   int    `json:"warn"`
	Fail   int    `json:"fail"`
	Status Status `json:"status"`
}

// Report is the outcome of Run.
type Report struct {
	Checks  []Check `json:"checks"`
	Summary Summary `json:"summary"`
}

// ExitCode is the process exit status for r: 0 all ok, 1 any warn, 2 any
// fail.
func (r Report) ExitCode() int { return r.Summary.Status.rank() }

// Find returns the first check with the given ID.
func (r Report) Find(id string) (Check, bool) {
	for _, c := range r.Checks {
		if c.ID == id {
			return c, true
		}
	}
	return Check{}, false
}

// Options says what to audit.
type Options struct {
	// FS is the machine to audit; the zero value is the live host.
	FS sysinfo.FS
	// Ports are ports someone plans to listen on; each gets a
	// planned-port-N check.
	Ports []int
	// Backlog is the listen backlog a planned service will ask for; when
	// positive, somaxconn fails below it.
	Backlog int
}

// Thresholds; the package comment explains each.
const (
	synOK, synWarn         = 30 * time.Second, 180 * time.Second
	synackOK, synackWarn   = 63 * time.Second, 300 * time.Second
	retries2OK, retr2Warn  = 120 * time.Second, 1000 * time.Second
	keepaliveOK, kaWarn    = 300 * time.Second, 7875 * time.Second
	somaxconnMin           = 1024
	acceptQueueWarnPercent = 80
	closeWaitFail          = 10
	timeWaitWarnPercent    = 25
	timeWaitFailPercent    = 75
	openFilesWarnPercent   = 80
	openFilesFailPercent   = 95
	listMax                = 5 // items named in one Found before "and N more"
)

// Run audits the machine and returns one check per rule, in a fixed order.
// It never panics on bad input: unreadable facts become warn checks.
func Run(opts Options) Report {
	h := load(opts)
	var checks []Check
	checks = append(checks, h.ephemeralListeners())
	for _, p := range opts.Ports {
		checks = append(checks, h.plannedPort(p))
	}
	checks = append(checks,
		h.timestamps(),
		h.synRetries(),
		h.synackRetries(),
		h.retries2(),
		h.keepalive(),
		h.listenOverflows(),
		h.somaxconn(),
		h.acceptQueue(),
		h.closeWait(),
		h.timeWait(),
		h.openFiles(),
	)
	return newReport(checks)
}

func newReport(checks []Check) Report {
	r := Report{Checks: checks, Summary: Summary{Total: len(checks), Status: OK}}
	for _, c := range checks {
		switch c.Status {
		case OK:
			r.Summary.OK++
		case Warn:
			r.Summary.Warn++
		default:
			r.Summary.Fail++
		}
		if c.Status.rank() > r.Summary.Status.rank() {
			r.Summary.Status = c.Status
		}
	}
	return r
}

// host is everything read once and shared by the rules.
type host struct {
	fs   sysinfo.FS
	opts Options

	socks    []sysinfo.Socket
	socksErr error

	procs    []sysinfo.Process
	procsErr error
	owners   map[uint64][]int // socket inode → indices into procs
	hidden   int              // processes whose descriptors could not be read

	backlogs   map[uint64]int
	backlogErr error

	rng      sysinfo.PortRange
	rngErr   error
	reserved sysinfo.PortSet
	resErr   error

	rtoMax time.Duration
}

func load(opts Options) *host {
	h := &host{fs: opts.FS, opts: opts, rtoMax: rtoMaxStd}
	if h.fs.Root == "" {
		h.fs = sysinfo.Host()
	}
	// The socket table and the process scan dominate on a busy host (tens
	// of thousands of sockets or descriptors): read them at once.
	var wg sync.WaitGroup
	wg.Go(func() { h.socks, h.socksErr = h.fs.TCPSockets() })
	wg.Go(func() { h.procs, h.procsErr = h.fs.Processes() })
	h.backlogs, h.backlogErr = h.fs.ListenBacklogs()
	wg.Wait()
	h.owners = sysinfo.SocketOwners(h.procs)
	for _, p := range h.procs {
		if p.OpenFiles < 0 {
			h.hidden++
		}
	}
	h.rng, h.rngErr = h.fs.LocalPortRange()
	h.reserved, h.resErr = h.fs.ReservedPorts()
	if ms, err := h.fs.SysctlInt("net.ipv4.tcp_rto_max_ms"); err == nil && ms >= 1000 {
		h.rtoMax = time.Duration(ms) * time.Millisecond // Linux 6.15+
	}
	return h
}

// unreadable is the check for a rule whose inputs could not be read.
func unreadable(id, why string, err error) Check {
	fix := "run tcppro doctor on the Linux host itself with /proc mounted"
	switch {
	case errors.Is(err, fs.ErrPermission):
		fix = "run tcppro doctor as root"
	case errors.Is(err, sysinfo.ErrMalformed):
		fix = "check the kernel version; this file's format is not the one tcppro knows"
	}
	return Check{ID: id, Status: Warn, Found: "cannot check: " + err.Error(), Why: why, Fix: fix}
}

// sysctls reads integer sysctls in order, stopping at the first error.
func (h *host) sysctls(names ...string) ([]int, error) {
	out := make([]int, len(names))
	for i, n := range names {
		v, err := h.fs.SysctlInt(n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// sysctlFix is the fix line for setting sysctls, with what it achieves.
func sysctlFix(effect string, assign ...string) string {
	if effect != "" {
		effect += "; "
	}
	return "sysctl -w " + strings.Join(assign, " ") + " (" + effect + "persist it in /etc/sysctl.d/)"
}

// owner names the processes holding a socket: "nginx (pid 812)".
func (h *host) owner(inode uint64) string {
	idx := h.owners[inode]
	if len(idx) == 0 {
		if h.hidden > 0 {
			return "an unknown process (run as root to name it)"
		}
		return "no process found"
	}
	parts := make([]string, 0, len(idx))
	for _, i := range idx {
		parts = append(parts, procName(h.procs[i]))
	}
	return strings.Join(parts, ", ")
}

func procName(p sysinfo.Process) string {
	return fmt.Sprintf("%s (pid %d)", p.Comm, p.PID)
}

// list joins items, naming at most listMax of them.
func list(items []string) string {
	if len(items) > listMax {
		return strings.Join(items[:listMax], "; ") + fmt.Sprintf("; and %d more", len(items)-listMax)
	}
	return strings.Join(items, "; ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func (h *host) listeners() []sysinfo.Socket {
	var out []sysinfo.Socket
	for _, s := range h.socks {
		if s.State == sysinfo.StateListen {
			out = append(out, s)
		}
	}
	return out
}

// ---- ports ----

const whyEphemeral = "A port inside ip_local_port_range can be handed to any outgoing connection while the service is down, so its restart fails with EADDRINUSE until that connection and its 60 s TIME_WAIT are gone."

func (h *host) ephemeralListeners() Check {
	const id = "ephemeral-listeners"
	for _, err := range []error{h.socksErr, h.rngErr, h.resErr} {
		if err != nil {
			return unreadable(id, whyEphemeral, err)
		}
	}
	type hit struct {
		port   int
		owners []string
	}
	byPort := map[int]*hit{}
	n := 0
	for _, s := range h.listeners() {
		n++
		port := int(s.Local.Port())
		if !h.rng.Contains(port) || h.reserved.Contains(port) {
			continue
		}
		x := byPort[port]
		if x == nil {
			x = &hit{port: port}
			byPort[port] = x
		}
		if o := h.owner(s.Inode); !slices.Contains(x.owners, o) {
			x.owners = append(x.owners, o)
		}
	}
	if len(byPort) == 0 {
		return Check{ID: id, Status: OK,
			Found: fmt.Sprintf("no listener inside the ephemeral range %v outside the reserved ports (%s checked)", h.rng, plural(n, "listener", "listeners")),
			Why:   whyEphemeral}
	}
	ports := make([]int, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	items := make([]string, len(ports))
	for i, p := range ports {
		items[i] = fmt.Sprintf("port %d by %s", p, strings.Join(byPort[p].owners, ", "))
	}
	return Check{ID: id, Status: Warn,
		Found: fmt.Sprintf("%s inside the ephemeral range %v and not reserved: %s",
			plural(len(ports), "listening port", "listening ports"), h.rng, list(items)),
		Why: whyEphemeral,
		Fix: sysctlFix("", "net.ipv4.ip_local_reserved_ports="+h.reserved.Add(ports...).String()) +
			fmt.Sprintf(", or move the service to a fixed port below %d", h.rng.Lo),
	}
}

func (h *host) plannedPort(port int) Check {
	id := fmt.Sprintf("planned-port-%d", port)
	if port < 1 || port > 65535 {
		return Check{ID: id, Status: Fail, Found: fmt.Sprintf("%d is not a TCP port", port),
			Why: "A service cannot listen on a port outside 1-65535.", Fix: "choose a port in 1-65535"}
	}
	for _, err := range []error{h.rngErr, h.resErr} {
		if err != nil {
			return unreadable(id, whyEphemeral, err)
		}
	}
	if h.rng.Contains(port) && !h.reserved.Contains(port) {
		return Check{ID: id, Status: Fail,
			Found: fmt.Sprintf("port %d is inside the ephemeral range %v and not reserved", port, h.rng),
			Why:   whyEphemeral,
			Fix: fmt.Sprintf("choose a port below %d, or %s", h.rng.Lo,
				sysctlFix("", "net.ipv4.ip_local_reserved_ports="+h.reserved.Add(port).String())),
		}
	}
	where := fmt.Sprintf("outside the ephemeral range %v", h.rng)
	if h.rng.Contains(port) {
		where = fmt.Sprintf("inside the ephemeral range %v but reserved", h.rng)
	}
	if h.socksErr == nil {
		var users []string
		for _, s := range h.listeners() {
			if int(s.Local.Port()) == port {
				if o := h.owner(s.Inode); !slices.Contains(users, o) {
					users = append(users, o)
				}
			}
		}
		if len(users) > 0 {
			return Check{ID: id, Status: Warn,
				Found: fmt.Sprintf("port %d is %s, but already in use by %s", port, where, strings.Join(users, ", ")),
				Why:   "A second listener on a port in use fails with EADDRINUSE at startup (fine if this is the planned service itself).",
				Fix:   fmt.Sprintf("choose another port, or stop %s", strings.Join(users, ", ")),
			}
		}
	}
	return Check{ID: id, Status: OK, Found: fmt.Sprintf("port %d is %s and free", port, where), Why: whyEphemeral}
}

// ---- sysctls ----

func (h *host) timestamps() Check {
	const id = "tcp-timestamps"
	const why = "With tcp_timestamps=0 a listener restarted with SO_REUSEADDR loses PAWS protection against stray segments of the old connection, and tcp_tw_reuse does nothing, so every outgoing connection's port stays blocked for the full 60 s TIME_WAIT."
	v, err := h.sysctls(sysinfo.SysctlTimestamps)
	if err != nil {
		return unreadable(id, why, err)
	}
	reuse, rerr := h.fs.SysctlInt(sysinfo.SysctlTWReuse)
	reuseText := "tcp_tw_reuse unknown"
	if rerr == nil {
		reuseText = fmt.Sprintf("tcp_tw_reuse=%d", reuse)
	}
	found := fmt.Sprintf("tcp_timestamps=%d, %s", v[0], reuseText)
	switch {
	case v[0] != 0:
		return Check{ID: id, Status: OK, Found: found, Why: why}
	case rerr == nil && reuse == 1:
		return Check{ID: id, Status: Fail, Found: found + ": tcp_tw_reuse is configured but silently disabled",
			Why: why, Fix: sysctlFix("", "net.ipv4.tcp_timestamps=1")}
	}
	return Check{ID: id, Status: Warn, Found: found, Why: why, Fix: sysctlFix("", "net.ipv4.tcp_timestamps=1")}
}

func grade(d, ok, warn time.Duration) Status {
	switch {
	case d <= ok:
		return OK
	case d <= warn:
		return Warn
	}
	return Fail
}

func (h *host) synRetries() Check {
	const id = "syn-retries"
	v, err := h.sysctls(sysinfo.SysctlSynRetries)
	if err != nil {
		return unreadable(id, "A connect() without its own timeout blocks for as long as tcp_syn_retries allows when the peer never answers.", err)
	}
	linear, lerr := h.fs.SysctlInt(sysinfo.SysctlSynLinearTimeouts) // absent before Linux 6.5
	if lerr != nil {
		linear = 0
	}
	d := connectTimeout(v[0], linear, h.rtoMax)
	found := fmt.Sprintf("tcp_syn_retries=%d", v[0])
	if lerr == nil {
		found += fmt.Sprintf(", tcp_syn_linear_timeouts=%d", linear)
	}
	found += ": connect() to a host that never answers gives up after " + secs(d)
	c := Check{ID: id, Status: grade(d, synOK, synWarn), Found: found,
		Why: fmt.Sprintf("A connect() into a black hole (dropped SYNs) without its own timeout blocks its caller for %s, tying up a worker that long.", secs(d))}
	if c.Status != OK {
		c.Fix = sysctlFix("connect then gives up after "+secs(connectTimeout(3, linear, h.rtoMax)), "net.ipv4.tcp_syn_retries=3") +
			", and give every connect its own timeout"
	}
	return c
}

func (h *host) synackRetries() Check {
	const id = "synack-retries"
	v, err := h.sysctls(sysinfo.SysctlSynackRetries)
	if err != nil {
		return unreadable(id, "Half-open connections hold a request slot for as long as tcp_synack_retries allows.", err)
	}
	d := halfOpenLifetime(v[0], h.rtoMax)
	c := Check{ID: id, Status: grade(d, synackOK, synackWarn),
		Found: fmt.Sprintf("tcp_synack_retries=%d: a handshake the client never completes is kept for %s", v[0], secs(d)),
		Why:   fmt.Sprintf("Each half-open connection holds a SYN-queue slot for %s, so a SYN flood or a lossy client population fills the queue of tcp_max_syn_backlog and new clients are dropped.", secs(d))}
	if c.Status != OK {
		c.Fix = sysctlFix("half-open connections then last "+secs(halfOpenLifetime(5, h.rtoMax)), "net.ipv4.tcp_synack_retries=5")
	}
	return c
}

func (h *host) retries2() Check {
	const id = "retries2"
	v, err := h.sysctls(sysinfo.SysctlRetries2)
	if err != nil {
		return unreadable(id, "A connection with unacknowledged data to a vanished peer lives as long as tcp_retries2 allows.", err)
	}
	d := deadPeerTimeout(v[0], h.rtoMax)
	c := Check{ID: id, Status: grade(d, retries2OK, retr2Warn),
		Found: fmt.Sprintf("tcp_retries2=%d: unacknowledged data to a vanished peer is retransmitted for %s before the connection fails", v[0], secs(d)),
		Why:   fmt.Sprintf("A peer that dies with data in flight keeps the connection, and every request queued on it, hanging for %s unless the socket sets TCP_USER_TIMEOUT.", secs(d))}
	if c.Status != OK {
		c.Fix = sysctlFix("dead peers then fail after "+secs(deadPeerTimeout(8, h.rtoMax)), "net.ipv4.tcp_retries2=8") +
			", and set TCP_USER_TIMEOUT on service sockets"
	}
	return c
}

func (h *host) keepalive() Check {
	const id = "keepalive"
	v, err := h.sysctls(sysinfo.SysctlKeepaliveTime, sysinfo.SysctlKeepaliveIntvl, sysinfo.SysctlKeepaliveProbes)
	if err != nil {
		return unreadable(id, "Idle connections to a vanished peer are detected only after the keepalive time plus all probes.", err)
	}
	d := keepaliveTimeout(v[0], v[1], v[2])
	c := Check{ID: id, Status: grade(d, keepaliveOK, kaWarn),
		Found: fmt.Sprintf("tcp_keepalive_time=%d, tcp_keepalive_intvl=%d, tcp_keepalive_probes=%d: an idle connection to a vanished peer is dropped after %d + %d×%d = %s",
			v[0], v[1], v[2], v[0], v[1], v[2], secs(d)),
		Why: fmt.Sprintf("A peer that vanishes while a connection is idle (crash, NAT or firewall timeout) is noticed only after %s by sockets relying on the system keepalive defaults, so application heartbeats must decide liveness and keepalive is only the backstop.", secs(d))}
	if c.Status != OK {
		c.Fix = sysctlFix("idle dead peers then go after "+secs(keepaliveTimeout(60, 10, 6)),
			"net.ipv4.tcp_keepalive_time=60", "net.ipv4.tcp_keepalive_intvl=10", "net.ipv4.tcp_keepalive_probes=6")
	}
	return c
}

// ---- accept queues ----

func (h *host) listenOverflows() Check {
	const id = "listen-overflows"
	const why = "Each overflow is a handshake the kernel dropped because an accept queue was full, and the client only retries its SYN after 1 s, 3 s, 7 s..., so users see connect stalls of whole seconds."
	ns, err := h.fs.NetStat()
	if err != nil {
		return unreadable(id, why, err)
	}
	ov, ok1 := ns.Get("TcpExt", "ListenOverflows")
	dr, ok2 := ns.Get("TcpExt", "ListenDrops")
	if !ok1 || !ok2 {
		return unreadable(id, why, fmt.Errorf("%s: no TcpExt ListenOverflows/ListenDrops counters", h.fs.Path("proc/net/netstat")))
	}
	since := "since boot"
	if up, err := h.fs.Uptime(); err == nil {
		since = "since boot " + ago(up)
	}
	found := fmt.Sprintf("ListenOverflows=%d, ListenDrops=%d %s", ov, dr, since)
	if ov == 0 && dr == 0 {
		return Check{ID: id, Status: OK, Found: found, Why: why}
	}
	return Check{ID: id, Status: Warn, Found: found, Why: why,
		Fix: "find the listener whose Recv-Q reaches its Send-Q (ss -lnt), make it accept faster, and raise its backlog together with net.core.somaxconn; watch the rate with nstat -az TcpExtListenOverflows"}
}

func ago(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%.1f days ago", d.Hours()/24)
	case d >= 2*time.Hour:
		return fmt.Sprintf("%.1f h ago", d.Hours())
	}
	return fmt.Sprintf("%.0f min ago", d.Minutes())
}

func (h *host) somaxconn() Check {
	const id = "somaxconn"
	v, err := h.sysctls(sysinfo.SysctlSomaxconn)
	if err != nil {
		return unreadable(id, "listen(2) silently caps every backlog at net.core.somaxconn.", err)
	}
	s := v[0]
	why := fmt.Sprintf("listen(2) silently caps every backlog at net.core.somaxconn=%d, so a burst of more than %d unaccepted connections overflows the queue and those clients wait at least 1 s for their SYN retry.", s, s)
	fix := sysctlFix("", fmt.Sprintf("net.core.somaxconn=%d", max(4096, h.opts.Backlog)))
	if h.opts.Backlog > s {
		return Check{ID: id, Status: Fail,
			Found: fmt.Sprintf("somaxconn=%d is below the planned backlog %d", s, h.opts.Backlog),
			Why:   why,
			Fix:   sysctlFix("before starting the service", fmt.Sprintf("net.core.somaxconn=%d", h.opts.Backlog))}
	}
	var above []string
	known := 0
	if h.socksErr == nil && h.backlogErr == nil {
		for _, l := range h.listeners() {
			b, ok := h.backlogs[l.Inode]
			if !ok {
				continue
			}
			known++
			if b > s {
				above = append(above, fmt.Sprintf("%v backlog %d by %s", l.Local, b, h.owner(l.Inode)))
			}
		}
	}
	switch {
	case len(above) > 0:
		return Check{ID: id, Status: Warn,
			Found: fmt.Sprintf("somaxconn=%d is below the backlog of %s, which will shrink at its next restart: %s",
				s, plural(len(above), "running listener", "running listeners"), list(above)),
			Why: why, Fix: sysctlFix("", fmt.Sprintf("net.core.somaxconn=%d", h.maxBacklog()))}
	case s < somaxconnMin:
		return Check{ID: id, Status: Warn, Found: fmt.Sprintf("somaxconn=%d (below %d)", s, somaxconnMin), Why: why, Fix: fix}
	}
	found := fmt.Sprintf("somaxconn=%d", s)
	switch {
	case h.socksErr != nil:
		found += "; listener backlogs unknown: " + h.socksErr.Error()
	case h.backlogErr != nil:
		found += "; listener backlogs unknown: " + h.backlogErr.Error()
	default:
		found += fmt.Sprintf(", no listener asks for more (%s checked)", plural(known, "listener", "listeners"))
	}
	return Check{ID: id, Status: OK, Found: found, Why: why}
}

func (h *host) maxBacklog() int {
	m := 0
	for _, l := range h.listeners() {
		m = max(m, h.backlogs[l.Inode])
	}
	return m
}

func (h *host) acceptQueue() Check {
	const id = "accept-queue"
	const why = "While a listener's accept queue is full the kernel drops new handshakes, so clients wait 1 s, 3 s, 7 s... for SYN retries and time out if the owner never catches up."
	if h.socksErr != nil {
		return unreadable(id, why, h.socksErr)
	}
	if h.backlogErr != nil {
		return unreadable(id, why, fmt.Errorf("listen backlogs: %w", h.backlogErr))
	}
	var full, high []string
	var fullOwners []string
	n := 0
	for _, l := range h.listeners() {
		b, ok := h.backlogs[l.Inode]
		if !ok {
			continue // opened after the socket table was read
		}
		n++
		q := int(l.RxQueue)
		desc := fmt.Sprintf("%v %d/%d queued by %s", l.Local, q, b, h.owner(l.Inode))
		switch {
		case q > b:
			full = append(full, desc)
			fullOwners = append(fullOwners, h.owner(l.Inode))
		case q > 0 && q*100 >= b*acceptQueueWarnPercent:
			high = append(high, desc)
		}
	}
	switch {
	case len(full) > 0:
		return Check{ID: id, Status: Fail,
			Found: fmt.Sprintf("%s full now: %s", plural(len(full), "accept queue", "accept queues"), list(append(full, high...))),
			Why:   why,
			Fix:   fmt.Sprintf("restart process %s if it has stopped accepting; otherwise make it accept faster and raise its listen backlog", strings.Join(fullOwners, ", "))}
	case len(high) > 0:
		return Check{ID: id, Status: Warn,
			Found: fmt.Sprintf("%s at %d%% or more: %s", plural(len(high), "accept queue", "accept queues"), acceptQueueWarnPercent, list(high)),
			Why:   why,
			Fix:   "make the owner accept faster (more acceptors, less work before accept) and raise its listen backlog"}
	}
	return Check{ID: id, Status: OK, Found: fmt.Sprintf("no accept queue above %d%% (%s)", acceptQueueWarnPercent, plural(n, "listener", "listeners")), Why: why}
}

// ---- connection states ----

func (h *host) closeWait() Check {
	const id = "close-wait"
	const why = "A CLOSE_WAIT socket is a connection the peer has closed and the owning process never did: it holds a descriptor and memory for ever (no kernel timer ends it), and a process that leaks them runs into its open-file limit."
	if h.socksErr != nil {
		return unreadable(id, why, h.socksErr)
	}
	count := map[int]int{} // index into procs → sockets
	unowned, total := 0, 0
	for _, s := range h.socks {
		if s.State != sysinfo.StateCloseWait {
			continue
		}
		total++
		idx := h.owners[s.Inode]
		if s.Inode == 0 || len(idx) == 0 {
			unowned++
			continue
		}
		for _, i := range idx {
			count[i]++
		}
	}
	if total == 0 {
		return Check{ID: id, Status: OK, Found: "no CLOSE_WAIT sockets", Why: why}
	}
	idx := make([]int, 0, len(count))
	for i := range count {
		idx = append(idx, i)
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(count[b], count[a]), cmp.Compare(h.procs[a].PID, h.procs[b].PID))
	})
	st := OK
	var items, leakers []string
	for _, i := range idx {
		items = append(items, fmt.Sprintf("%s holds %d", procName(h.procs[i]), count[i]))
		leakers = append(leakers, procName(h.procs[i]))
		if count[i] >= closeWaitFail {
			st = Fail
		} else if st == OK {
			st = Warn
		}
	}
	if unowned > 0 {
		what := "not yet accepted"
		if h.hidden > 0 {
			what = "owner not visible: run as root"
		}
		items = append(items, fmt.Sprintf("%d with no owning process (%s)", unowned, what))
		if st == OK {
			st = Warn
		}
	}
	fix := "fix the code to close a connection as soon as a read returns EOF"
	if len(leakers) > 0 {
		fix = fmt.Sprintf("restart process %s to release them; then %s", list(leakers), fix)
	}
	return Check{ID: id, Status: st,
		Found: fmt.Sprintf("%s in CLOSE_WAIT: %s", plural(total, "socket", "sockets"), list(items)),
		Why:   why, Fix: fix}
}

const timeWaitLen = 60 * time.Second // TCP_TIMEWAIT_LEN

func (h *host) timeWait() Check {
	const id = "time-wait"
	for _, err := range []error{h.socksErr, h.rngErr, h.resErr} {
		if err != nil {
			return unreadable(id, "Outgoing connections leave their local port in TIME_WAIT for 60 s.", err)
		}
	}
	width := h.rng.Width()
	// Usable ports are the range minus the reserved ones inside it.
	for p := h.rng.Lo; p <= h.rng.Hi; p++ {
		if h.reserved.Contains(p) {
			width--
		}
	}
	why := fmt.Sprintf("Every outgoing connection leaves its ephemeral port in TIME_WAIT for %s, and once the %d usable ports towards one destination are all waiting, connect() to it fails with EADDRNOTAVAIL.", secs(timeWaitLen), width)
	type dest struct {
		local, remote netip.AddrPort
	}
	perDest := map[dest]int{}
	total, outgoing := 0, 0
	for _, s := range h.socks {
		if s.State != sysinfo.StateTimeWait {
			continue
		}
		total++
		if !h.rng.Contains(int(s.Local.Port())) {
			continue // the server side of a connection: no ephemeral port used
		}
		outgoing++
		perDest[dest{netip.AddrPortFrom(s.Local.Addr().Unmap(), 0), s.RemoteHost()}]++
	}
	var busiest dest
	most := 0
	for d, n := range perDest {
		if n > most || n == most && d.remote.String() < busiest.remote.String() {
			busiest, most = d, n
		}
	}
	found := fmt.Sprintf("%s in TIME_WAIT, %d from ephemeral ports", plural(total, "socket", "sockets"), outgoing)
	if most == 0 || width <= 0 {
		return Check{ID: id, Status: OK, Found: found + fmt.Sprintf(" (range %v)", h.rng), Why: why}
	}
	pct := most * 100 / width
	found += fmt.Sprintf("; busiest destination %v holds %d of %d usable ports (%d%%)", busiest.remote, most, width, pct)
	st := OK
	switch {
	case pct >= timeWaitFailPercent:
		st = Fail
	case pct >= timeWaitWarnPercent:
		st = Warn
	}
	if st == Fail && h.twReuseApplies(busiest.remote.Addr()) {
		st = Warn
		found += "; tcp_tw_reuse lets new connections reuse them after 1 s"
	}
	c := Check{ID: id, Status: st, Found: found, Why: why}
	if st != OK {
		c.Fix = "reuse connections (pooling, keep-alive) instead of one per request; " +
			sysctlFix("", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_timestamps=1")
	}
	return c
}

// twReuseApplies reports whether tcp_tw_reuse lets outgoing connections to
// addr reuse TIME_WAIT ports: 1 everywhere, 2 on loopback only, and never
// without timestamps.
func (h *host) twReuseApplies(addr netip.Addr) bool {
	v, err := h.sysctls(sysinfo.SysctlTWReuse, sysinfo.SysctlTimestamps)
	if err != nil || v[1] == 0 {
		return false
	}
	return v[0] == 1 || v[0] == 2 && addr.Unmap().IsLoopback()
}

// ---- processes ----

func (h *host) openFiles() Check {
	const id = "open-files"
	const why = "At its open-file limit a process gets EMFILE from accept() and open(): a server stops taking connections (or spins on accept) while its listener stays open and clients queue up."
	if h.procsErr != nil {
		return unreadable(id, why, h.procsErr)
	}
	type hot struct {
		p   sysinfo.Process
		pct int
	}
	var hots []hot
	checked := 0
	for _, p := range h.procs {
		if p.OpenFiles < 0 || p.MaxOpenFiles.Soft <= 0 { // unknown or unlimited
			continue
		}
		checked++
		pct := int(int64(p.OpenFiles) * 100 / p.MaxOpenFiles.Soft)
		if pct >= openFilesWarnPercent {
			hots = append(hots, hot{p, pct})
		}
	}
	slices.SortFunc(hots, func(a, b hot) int { return cmp.Or(cmp.Compare(b.pct, a.pct), cmp.Compare(a.p.PID, b.p.PID)) })
	note := ""
	if h.hidden > 0 {
		note = fmt.Sprintf("; %d more not readable: run as root", h.hidden)
	}
	if len(hots) == 0 {
		return Check{ID: id, Status: OK,
			Found: fmt.Sprintf("no process above %d%% of its open-file limit (%s checked%s)", openFilesWarnPercent, plural(checked, "process", "processes"), note),
			Why:   why}
	}
	st := Warn
	var items, fixes []string
	for _, x := range hots {
		if x.pct >= openFilesFailPercent {
			st = Fail
		}
		items = append(items, fmt.Sprintf("%s uses %d of %d (%d%%)", procName(x.p), x.p.OpenFiles, x.p.MaxOpenFiles.Soft, x.pct))
		if len(fixes) < listMax {
			fixes = append(fixes, nofileFix(x.p))
		}
	}
	return Check{ID: id, Status: st,
		Found: fmt.Sprintf("%s near the open-file limit: %s", plural(len(hots), "process", "processes"), list(items)),
		Why:   why,
		Fix:   strings.Join(fixes, "; ") + "; and look for a descriptor leak (ls -l /proc/PID/fd)"}
}

// nofileFix raises a process's limit in place and says where to make it
// permanent.
func nofileFix(p sysinfo.Process) string {
	soft, hard := p.MaxOpenFiles.Soft, p.MaxOpenFiles.Hard
	var set string
	want := 4 * soft
	switch {
	case hard == sysinfo.Unlimited:
		set = fmt.Sprintf("%d:unlimited", want)
	case hard >= 2*soft:
		want = hard // raising the soft limit up to the hard one needs no privilege
		set = fmt.Sprintf("%d:%d", want, hard)
	default:
		set = fmt.Sprintf("%d:%d", want, want)
	}
	return fmt.Sprintf("prlimit --pid %d --nofile=%s for %s now, and LimitNOFILE=%d in its unit (or ulimit -n %d) for its next start",
		p.PID, set, procName(p), want, want)
}
