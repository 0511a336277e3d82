// Package conntest is the conformance suite of tcppro's connection
// drivers: the transports that drive a protocol core (internal/core) over
// a socket — internal/netconn (a goroutine per connection) and
// internal/evloop (event loops). A transport moves bytes and time and
// decides nothing about the protocol, so every driver owes the same
// promises; they are tested here, once, and each driver runs them from a
// test of its own, as golang.org/x/net/nettest.TestConn does for net.Conn
// and testing/fstest for file systems:
//
//	func TestConformance(t *testing.T) { conntest.Run(t, driver, others...) }
//
// What it checks, each an exported function that Run runs as a subtest
// (so that a driver can also run one again in another setting):
//
//   - ConcurrentEcho: bodies of every size echoed byte for byte by many
//     connections and callers at once;
//   - HeartbeatsKeepIdleAlive: idle connections live on their heartbeats;
//   - CloseFromAnotherGoroutine, CloseWhileOutputWaits: Close during
//     calls, and while output waits for a peer that does not read;
//   - Done and GracefulEnd: the end of a connection, by Close, GOAWAY or
//     Drain;
//   - TimerFiresDeadlines, BodyStallUnderFrameFlood: the timers fire the
//     core's deadlines with nothing else happening, and under a flood of
//     frames that are no progress;
//   - StallIsNotPeerSilence: a driver that stops running (a stopped
//     process) does not take its peer for dead;
//   - ReadingPausesWhileAnswersWait, PeerNeverReads: back-pressure from a
//     peer that does not read — reading pauses and resumes, and the
//     connection ends by its write timeout while the peer's PINGs are
//     still read.
//
// They run over loopback TCP, over TCP with small socket buffers where a
// peer must fill them, and also over net.Pipe (a write returns once the
// other end has read it) for a driver that takes any net.Conn.
//
// A driver plugs in with a Driver: how it makes a connection (New) and
// starts it (Start), its clock (At), whether it takes any net.Conn or
// only TCP (AnyConn), and optional hooks for what the suite cannot do the
// same way on every driver: stopping its work on a connection as a
// stopped process stops it (Stall), and seeing what it waits for on a
// socket (Watching). The other drivers given to Run are paired with it:
// the tests that have a driver on both sides also run with the server on
// one and the client on the other, both ways.
//
// The package also holds what the drivers' own tests share: a Sink, TCP
// and pipe pairs, a raw peer, echo calls. It is imported by tests only,
// and imports no driver.
package conntest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Conn is what the suite uses of a driver's connection: the methods of
// *netconn.Conn and *evloop.Conn that drive its core.
type Conn interface {
	Call(cl *core.Call) error
	Abandon(cl *core.Call, err error)
	Answer(id uint64, md wire.Metadata, body []byte)
	GoAway(reason wire.Reason, msg string) (lastID uint64, first bool)
	Drain()
	Close(err error)
	Done() <-chan struct{}
	Err() error
	Stats() core.Stats
}

// Driver is a connection driver under test.
type Driver struct {
	// Name names the driver in subtests and messages.
	Name string
	// New makes a connection that drives a core made from p over nc and
	// calls sink; it reads and writes nothing before Start.
	New func(t testing.TB, nc net.Conn, p *core.Params, sink core.Sink) (Conn, error)
	// Start starts c. ended is called once, on any goroutine, when the
	// driver is done with c, its socket closed (netconn: Run has
	// returned; evloop: onDone).
	Start func(c Conn, ended func())
	// At converts a wall-clock deadline to the driver's clock, that of
	// core.Call.Deadline.
	At func(time.Time) int64
	// AnyConn reports that New takes any net.Conn: the suite then also
	// runs over net.Pipe, where a write returns only once the other end
	// has read it. Otherwise the driver is given loopback TCP only.
	AnyConn bool
	// Stall, if not nil, is how the driver's work on a connection stops as
	// it does when the process is stopped or starved: nothing read, no
	// timer fired. It is given the server's end of a TCP connection before
	// the connection is made, and returns the net.Conn to make it over (nc
	// or a wrapper of it) and the function that stalls it. Without it,
	// StallIsNotPeerSilence skips.
	Stall func(t *testing.T, nc net.Conn) (net.Conn, StallFunc)
	// Watching, if not nil, reports what the driver waits for on c's
	// socket: to read it, and to write it (output waits for the socket to
	// drain). The suite then checks it where a promise says what a
	// connection waits for.
	Watching func(c Conn) (read, write bool)
	// Parks says that the driver never blocks the goroutine that queues
	// output on a socket that takes no more (Answer, Call): the rest
	// waits for the socket, and the call returns. The suite then checks
	// that it returns while the peer reads nothing.
	Parks bool
}

// StallFunc stalls c, once its handshake is over. poke makes the peer
// send a frame (a PING), for a driver whose reader must return from the
// read it is in to stop. It returns once the driver no longer reads c,
// with the function that lets it go on; resume is called once.
type StallFunc func(c Conn, poke func()) (resume func())

// Endpoint is a started connection, its Sink, and a channel closed when
// the driver is done with it.
type Endpoint struct {
	Conn
	Name  string // the driver's name and the role
	Sink  *Sink
	Ended chan struct{}
	at    func(time.Time) int64
}

// Start makes a connection with d over nc and starts it; s nil means a
// new Sink. The test's cleanup closes it, and waits until the driver is
// done with it and the Sink's echo goroutines have returned.
func Start(t testing.TB, d Driver, nc net.Conn, role core.Role, cfg session.Config, s *Sink) *Endpoint {
	t.Helper()
	if s == nil {
		s = NewSink()
	}
	c, err := d.New(t, nc, core.NewParams(role, cfg, core.Options{}), s)
	if err != nil {
		t.Fatalf("%s: %v", d.Name, err)
	}
	s.conn = c
	e := &Endpoint{Conn: c, Name: d.Name + " " + role.String(), Sink: s, Ended: make(chan struct{}), at: d.At}
	d.Start(c, func() { close(e.Ended) })
	t.Cleanup(func() {
		c.Close(nil)
		WaitClosed(t, e.Ended, 5*time.Second, e.Name+": the end of the connection")
		s.handlers.Wait()
	})
	return e
}

// Run runs the suite on d, each test a subtest; with others, the tests
// with a driver on both sides also run on each pair of d and another
// driver, both ways.
func Run(t *testing.T, d Driver, others ...Driver) {
	t.Run("ConcurrentEcho", func(t *testing.T) { ConcurrentEcho(t, d, others...) })
	t.Run("HeartbeatsKeepIdleAlive", func(t *testing.T) { HeartbeatsKeepIdleAlive(t, d, others...) })
	t.Run("CloseFromAnotherGoroutine", func(t *testing.T) { CloseFromAnotherGoroutine(t, d, others...) })
	t.Run("GracefulEnd", func(t *testing.T) { GracefulEnd(t, d, others...) })
	t.Run("Done", func(t *testing.T) { Done(t, d) })
	t.Run("TimerFiresDeadlines", func(t *testing.T) { TimerFiresDeadlines(t, d, others...) })
	t.Run("BodyStallUnderFrameFlood", func(t *testing.T) { BodyStallUnderFrameFlood(t, d) })
	t.Run("StallIsNotPeerSilence", func(t *testing.T) { StallIsNotPeerSilence(t, d) })
	t.Run("ReadingPausesWhileAnswersWait", func(t *testing.T) { ReadingPausesWhileAnswersWait(t, d) })
	t.Run("PeerNeverReads", func(t *testing.T) { PeerNeverReads(t, d) })
	t.Run("CloseWhileOutputWaits", func(t *testing.T) { CloseWhileOutputWaits(t, d) })
}

// pair is the drivers of a connection's two sides.
type pair struct{ srv, cli Driver }

func (p pair) String() string { return "srv:" + p.srv.Name + ",cli:" + p.cli.Name }

// pairs are d on both sides, then d with each of others, both ways.
func pairs(d Driver, others []Driver) []pair {
	ps := []pair{{d, d}}
	for _, o := range others {
		ps = append(ps, pair{d, o}, pair{o, d})
	}
	return ps
}

// transport makes the two ends of a connection.
type transport struct {
	name    string
	pair    func(t testing.TB) (client, server net.Conn)
	anyConn bool // not TCP: for drivers with AnyConn only
}

// tcpBufs is loopback TCP with socket buffers of n bytes (0: the
// system's).
func tcpBufs(n int) transport {
	name := "tcp"
	if n != 0 {
		name = fmt.Sprintf("tcp %dKiB buffers", n>>10)
	}
	return transport{name: name, pair: func(t testing.TB) (net.Conn, net.Conn) {
		c, s := TCPPair(t, n)
		return c, s
	}}
}

var (
	tcp  = tcpBufs(0)
	pipe = transport{name: "pipe", pair: PipePair, anyConn: true}
)

// over keeps the transports of ts that every one of ds takes.
func over(ts []transport, ds ...Driver) []transport {
	var kept []transport
next:
	for _, tr := range ts {
		for _, d := range ds {
			if tr.anyConn && !d.AnyConn {
				continue next
			}
		}
		kept = append(kept, tr)
	}
	return kept
}
