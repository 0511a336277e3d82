package sysinfo

import (
	"errors"
	"io/fs"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var fixture = FS{Root: "testdata/host"}

func TestSysctls(t *testing.T) {
	for name, want := range map[string]int{
		SysctlTimestamps: 1, SysctlTWReuse: 2, SysctlSynRetries: 6, SysctlSynackRetries: 5,
		SysctlRetries2: 15, SysctlKeepaliveTime: 7200, SysctlKeepaliveIntvl: 75,
		SysctlKeepaliveProbes: 9, SysctlFinTimeout: 60, SysctlSomaxconn: 4096,
		SysctlMaxSynBacklog: 2048, SysctlAbortOnOverflow: 0,
	} {
		got, err := fixture.SysctlInt(name)
		if err != nil || got != want {
			t.Errorf("SysctlInt(%s) = %d, %v; want %d", name, got, err, want)
		}
	}
	rmem, err := fixture.SysctlInts(SysctlRmem, 3)
	if err != nil || rmem[0] != 4096 || rmem[1] != 131072 || rmem[2] != 6291456 {
		t.Errorf("tcp_rmem = %v, %v", rmem, err)
	}
	if _, err := fixture.SysctlInts(SysctlWmem, 3); err != nil {
		t.Error(err)
	}
	if got := fixture.SysctlPath(SysctlSomaxconn); got != "testdata/host/proc/sys/net/core/somaxconn" {
		t.Errorf("SysctlPath = %q", got)
	}
}

func TestSysctlMissingAndMalformed(t *testing.T) {
	_, err := fixture.SysctlInt(SysctlSynLinearTimeouts) // absent before Linux 6.5
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "testdata/host/proc/sys/net/ipv4/tcp_syn_linear_timeouts") {
		t.Errorf("missing: %v", err)
	}
	bad := FS{Root: "testdata/malformed"}
	_, err = bad.SysctlInt(SysctlSomaxconn)
	var me *MalformedError
	if !errors.As(err, &me) || !errors.Is(err, ErrMalformed) || !strings.HasSuffix(me.Path, "somaxconn") || me.Content != "4096 x" {
		t.Errorf("malformed somaxconn: %v", err)
	}
	_, err = bad.SysctlInts(SysctlRmem, 3)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "want 3 integer(s)") {
		t.Errorf("short tcp_rmem: %v", err)
	}
}

func TestTCPSockets(t *testing.T) {
	socks, err := fixture.TCPSockets()
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 7 {
		t.Fatalf("got %d sockets, want 7: %+v", len(socks), socks)
	}
	l := socks[0]
	if l.State != StateListen || l.Local != netip.MustParseAddrPort("0.0.0.0:8080") || l.RxQueue != 2 || l.UID != 1000 || l.Inode != 1001 || l.IPv6 {
		t.Errorf("listener: %+v", l)
	}
	if socks[1].Local != netip.MustParseAddrPort("127.0.0.1:40000") {
		t.Errorf("local: %v", socks[1].Local)
	}
	cw := socks[2]
	if cw.State != StateCloseWait || cw.State.String() != "CLOSE_WAIT" || cw.Remote != netip.MustParseAddrPort("127.0.0.1:54321") ||
		cw.RxQueue != 5 || cw.Timer != 2 || cw.TimerExpires != 5*time.Second {
		t.Errorf("close-wait: %+v", cw)
	}
	tw := socks[3]
	if tw.State != StateTimeWait || tw.Inode != 0 || tw.TimerExpires != 30*time.Second {
		t.Errorf("time-wait: %+v", tw)
	}
	if s := socks[4]; !s.IPv6 || s.Local != netip.MustParseAddrPort("[::]:8081") || s.State != StateListen {
		t.Errorf("v6 listener: %+v", s)
	}
	if s := socks[5]; s.Local != netip.MustParseAddrPort("[::1]:8081") || s.TxQueue != 16 || s.Retransmits != 2 {
		t.Errorf("v6 established: %+v", s)
	}
	s := socks[6]
	if s.Remote.Addr() != netip.MustParseAddr("::ffff:127.0.0.1") || s.RemoteHost() != netip.MustParseAddrPort("127.0.0.1:57345") {
		t.Errorf("mapped: %v %v", s.Remote, s.RemoteHost())
	}
	if TCPState(99).String() != "STATE(99)" {
		t.Error(TCPState(99).String())
	}
}

func TestTCPSocketsMissingAndMalformed(t *testing.T) {
	_, err := FS{Root: "testdata/minimal"}.TCPSockets()
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "proc/net/tcp") {
		t.Errorf("missing: %v", err)
	}
	_, err = FS{Root: "testdata/malformed"}.TCPSockets()
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "proc/net/tcp") || !strings.Contains(err.Error(), "0100007G") {
		t.Errorf("malformed: %v", err)
	}
	for _, line := range []string{
		"0: 0100007F:1F90",
		"0: 0100007F:1F90 00000000:0000 0A 0000000000000000 00:00000000 00000000 0 0 1 1",
		"0: 0100007F:1F90 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1 1",
		"0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1",
		"0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
		"0: 0100007F:FFFFF 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
		"0: 00007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
	} {
		if _, err := parseTCPLine(line, false); err == nil {
			t.Errorf("accepted %q", line)
		}
	}
}

func TestListenBacklogs(t *testing.T) {
	m, err := fixture.ListenBacklogs()
	if err != nil || len(m) != 3 || m[1001] != 4096 || m[1002] != 128 {
		t.Errorf("ListenBacklogs = %v, %v", m, err)
	}
	if _, err := (FS{Root: "testdata/minimal"}).ListenBacklogs(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if _, err := (FS{Root: "testdata/malformed"}).ListenBacklogs(); !errors.Is(err, ErrMalformed) {
		t.Errorf("malformed: %v", err)
	}
}

func TestCounters(t *testing.T) {
	c, err := fixture.NetStat()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Get("TcpExt", "ListenOverflows"); !ok || v != 12 {
		t.Errorf("ListenOverflows = %d %v", v, ok)
	}
	if v, _ := c.Get("TcpExt", "TCPTimeouts"); v != 3 {
		t.Errorf("TCPTimeouts = %d", v)
	}
	if v, _ := c.Get("IpExt", "InOctets"); v <= 0 {
		t.Errorf("saturated counter = %d", v)
	}
	if _, ok := c.Get("TcpExt", "Nope"); ok {
		t.Error("unknown counter found")
	}
	s, err := fixture.SNMP()
	if v, _ := s.Get("Tcp", "MaxConn"); err != nil || v != -1 {
		t.Errorf("MaxConn = %d, %v", v, err)
	}
	up, err := fixture.Uptime()
	if err != nil || up != 93784210*time.Millisecond {
		t.Errorf("Uptime = %v, %v", up, err)
	}

	bad := FS{Root: "testdata/malformed"}
	if _, err := bad.NetStat(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "3 names but 2 values") {
		t.Errorf("netstat: %v", err)
	}
	if _, err := bad.SNMP(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "proc/net/snmp") {
		t.Errorf("snmp: %v", err)
	}
	if _, err := bad.Uptime(); !errors.Is(err, ErrMalformed) {
		t.Errorf("uptime: %v", err)
	}
	if _, err := (FS{Root: "testdata/minimal"}).NetStat(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
}

func TestProcesses(t *testing.T) {
	ps, err := fixture.Processes()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("got %d processes: %+v", len(ps), ps)
	}
	p := ps[0]
	if p.PID != 100 || p.Comm != "server" || p.OpenFiles != 7 || p.Err != nil ||
		p.MaxOpenFiles != (Limit{1024, 4096}) || len(p.Sockets) != 4 ||
		p.Sockets[0] != 1001 || p.Sockets[1] != 1003 {
		t.Errorf("server: %+v", p)
	}
	if p := ps[1]; p.MaxOpenFiles != (Limit{Unlimited, Unlimited}) || len(p.Sockets) != 2 {
		t.Errorf("helper: %+v", p)
	}
	if p := ps[2]; p.Comm != "kworker/0:1" || p.OpenFiles != 0 || len(p.Sockets) != 0 {
		t.Errorf("no-fd process: %+v", p)
	}
	owners := SocketOwners(ps)
	if o := owners[1001]; len(o) != 2 || ps[o[0]].PID != 100 || ps[o[1]].PID != 200 {
		t.Errorf("owners of 1001: %v", o)
	}
	if o := owners[1003]; len(o) != 1 {
		t.Errorf("owners of dup'ed 1003: %v", o)
	}

	if _, err := fixture.Process(999); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Process(999): %v", err)
	}
	bp, err := FS{Root: "testdata/malformed"}.Process(7)
	if err != nil || !errors.Is(bp.Err, ErrMalformed) || !strings.Contains(bp.Err.Error(), "proc/7/limits") {
		t.Errorf("malformed limits: %+v, %v", bp, err)
	}
	if _, err := (FS{Root: "testdata/nonexistent"}).Processes(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no proc: %v", err)
	}
}
