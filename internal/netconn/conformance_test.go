package netconn

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
)

// driver is netconn as internal/conntest sees it: Run on a goroutine of
// its own, over any net.Conn.
var driver = conntest.Driver{
	Name: "netconn",
	New: func(_ testing.TB, nc net.Conn, p *core.Params, s core.Sink) (conntest.Conn, error) {
		return New(nc, p, s), nil
	},
	Start: func(c conntest.Conn, ended func()) {
		go func() {
			defer ended()
			c.(*Conn).Run()
		}()
	},
	At:      At,
	AnyConn: true,
	Stall:   stallReader,
}

// TestConformance runs the drivers' conformance suite on netconn.
func TestConformance(t *testing.T) { conntest.Run(t, driver) }

// start makes a Conn over nc and runs it (see conntest.Start).
func start(t *testing.T, nc net.Conn, role core.Role, cfg session.Config, s *conntest.Sink) *conntest.Endpoint {
	t.Helper()
	return conntest.Start(t, driver, nc, role, cfg, s)
}

// stallReader is netconn's Stall: the connection's net.Conn holds the
// reader at its next Read, as a reader is held that is not scheduled,
// while the timer goes on running. The reader is in a Read when the stall
// begins; the peer's poke makes it return from it.
func stallReader(t *testing.T, nc net.Conn) (net.Conn, conntest.StallFunc) {
	sc := &stallConn{TCPConn: nc.(*net.TCPConn), waiting: make(chan struct{}, 1), closed: make(chan struct{})}
	return sc, func(_ conntest.Conn, poke func()) func() {
		sc.stall()
		poke()
		select {
		case <-sc.waiting:
		case <-time.After(5 * time.Second):
			t.Fatal("the reader did not come back for another read")
		}
		return sc.resume
	}
}

// stallConn holds the reader: while stalled, a Read waits (without
// reading) until resume. NetConn exposes the TCP connection under it, as
// a TLS connection does, for the timer's look at the socket (SIOCINQ).
type stallConn struct {
	*net.TCPConn
	mu      sync.Mutex
	gate    chan struct{} // not nil: reads wait for it to be closed
	waiting chan struct{} // receives when a Read starts waiting
	closed  chan struct{}
	once    sync.Once
}

func (s *stallConn) NetConn() net.Conn { return s.TCPConn }

func (s *stallConn) stall() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *stallConn) resume() {
	s.mu.Lock()
	close(s.gate)
	s.gate = nil
	s.mu.Unlock()
}

func (s *stallConn) Read(b []byte) (int, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		s.waiting <- struct{}{}
		select {
		case <-gate:
		case <-s.closed:
			return 0, net.ErrClosed
		}
	}
	return s.TCPConn.Read(b)
}

func (s *stallConn) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.TCPConn.Close()
}
