package netconn

// The tests drive Conns with a small Sink of their own: a server Sink that
// echoes each request from a goroutine of its own (as a server's handler
// would) or hands it to the test, and a client Sink that hands each call's
// end to its caller. Peers are either two Conns, or a raw peer speaking
// the protocol by hand with wire.Framer.

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// sink is a core.Sink for tests.
type sink struct {
	conn *Conn // set before Run

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

// endpoint is one Conn, its Sink and its Run goroutine.
type endpoint struct {
	*Conn
	sink *sink
	ran  chan struct{} // closed when Run returns
}

// start makes a Conn over nc and runs it; the test's cleanup closes it and
// waits for Run and the echo goroutines to return.
func start(t *testing.T, nc net.Conn, role core.Role, cfg session.Config, s *sink) *endpoint {
	t.Helper()
	if s == nil {
		s = newSink()
	}
	c := New(nc, core.NewParams(role, cfg, core.Options{}), s)
	s.conn = c
	e := &endpoint{Conn: c, sink: s, ran: make(chan struct{})}
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

// call makes a call on a client Conn and waits for its end; a call the
// core has not ended 30s after its deadline is reported as a failure.
func call(t *testing.T, c *Conn, body []byte, timeout time.Duration) ([]byte, error) {
	t.Helper()
	done := make(chan result, 1)
	cl := &core.Call{Method: "echo", Body: body, Deadline: At(time.Now().Add(timeout)), Owner: done}
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
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) bool {
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

// transport makes the two ends of a connection.
type transport struct {
	name string
	pair func(t *testing.T) (client, server net.Conn)
}

var transports = []transport{
	{"tcp", tcpPair},
	{"pipe", pipePair},
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		cli.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() { cli.Close(); a.c.Close() })
	return cli, a.c
}

// pipePair returns the two ends of an in-memory pipe: a write returns only
// once the other end has read all of it.
func pipePair(t *testing.T) (net.Conn, net.Conn) {
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv
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

// hookConn wraps a net.Conn, counting writes and the reads and writes in
// progress, and can hold writes: while held, a Write waits until
// releaseWrites or Close.
type hookConn struct {
	net.Conn
	writes     atomic.Int64
	inRead     atomic.Int32 // Read calls in progress
	inWriteNow atomic.Int32 // Write calls in progress
	mu         sync.Mutex
	hold       chan struct{} // not nil: writes wait for it to be closed
	inWrite    chan struct{} // receives once per held Write entered
	closed     chan struct{}
	once       sync.Once
}

func newHookConn(nc net.Conn) *hookConn {
	return &hookConn{Conn: nc, inWrite: make(chan struct{}, 64), closed: make(chan struct{})}
}

// holdWrites makes the following writes wait until releaseWrites.
func (h *hookConn) holdWrites() {
	h.mu.Lock()
	h.hold = make(chan struct{})
	h.mu.Unlock()
}

func (h *hookConn) releaseWrites() {
	h.mu.Lock()
	if h.hold != nil {
		close(h.hold)
		h.hold = nil
	}
	h.mu.Unlock()
}

func (h *hookConn) Write(b []byte) (int, error) {
	h.writes.Add(1)
	h.inWriteNow.Add(1)
	defer h.inWriteNow.Add(-1)
	h.mu.Lock()
	hold := h.hold
	h.mu.Unlock()
	if hold != nil {
		select {
		case h.inWrite <- struct{}{}:
		default:
		}
		select {
		case <-hold:
		case <-h.closed:
			return 0, net.ErrClosed
		}
	}
	return h.Conn.Write(b)
}

func (h *hookConn) Read(b []byte) (int, error) {
	h.inRead.Add(1)
	defer h.inRead.Add(-1)
	return h.Conn.Read(b)
}

func (h *hookConn) Close() error {
	h.once.Do(func() { close(h.closed) })
	return h.Conn.Close()
}

// CloseWrite half-closes the connection under it, when it can.
func (h *hookConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}
