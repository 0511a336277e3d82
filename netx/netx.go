// Package netx builds tcppro's listeners and dialers: SO_REUSEADDR set
// explicitly on listeners, the port policy (never listen inside the
// kernel's ephemeral range unless the port is reserved), connect timeouts,
// and the per-connection socket options (TCP_NODELAY, TCP_USER_TIMEOUT,
// keepalive as a backstop, optional buffer sizes).
package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/sysinfo"
)

// Options are the socket options applied to every connection, accepted or
// dialed. Zero values mean the documented default.
type Options struct {
	// UserTimeout sets TCP_USER_TIMEOUT: how long transmitted data may stay
	// unacknowledged before the kernel drops the connection (the default
	// with tcp_retries2=15 is about 924.6 s). tcppro sets it near the
	// heartbeat bound. 0 leaves the kernel default; negative too.
	UserTimeout time.Duration

	// KeepAlive is TCP keepalive, kept on as a backstop behind
	// application heartbeats. Zero fields take DefaultKeepAlive's values,
	// so the zero KeepAlive turns keepalive on with the defaults (set
	// Disable to turn it off).
	KeepAlive KeepAlive

	// DelayWrites turns Nagle's algorithm back on. Default false: TCP_NODELAY
	// is set, since tcppro coalesces its own writes and Nagle would only add
	// latency.
	DelayWrites bool

	// RecvBuffer and SendBuffer set SO_RCVBUF and SO_SNDBUF in bytes. 0
	// (the default) leaves kernel autotuning on, which is almost always
	// right: a fixed size disables autotuning for that socket.
	RecvBuffer int
	SendBuffer int
}

// KeepAlive configures TCP keepalive probes.
type KeepAlive struct {
	Disable  bool          // turn keepalive off entirely; default false
	Idle     time.Duration // idle time before the first probe; default 30s
	Interval time.Duration // between probes; default 10s
	Count    int           // unanswered probes before the connection is dropped; default 3
}

// DefaultKeepAlive is the backstop keepalive: a dead peer that heartbeats
// somehow missed is dropped after 30s + 3×10s = 60s.
var DefaultKeepAlive = KeepAlive{Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}

func (k KeepAlive) withDefaults() KeepAlive {
	defaults.Set(&k.Idle, DefaultKeepAlive.Idle)
	defaults.Set(&k.Interval, DefaultKeepAlive.Interval)
	defaults.Set(&k.Count, DefaultKeepAlive.Count)
	return k
}

// Apply sets the options on a TCP connection.
func (o Options) Apply(c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	if err := tc.SetNoDelay(!o.DelayWrites); err != nil {
		return fmt.Errorf("netx: TCP_NODELAY: %w", err)
	}
	if o.KeepAlive.Disable {
		if err := tc.SetKeepAlive(false); err != nil {
			return fmt.Errorf("netx: SO_KEEPALIVE: %w", err)
		}
	} else {
		k := o.KeepAlive.withDefaults()
		if err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: k.Idle, Interval: k.Interval, Count: k.Count}); err != nil {
			return fmt.Errorf("netx: keepalive: %w", err)
		}
	}
	if o.RecvBuffer > 0 {
		if err := tc.SetReadBuffer(o.RecvBuffer); err != nil {
			return fmt.Errorf("netx: SO_RCVBUF: %w", err)
		}
	}
	if o.SendBuffer > 0 {
		if err := tc.SetWriteBuffer(o.SendBuffer); err != nil {
			return fmt.Errorf("netx: SO_SNDBUF: %w", err)
		}
	}
	if o.UserTimeout > 0 {
		raw, err := tc.SyscallConn()
		if err != nil {
			return err
		}
		if err := setUserTimeout(raw, o.UserTimeout); err != nil {
			return err
		}
	}
	return nil
}

func setUserTimeout(raw syscall.RawConn, d time.Duration) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("netx: TCP_USER_TIMEOUT: %w", err)
	}
	return nil
}

// UserTimeout reads TCP_USER_TIMEOUT back from a connection.
func UserTimeout(c net.Conn) (time.Duration, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errors.New("netx: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		return 0, err
	}
	return time.Duration(v) * time.Millisecond, serr
}

// ErrEphemeralPort is matched (errors.Is) by a *PortPolicyError.
var ErrEphemeralPort = errors.New("netx: port inside the ephemeral range")

// PortPolicyError refuses a listening port inside the kernel's ephemeral
// port range that is not reserved: any outgoing connection on the host may
// take that port first, and the service then fails to start after a
// restart.
type PortPolicyError struct {
	Port  int
	Range sysinfo.PortRange
}

func (e *PortPolicyError) Error() string {
	return fmt.Sprintf("port %d is inside the ephemeral port range %d-%d (net.ipv4.ip_local_port_range) and not reserved, "+
		"so an outgoing connection can take it before a restart binds it; pick a port outside the range, "+
		"or reserve it with: sysctl -w net.ipv4.ip_local_reserved_ports=%d (or allow it explicitly: --allow-ephemeral-port)",
		e.Port, e.Range.Lo, e.Range.Hi, e.Port)
}

func (e *PortPolicyError) Is(target error) bool { return target == ErrEphemeralPort }

// CheckPort applies the port policy to port, reading the ranges from fs.
// Port 0 (any free port, the kernel picks from the ephemeral range) is
// accepted: it is an explicit request, used by tests and tools.
func CheckPort(fs sysinfo.FS, port int) error {
	if port == 0 {
		return nil
	}
	r, err := fs.LocalPortRange()
	if err != nil {
		return fmt.Errorf("netx: port policy: %w", err)
	}
	if !r.Contains(port) {
		return nil
	}
	reserved, err := fs.ReservedPorts()
	if err != nil {
		return fmt.Errorf("netx: port policy: %w", err)
	}
	if reserved.Contains(port) {
		return nil
	}
	return &PortPolicyError{Port: port, Range: r}
}

// ListenConfig builds listeners.
type ListenConfig struct {
	// AllowEphemeralPort skips the port policy. Default false.
	AllowEphemeralPort bool
	// FS is where the port policy reads the kernel's port ranges; the zero
	// value reads the live host.
	FS sysinfo.FS
	// Backlog is not settable per listener in Go: the kernel uses
	// net.core.somaxconn. `tcppro doctor` checks it.
}

// Check reports what Listen would refuse addr for before binding: an
// address that is not host:port, or a port the port policy refuses
// (ErrEphemeralPort), so that a command can refuse a bad flag before it
// starts.
func (lc ListenConfig) Check(addr string) error {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("netx: listen address %q: %w", addr, err)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return fmt.Errorf("netx: listen address %q: %w", addr, err)
	}
	if !lc.AllowEphemeralPort {
		return CheckPort(lc.FS, port)
	}
	return nil
}

// Listen opens a TCP listener on addr with SO_REUSEADDR set explicitly, so
// a restarted service binds at once even while connections of its previous
// life sit in TIME_WAIT, after checking the port policy.
func (lc ListenConfig) Listen(ctx context.Context, addr string) (net.Listener, error) {
	if err := lc.Check(addr); err != nil {
		return nil, err
	}
	nlc := net.ListenConfig{
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			})
			if err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("netx: SO_REUSEADDR: %w", err)
			}
			return nil
		},
		// Accepted connections get their options from Options.Apply.
		KeepAlive: -1,
	}
	return nlc.Listen(ctx, "tcp", addr)
}

// ReuseAddr reports whether SO_REUSEADDR is set on a listener.
func ReuseAddr(ln net.Listener) (bool, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return false, errors.New("netx: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR)
	}); err != nil {
		return false, err
	}
	return v != 0, serr
}

// DefaultDialTimeout bounds a connect: the kernel's own bound with
// tcp_syn_retries=6 is about 127 s.
const DefaultDialTimeout = 3 * time.Second

// Dialer connects with a timeout and applies Options.
type Dialer struct {
	// Timeout bounds the connect. Default DefaultDialTimeout (3s).
	Timeout time.Duration
	Options Options
}

// DialError is a failed connect; Timeout reports a connect that ran out
// of time (a black hole, a dead host) rather than one refused.
type DialError struct {
	Addr    string
	Timeout bool
	Err     error
}

func (e *DialError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("dial %s: no answer within the dial timeout: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("dial %s: %v", e.Addr, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// DialContext connects to addr over TCP.
func (d Dialer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	timeout := d.Timeout
	defaults.Set(&timeout, DefaultDialTimeout)
	nd := net.Dialer{Timeout: timeout, KeepAlive: -1}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		var ne net.Error
		to := errors.As(err, &ne) && ne.Timeout()
		return nil, &DialError{Addr: addr, Timeout: to, Err: err}
	}
	if err := d.Options.Apply(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// PortOf returns the numeric port of a listener or connection address.
func PortOf(a net.Addr) int {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
