//go:build linux

package evloop

import (
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
)

// TestConformance runs the drivers' conformance suite on evloop, each
// test's connections on one loop of their own, where they meet each
// other's trouble (a peer that does not read, a stalled loop), and paired
// with netconn: a server on one driver, its client on the other.
func TestConformance(t *testing.T) { conntest.Run(t, driver(perTest(1)), netconnDriver) }

// TestConcurrentEchoOnTwoLoops runs the suite's echo again with each
// test's connections spread over two loops, whose goroutines then read,
// write and fire timers at once.
func TestConcurrentEchoOnTwoLoops(t *testing.T) { conntest.ConcurrentEcho(t, driver(perTest(2))) }

// driver is evloop as internal/conntest sees it, its connections adopted
// by the Loops that loops returns for the test.
func driver(loops func(testing.TB) *Loops) conntest.Driver {
	return conntest.Driver{
		Name: "evloop",
		New: func(t testing.TB, nc net.Conn, p *core.Params, s core.Sink) (conntest.Conn, error) {
			c, err := loops(t).Adopt(nc, p, s)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Start: func(c conntest.Conn, ended func()) { c.(*Conn).Start(ended) },
		At:    netconn.At,
		Stall: func(t *testing.T, nc net.Conn) (net.Conn, conntest.StallFunc) {
			return nc, func(c conntest.Conn, _ func()) func() { return stallLoop(t, loops(t), c.(*Conn)) }
		},
		Watching: func(c conntest.Conn) (read, write bool) {
			ev := c.(*Conn).watched()
			return ev&unix.EPOLLIN != 0, ev&unix.EPOLLOUT != 0
		},
		Parks: true, // package doc: a parked connection blocks nobody
	}
}

// on is evloop on l.
func on(l *Loops) conntest.Driver { return driver(func(testing.TB) *Loops { return l }) }

// perTest gives each test Loops of n loops of its own, started at its
// first connection and closed by its cleanup, after its connections.
func perTest(n int) func(testing.TB) *Loops {
	var mu sync.Mutex
	loops := map[testing.TB]*Loops{}
	return func(t testing.TB) *Loops {
		mu.Lock()
		defer mu.Unlock()
		l := loops[t]
		if l == nil {
			l = newLoops(t, n)
			loops[t] = l
			t.Cleanup(func() {
				mu.Lock()
				delete(loops, t)
				mu.Unlock()
			})
		}
		return l
	}
}

// netconnDriver is internal/netconn, for the tests whose two sides run on
// different drivers.
var netconnDriver = conntest.Driver{
	Name: "netconn",
	New: func(_ testing.TB, nc net.Conn, p *core.Params, s core.Sink) (conntest.Conn, error) {
		return netconn.New(nc, p, s), nil
	},
	Start: func(c conntest.Conn, ended func()) {
		go func() {
			defer ended()
			c.(*netconn.Conn).Run()
		}()
	},
	At:      netconn.At,
	AnyConn: true,
}

// watched is what the loop watches c's socket for.
func (c *Conn) watched() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

// blockingSink stalls the loop: its Request, called on the loop's
// goroutine, waits until release is closed.
type blockingSink struct {
	*conntest.Sink
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSink) Request(core.Incoming) bool {
	close(b.entered)
	<-b.release
	return false
}

// stallLoop is evloop's Stall: it stalls c's loop as another connection's
// Sink does that blocks on the loop's goroutine (in life: the process
// stopped or starved). That connection is adopted by l, whose one loop
// is c's, and its request's Sink waits until resume.
func stallLoop(t *testing.T, l *Loops, c *Conn) (resume func()) {
	cli, srv := conntest.TCPPair(t, 0)
	bs := &blockingSink{Sink: conntest.NewSink(), entered: make(chan struct{}), release: make(chan struct{})}
	b, err := l.Adopt(srv, core.NewParams(core.Server, session.Config{}, core.Options{}), bs)
	if err != nil {
		t.Fatal(err)
	}
	if b.lp != c.lp {
		b.Close(nil)
		t.Fatal("the stalling connection is not on the stalled one's loop")
	}
	ran := make(chan struct{})
	b.Start(func() { close(ran) })
	var once sync.Once
	resume = func() { once.Do(func() { close(bs.release) }) }
	t.Cleanup(func() {
		b.Close(nil)
		conntest.WaitClosed(t, ran, 5*time.Second, "onDone of the stalling connection")
	})
	t.Cleanup(resume) // first: the loop runs again
	peer := conntest.NewRawPeer(cli)
	peer.Handshake(t)
	if err := peer.Fr.WriteRequest(1, false, 0, "stall", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bs.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalling request never reached its Sink")
	}
	return resume
}
