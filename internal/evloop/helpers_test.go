//go:build linux

package evloop

// The tests drive Conns with a small Sink of their own, as netconn's do: a
// server Sink that echoes each request from a goroutine of its own (as a
// server's handler would) or hands it to the test, and a client Sink that
// hands each call's end to its caller. Peers are evloop Conns, netconn
// Conns, or a raw peer speaking the protocol by hand with wire.Framer.

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// conn is what the tests use of an evloop or a netconn Conn.
type conn interface {
	Call(cl *core.Call) error
	Abandon(cl *core.Call, err error)
	Answer(id uint64, md wire.Metadata, body []byte)
	GoAway(reason wire.Reason, msg string) (uint64, bool)
	Drain()
	Close(err error)
	Done() <-chan struct{}
	Err() error
	Stats() core.Stats
}

// sink is a core.Sink for tests.
type sink struct {
	conn conn // set before the connection starts

	// held, if not nil, receives every request (a copy); the test answers
	// them. Otherwise each request is echoed from a goroutine of its own.
	held chan core.Incoming

	handlers sync.WaitGroup // echo goroutines

	ready     chan struct{} // closed by Ready
	goAway    chan struct{} // closed by GoAway
	closed    chan struct{} // closed by Closed
	closeErr  error         // set before closed is closed
	closes    atomic.Int32  // Closed calls
	requests  atomic.Int64  // requests received
	heartbeat atomic.Int64  // PONGs received for our PINGs
}

func newSink() *sink {
	return &sink{ready: make(chan struct{}), goAway: make(chan struct{}), closed: make(chan struct{})}
}

func (s *sink) Ready(wire.Hello) { close(s.ready) }

func (s *sink) Request(in core.Incoming) bool {
	s.requests.Add(1)
	if s.held != nil {
		in.Method = bytes.Clone(in.Method)
		in.Body = bytes.Clone(in.Body)
		in.Metadata = nil
		select {
		case s.held <- in:
			return true
		default:
			return false // the test's channel is full: refused (OVERLOADED)
		}
	}
	id, body := in.ID, bytes.Clone(in.Body)
	s.handlers.Add(1)
	go func() {
		defer s.handlers.Done()
		s.conn.Answer(id, nil, body)
	}()
	return true
}

func (s *sink) Cancelled(uint64) {}

// result is the end of a client call.
type result struct {
	body []byte
	err  error
}

func (s *sink) CallDone(c *core.Call, body []byte, _ wire.Metadata, err error) {
	c.Owner.(chan result) <- result{bytes.Clone(body), err} // buffered: never blocks
}

func (s *sink) GoAway(uint64, wire.Reason, []byte) { close(s.goAway) }

func (s *sink) Closed(err error) {
	if s.closes.Add(1) == 1 {
		s.closeErr = err
		close(s.closed)
	}
}

func (s *sink) HeartbeatRTT(time.Duration) { s.heartbeat.Add(1) }

// endpoint is one Conn, its Sink, and a channel closed when it is over
// (evloop: onDone ran; netconn: Run returned).
type endpoint struct {
	conn
	sink *sink
	ran  chan struct{}
}

// newLoops starts n loops, closed by the test's cleanup.
func newLoops(t testing.TB, n int) *Loops {
	t.Helper()
	l, err := NewLoops(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// startEv adopts nc on l and starts it; the test's cleanup closes it and
// waits for onDone and the echo goroutines.
func startEv(t testing.TB, l *Loops, nc net.Conn, role core.Role, cfg session.Config, s *sink) *endpoint {
	t.Helper()
	if s == nil {
		s = newSink()
	}
	c, err := l.Adopt(nc, core.NewParams(role, cfg, core.Options{}), s)
	if err != nil {
		t.Fatal(err)
	}
	s.conn = c
	e := &endpoint{conn: c, sink: s, ran: make(chan struct{})}
	c.Start(func() { close(e.ran) })
	t.Cleanup(func() {
		c.Close(nil)
		waitClosed(t, e.ran, 5*time.Second, "onDone")
		s.handlers.Wait()
	})
	return e
}

// startNet runs nc with netconn, as startEv does with evloop.
func startNet(t testing.TB, nc net.Conn, role core.Role, cfg session.Config, s *sink) *endpoint {
	t.Helper()
	if s == nil {
		s = newSink()
	}
	c := netconn.New(nc, core.NewParams(role, cfg, core.Options{}), s)
	s.conn = c
	e := &endpoint{conn: c, sink: s, ran: make(chan struct{})}
	go func() {
		defer close(e.ran)
		c.Run()
	}()
	t.Cleanup(func() {
		c.Close(nil)
		waitClosed(t, e.ran, 5*time.Second, "Run")
		s.handlers.Wait()
	})
	return e
}

// call makes a call and waits for its end; a call the core has not ended
// 30s after its deadline is reported as a failure.
func call(t *testing.T, c conn, body []byte, timeout time.Duration) ([]byte, error) {
	t.Helper()
	done := make(chan result, 1)
	cl := &core.Call{Method: "echo", Body: body, Deadline: netconn.At(time.Now().Add(timeout)), Owner: done}
	if err := c.Call(cl); err != nil {
		return nil, err
	}
	select {
	case r := <-done:
		return r.body, r.err
	case <-time.After(timeout + 30*time.Second):
		t.Errorf("a call with a deadline %v away was not ended 30s after it", timeout)
		c.Abandon(cl, session.ErrTimeout)
		r := <-done
		return r.body, r.err
	}
}

// waitClosed waits up to d for ch to be closed, failing the test after.
func waitClosed(t testing.TB, ch <-chan struct{}, d time.Duration, what string) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		t.Errorf("%s: not done within %v", what, d)
		return false
	}
}

// waitFor polls cond every millisecond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

// tcpPair returns the two ends of a loopback TCP connection. Buffer sizes
// other than 0 are set on the sockets before they connect: small ones make
// a peer that does not read fill them quickly.
func tcpPair(t testing.TB, bufSize int) (client, server *net.TCPConn) {
	t.Helper()
	lc := net.ListenConfig{Control: sockBufs(bufSize)}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	d := net.Dialer{Control: sockBufs(bufSize)}
	cli, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		cli.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() { cli.Close(); a.c.Close() })
	return cli.(*net.TCPConn), a.c.(*net.TCPConn)
}

// sockBufs sets SO_SNDBUF and SO_RCVBUF to n, unless n is 0.
func sockBufs(n int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		if n == 0 {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n); serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// rawPeer speaks the protocol by hand over one end of a connection.
type rawPeer struct {
	nc net.Conn
	fr *wire.Framer
}

func newRawPeer(nc net.Conn) *rawPeer { return &rawPeer{nc: nc, fr: wire.NewFramer(nc, nc)} }

// handshake runs the client's side of the HELLO exchange, bounded by 5s.
func (p *rawPeer) handshake(t *testing.T) wire.Hello {
	t.Helper()
	_ = p.nc.SetDeadline(time.Now().Add(5 * time.Second))
	h, err := p.fr.ClientHandshake(wire.Hello{})
	if err != nil {
		t.Fatalf("raw peer's handshake: %v", err)
	}
	_ = p.nc.SetDeadline(time.Time{})
	return h
}
