package sysinfo

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// TCPState is a TCP socket state as the kernel numbers it in
// /proc/net/tcp (include/net/tcp_states.h).
type TCPState uint8

// The TCP states.
const (
	StateEstablished TCPState = 1
	StateSynSent     TCPState = 2
	StateSynRecv     TCPState = 3
	StateFinWait1    TCPState = 4
	StateFinWait2    TCPState = 5
	StateTimeWait    TCPState = 6
	StateClose       TCPState = 7
	StateCloseWait   TCPState = 8
	StateLastAck     TCPState = 9
	StateListen      TCPState = 10
	StateClosing     TCPState = 11
	StateNewSynRecv  TCPState = 12
)

var stateNames = [...]string{
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

func (s TCPState) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// userHZ is the unit of the tm->when column (clock ticks, USER_HZ), which
// is 100 on every Linux architecture Go supports.
const userHZ = 100

// Socket is one row of /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	IPv6   bool           // from tcp6 (IPv4-mapped addresses stay mapped in Local/Remote)
	Local  netip.AddrPort // local address and port
	Remote netip.AddrPort // remote address and port (zero for a listener)
	State  TCPState
	// TxQueue is the bytes sent but not yet acknowledged; RxQueue the bytes
	// received but not yet read. For a LISTEN socket RxQueue is instead the
	// current accept-queue length (connections completed but not yet
	// accepted). The accept-queue limit (the listen backlog) is not in
	// /proc/net/tcp at all: see ListenBacklogs.
	TxQueue, RxQueue uint64
	Timer            int           // active timer: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe
	TimerExpires     time.Duration // time until the timer fires (may be negative when overdue)
	Retransmits      int           // unanswered retransmissions or probes
	UID              int
	Inode            uint64 // 0 for sockets no process holds (TIME_WAIT, not yet accepted)
}

// RemoteHost is the remote address with any IPv4-mapped IPv6 prefix
// removed, so the same peer compares equal whichever table it came from.
func (s Socket) RemoteHost() netip.AddrPort {
	return netip.AddrPortFrom(s.Remote.Addr().Unmap(), s.Remote.Port())
}

// TCPSockets reads the IPv4 and IPv6 TCP socket tables (proc/net/tcp and
// proc/net/tcp6) of the network namespace /proc/net belongs to. A missing
// tcp6 (IPv6 disabled) is not an error; a missing tcp is. A malformed line
// is an error naming the file and the line.
func (f FS) TCPSockets() ([]Socket, error) {
	socks, err := f.readTCPTable("proc/net/tcp", false)
	if err != nil {
		return nil, err
	}
	s6, err := f.readTCPTable("proc/net/tcp6", true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return append(socks, s6...), nil
}

func (f FS) readTCPTable(rel string, v6 bool) ([]Socket, error) {
	// Stream it: the kernel produces these tables a page per read, and
	// os.ReadFile's growing buffer makes a 30 000-socket table several
	// times slower to read than a plain loop.
	file, err := os.Open(f.Path(rel))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []Socket
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			if !strings.Contains(line, "local_address") {
				return nil, f.malformed(rel, line, "missing header line")
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		s, err := parseTCPLine(line, v6)
		if err != nil {
			return nil, f.malformed(rel, line, err.Error())
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path(rel), err)
	}
	if first {
		return nil, f.malformed(rel, "", "empty file")
	}
	return out, nil
}

// parseTCPLine parses one row:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
func parseTCPLine(line string, v6 bool) (Socket, error) {
	fld := strings.Fields(line)
	if len(fld) < 10 {
		return Socket{}, fmt.Errorf("want at least 10 fields, found %d", len(fld))
	}
	var s Socket
	var err error
	s.IPv6 = v6
	if s.Local, err = parseHexAddrPort(fld[1], v6); err != nil {
		return s, fmt.Errorf("local address: %w", err)
	}
	if s.Remote, err = parseHexAddrPort(fld[2], v6); err != nil {
		return s, fmt.Errorf("remote address: %w", err)
	}
	st, err := strconv.ParseUint(fld[3], 16, 8)
	if err != nil {
		return s, fmt.Errorf("state %q: not hex", fld[3])
	}
	s.State = TCPState(st)
	tx, rx, ok := strings.Cut(fld[4], ":")
	if !ok {
		return s, fmt.Errorf("queues %q: want tx:rx", fld[4])
	}
	if s.TxQueue, err = strconv.ParseUint(tx, 16, 64); err != nil {
		return s, fmt.Errorf("tx_queue %q: not hex", tx)
	}
	if s.RxQueue, err = strconv.ParseUint(rx, 16, 64); err != nil {
		return s, fmt.Errorf("rx_queue %q: not hex", rx)
	}
	tr, when, ok := strings.Cut(fld[5], ":")
	if !ok {
		return s, fmt.Errorf("timer %q: want tr:when", fld[5])
	}
	t, err := strconv.ParseUint(tr, 16, 8)
	if err != nil {
		return s, fmt.Errorf("timer %q: not hex", tr)
	}
	s.Timer = int(t)
	w, err := strconv.ParseUint(when, 16, 64)
	if err != nil {
		return s, fmt.Errorf("timer expiry %q: not hex", when)
	}
	// Printed with %08lX from a signed long: an overdue timer shows as a
	// huge unsigned value.
	s.TimerExpires = time.Duration(int64(w)) * time.Second / userHZ
	rt, err := strconv.ParseUint(fld[6], 16, 32)
	if err != nil {
		return s, fmt.Errorf("retransmits %q: not hex", fld[6])
	}
	s.Retransmits = int(rt)
	uid, err := strconv.ParseUint(fld[7], 10, 32)
	if err != nil {
		return s, fmt.Errorf("uid %q: not a number", fld[7])
	}
	s.UID = int(uid)
	if s.Inode, err = strconv.ParseUint(fld[9], 10, 64); err != nil {
		return s, fmt.Errorf("inode %q: not a number", fld[9])
	}
	return s, nil
}

// parseHexAddrPort parses "0100007F:1F90" (IPv4) or 32 hex digits and a
// port (IPv6). The kernel prints each 32-bit word of the address in host
// byte order, and the port as a plain number.
func parseHexAddrPort(s string, v6 bool) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: want ADDR:PORT", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port", s)
	}
	want := 8
	if v6 {
		want = 32
	}
	raw, err := hex.DecodeString(a)
	if err != nil || len(a) != want {
		return netip.AddrPort{}, fmt.Errorf("%q: want %d hex digits of address", s, want)
	}
	// Each 4-byte group was printed as a host-order uint32: undo that.
	for i := 0; i < len(raw); i += 4 {
		w := binary.BigEndian.Uint32(raw[i:])
		binary.NativeEndian.PutUint32(raw[i:], w)
	}
	var addr netip.Addr
	if v6 {
		addr = netip.AddrFrom16([16]byte(raw))
	} else {
		addr = netip.AddrFrom4([4]byte(raw))
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
