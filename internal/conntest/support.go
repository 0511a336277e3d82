package conntest

// What the tests share: a Sink, echo calls, waits, connection pairs and
// a raw peer speaking the protocol by hand with wire.Framer.

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Sink is a core.Sink for tests. On a server it echoes each request from
// a goroutine of its own, as a server's handler would, or hands it to the
// test (Held); on a client it hands each call's end to the call's Owner,
// a buffered chan Result.
type Sink struct {
	// Held, if not nil, receives a copy of every request, which the test
	// answers; a request that finds it full is refused (OVERLOADED).
	Held chan core.Incoming

	ReadyCh    chan struct{} // closed by Ready
	GoAwayCh   chan struct{} // closed by GoAway
	ClosedCh   chan struct{} // closed by the first Closed
	CloseErr   error         // Closed's error, set before ClosedCh is closed
	Closes     atomic.Int32  // Closed calls
	Requests   atomic.Int64  // requests received
	Heartbeats atomic.Int64  // PONGs received for our PINGs

	conn     Conn           // set by Start before the connection starts
	handlers sync.WaitGroup // echo goroutines
}

// NewSink returns a Sink that echoes requests.
func NewSink() *Sink {
	return &Sink{ReadyCh: make(chan struct{}), GoAwayCh: make(chan struct{}), ClosedCh: make(chan struct{})}
}

// Ready implements core.Sink.
func (s *Sink) Ready(wire.Hello) { close(s.ReadyCh) }

// Request implements core.Sink.
func (s *Sink) Request(in core.Incoming) bool {
	s.Requests.Add(1)
	if s.Held != nil {
		in.Method = bytes.Clone(in.Method)
		in.Body = bytes.Clone(in.Body)
		in.Metadata = nil
		select {
		case s.Held <- in:
			return true
		default:
			return false
		}
	}
	id, body := in.ID, bytes.Clone(in.Body)
	s.handlers.Go(func() { s.conn.Answer(id, nil, body) })
	return true
}

// Cancelled implements core.Sink.
func (s *Sink) Cancelled(uint64) {}

// Result is the end of a client call.
type Result struct {
	Body []byte
	Err  error
}

// CallDone implements core.Sink.
func (s *Sink) CallDone(c *core.Call, body []byte, _ wire.Metadata, err error) {
	c.Owner.(chan Result) <- Result{bytes.Clone(body), err} // buffered: never blocks
}

// GoAway implements core.Sink.
func (s *Sink) GoAway(uint64, wire.Reason, []byte) { close(s.GoAwayCh) }

// Closed implements core.Sink.
func (s *Sink) Closed(err error) {
	if s.Closes.Add(1) == 1 {
		s.CloseErr = err
		close(s.ClosedCh)
	}
}

// HeartbeatRTT implements core.Sink.
func (s *Sink) HeartbeatRTT(time.Duration) { s.Heartbeats.Add(1) }

// Echo makes a call of method "echo" on a client endpoint and waits for
// its end; a call the core has not ended 30s after its deadline is
// reported as a failure.
func (e *Endpoint) Echo(t testing.TB, body []byte, timeout time.Duration) ([]byte, error) {
	t.Helper()
	done := make(chan Result, 1)
	cl := &core.Call{Method: "echo", Body: body, Deadline: e.at(time.Now().Add(timeout)), Owner: done}
	if err := e.Call(cl); err != nil {
		return nil, err
	}
	select {
	case r := <-done:
		return r.Body, r.Err
	case <-time.After(timeout + 30*time.Second):
		t.Errorf("%s: a call with a deadline %v away was not ended 30s after it", e.Name, timeout)
		e.Abandon(cl, session.ErrTimeout)
		r := <-done
		return r.Body, r.Err
	}
}

// EchoAll runs callers goroutines on each client, each making calls
// echoes of bodies from bodyFor, and checks every byte of every answer.
func EchoAll(t *testing.T, clis []*Endpoint, callers, calls int) {
	t.Helper()
	var wg sync.WaitGroup
	for ci, cli := range clis {
		for g := range callers {
			wg.Go(func() {
				for i := range calls {
					body := bodyFor(ci, g, i)
					got, err := cli.Echo(t, body, 20*time.Second)
					if err != nil {
						t.Errorf("conn %d caller %d call %d (%d bytes): %v", ci, g, i, len(body), err)
						return
					}
					if !bytes.Equal(got, body) {
						t.Errorf("conn %d caller %d call %d: answer of %d bytes differs from the %d sent, first at byte %d",
							ci, g, i, len(got), len(body), firstDiff(got, body))
						return
					}
				}
			})
		}
	}
	wg.Wait()
}

// bodyFor is the body of one call, filled from a generator seeded by the
// connection, the caller and the call, so that bytes of another call, or
// of another connection, are never equal to the expected ones by chance.
func bodyFor(conn, caller, i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(conn)<<32|uint64(caller), uint64(i)))
	n := 1 + rng.IntN(2000)
	switch i % 4 {
	case 0:
		// Exactly one frame of the default MAX_FRAME_SIZE: the answer
		// leaves as one frame larger than a 64 KiB write buffer, which
		// grows for it.
		n = wire.DefaultMaxFrameSize
	case 2:
		n += wire.DefaultMaxFrameSize // chunked: RESPONSE and DATA
	}
	b := make([]byte, n)
	for j := 0; j < n; j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < n; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// WaitClosed waits up to d for ch to be closed, failing the test after.
func WaitClosed(t testing.TB, ch <-chan struct{}, d time.Duration, what string) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		t.Errorf("%s: not done within %v", what, d)
		return false
	}
}

// CloseBlocked closes e, blocked in some way by the caller, from another
// goroutine with an error of the test's: Close must return within 2 s,
// and from then on Done close within 1 s and the driver end within 2 s;
// Err and the Sink's Closed must give that error. It returns how long it all
// took.
func CloseBlocked(t testing.TB, e *Endpoint) time.Duration {
	t.Helper()
	stop := errors.New("stopped by the test")
	begin := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		e.Close(stop)
	}()
	WaitClosed(t, closed, 2*time.Second, "Close")
	after := time.Now() // both bounds below count from Close's return
	WaitClosed(t, e.Done(), time.Second-time.Since(after), "Done")
	WaitClosed(t, e.Ended, 2*time.Second-time.Since(after), "the driver's end")
	took := time.Since(begin)
	if err := e.Err(); !errors.Is(err, stop) {
		t.Errorf("Err() = %v, want the error given to Close", err)
	}
	if !errors.Is(e.Sink.CloseErr, stop) {
		t.Errorf("Sink.Closed(%v), want the error given to Close", e.Sink.CloseErr)
	}
	return took
}

// WaitFor polls cond every millisecond until it holds or d passes.
func WaitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

// TCPPair returns the two ends of a loopback TCP connection, closed by
// the test's cleanup. A bufSize other than 0 is set as SO_SNDBUF and
// SO_RCVBUF on both sockets before they connect: small buffers make a
// peer that does not read fill them quickly.
func TCPPair(t testing.TB, bufSize int) (client, server *net.TCPConn) {
	t.Helper()
	lc := net.ListenConfig{Control: sockBufs(t, bufSize)}
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
	d := net.Dialer{Control: sockBufs(t, bufSize)}
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

// PipePair returns the two ends of an in-memory pipe, closed by the
// test's cleanup: a write returns only once the other end has read all of
// it.
func PipePair(t testing.TB) (client, server net.Conn) {
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv
}

// RawPeer speaks the protocol by hand over one end of a connection.
type RawPeer struct {
	NC net.Conn
	Fr *wire.Framer
}

// NewRawPeer returns a raw peer over nc.
func NewRawPeer(nc net.Conn) *RawPeer { return &RawPeer{NC: nc, Fr: wire.NewFramer(nc, nc)} }

// Handshake runs the client's side of the HELLO exchange, bounded by 5s.
func (p *RawPeer) Handshake(t testing.TB) wire.Hello {
	t.Helper()
	_ = p.NC.SetDeadline(time.Now().Add(5 * time.Second))
	h, err := p.Fr.ClientHandshake(wire.Hello{})
	if err != nil {
		t.Fatalf("raw peer's handshake: %v", err)
	}
	_ = p.NC.SetDeadline(time.Time{})
	return h
}
