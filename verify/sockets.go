package verify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/faultnet"
)

// mono is CLOCK_MONOTONIC in nanoseconds: one clock for this process and
// the agents it starts.
func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// since is the time from mono reading t0 to t1.
func since(t0, t1 int64) time.Duration { return time.Duration(t1 - t0) }

// TCP states as /proc/net/tcp numbers them.
const (
	tcpEstablished = 0x01
	tcpTimeWait    = 0x06
	tcpCloseWait   = 0x08
	tcpLastAck     = 0x09
	tcpListen      = 0x0A
)

var tcpStateNames = map[int]string{
	0x01: "ESTABLISHED", 0x02: "SYN_SENT", 0x03: "SYN_RECV", 0x04: "FIN_WAIT1",
	0x05: "FIN_WAIT2", 0x06: "TIME_WAIT", 0x07: "CLOSE", 0x08: "CLOSE_WAIT",
	0x09: "LAST_ACK", 0x0A: "LISTEN", 0x0B: "CLOSING",
}

// tcpSocket is one row of a namespace's /proc/net/tcp.
type tcpSocket struct {
	Local, Remote netip.AddrPort
	State         int
	TxQueue       int // bytes sent and not yet acknowledged (write_seq - snd_una)
}

func (s tcpSocket) String() string {
	return fmt.Sprintf("%v->%v %s", s.Local, s.Remote, tcpStateNames[s.State])
}

// tcpTable reads the IPv4 TCP sockets of h's namespace: the table under
// /proc/thread-self is the one of the thread's namespace, and Host.Do runs
// on a thread inside h's.
func tcpTable(h *faultnet.Host) ([]tcpSocket, error) {
	var b []byte
	err := h.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseTCPTable(b)
}

func parseTCPTable(b []byte) ([]tcpSocket, error) {
	var out []tcpSocket
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		local, err := parseHexAddr(f[1])
		if err != nil {
			return nil, err
		}
		remote, err := parseHexAddr(f[2])
		if err != nil {
			return nil, err
		}
		st, err := strconv.ParseInt(f[3], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("verify: /proc/net/tcp state %q: %w", f[3], err)
		}
		tx, _, _ := strings.Cut(f[4], ":")
		txq, err := strconv.ParseInt(tx, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("verify: /proc/net/tcp tx_queue %q: %w", f[4], err)
		}
		out = append(out, tcpSocket{Local: local, Remote: remote, State: int(st), TxQueue: int(txq)})
	}
	return out, sc.Err()
}

// parseHexAddr parses "0100007F:1CFC": an IPv4 address in host byte order
// (little-endian here) and a port in hex.
func parseHexAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(a) != 8 {
		return netip.AddrPort{}, fmt.Errorf("verify: /proc/net/tcp address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("verify: /proc/net/tcp address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("verify: /proc/net/tcp port %q: %w", s, err)
	}
	ip := netip.AddrFrom4([4]byte{raw[3], raw[2], raw[1], raw[0]})
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// waitNone polls h's TCP table until no socket matches, and returns when
// that was first seen (a mono reading). It fails after limit.
func waitNone(ctx context.Context, h *faultnet.Host, limit time.Duration, match func(tcpSocket) bool) (int64, []tcpSocket, error) {
	deadline := time.Now().Add(limit)
	for {
		t := mono()
		socks, err := tcpTable(h)
		if err != nil {
			return 0, nil, err
		}
		var found []tcpSocket
		for _, s := range socks {
			if match(s) {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			return t, nil, nil
		}
		if time.Now().After(deadline) {
			return 0, found, fmt.Errorf("still there after %v: %v", limit, found)
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return 0, found, err
		}
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nsSysctl reads an integer sysctl as h's namespace sees it (a new
// namespace starts with the kernel's defaults for most net.ipv4 sysctls, not
// the host's values), or returns -1.
func nsSysctl(h *faultnet.Host, name string) int {
	n := -1
	_ = h.Do(func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err != nil {
			return err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return nil
		}
		if v, err := strconv.Atoi(f[0]); err == nil {
			n = v
		}
		return nil
	})
	return n
}

// retransmitGiveUp is how long the kernel retransmits unacknowledged data
// before it drops the connection, for tcp_retries2 = r: the RTO starts at
// 200 ms (TCP_RTO_MIN) and doubles up to 120 s (TCP_RTO_MAX); 924.6 s for
// the default 15.
func retransmitGiveUp(r int) time.Duration {
	var total time.Duration
	rto := 200 * time.Millisecond
	for i := 0; i <= r; i++ {
		total += rto
		rto = min(2*rto, 120*time.Second)
	}
	return total
}

// synGiveUp is how long a connect waits for tcp_syn_retries = r: the
// initial RTO is 1 s and doubles; 127 s for the default 6.
func synGiveUp(r int) time.Duration {
	var total time.Duration
	rto := time.Second
	for i := 0; i <= r; i++ {
		total += rto
		rto *= 2
	}
	return total
}
