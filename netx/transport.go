package netx

import (
	"fmt"
	"os"
	"runtime"
)

// Transport names the machinery that moves a connection's bytes: both
// drive the same protocol core, so the choice changes costs, never
// behaviour.
type Transport string

// Transports.
const (
	// TransportAuto is the default: TransportEpoll on Linux for plain TCP
	// connections (a *net.TCPConn without TLS, whether the server's or
	// the client's own or from a caller's listener or Dial), and
	// TransportNetConn for the others (TLS, a listener or Dial that wraps
	// its connections, other systems). The event loop holds an idle
	// connection in a fraction of the memory and serves at least as many
	// calls per second (bench/, README "Performance"); TransportEnv
	// changes the choice for a whole process.
	TransportAuto Transport = "auto"
	// TransportEpoll is the event loop: a few loops (one per core) own the
	// sockets through epoll; an idle connection holds no goroutine, no
	// read buffer and no timer of its own. Linux, plain TCP only.
	TransportEpoll Transport = "epoll"
	// TransportNetConn is a goroutine per connection over any net.Conn:
	// TLS, a caller's own wrappers, every system.
	TransportNetConn Transport = "netconn"
)

// TransportEnv, when set to "epoll" or "netconn", replaces TransportAuto's
// choice in every server and client of the process where that transport
// can serve the connection (TLS stays on netconn): so that one test suite
// runs on both transports. It is not the serve and call commands'
// TCPPRO_TRANSPORT, which sets their --transport flag (and an explicit
// epoll refuses TLS).
const TransportEnv = "TCPPRO_TRANSPORT_AUTO"

// Validate reports an unknown transport, or one this system lacks.
func (t Transport) Validate() error {
	switch t {
	case "", TransportAuto, TransportNetConn:
		return nil
	case TransportEpoll:
		if runtime.GOOS != "linux" {
			return fmt.Errorf("netx: transport %q needs Linux (this is %s)", t, runtime.GOOS)
		}
		return nil
	}
	return fmt.Errorf("netx: unknown transport %q (want %q, %q or %q)", t, TransportAuto, TransportEpoll, TransportNetConn)
}

// EventLoop reports whether a connection should go to the event loop:
// plain tells whether it is plain TCP the loop can own (a *net.TCPConn,
// no TLS).
func (t Transport) EventLoop(plain bool) bool {
	if !plain || runtime.GOOS != "linux" {
		return false
	}
	switch t {
	case TransportEpoll:
		return true
	case TransportNetConn:
		return false
	}
	switch os.Getenv(TransportEnv) {
	case string(TransportNetConn):
		return false
	case string(TransportEpoll):
		return true
	}
	return true // auto: the event loop for plain TCP on Linux
}
