//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// clients are the transports a test's client side runs on, against a
// server on evloop.
var clients = []struct {
	name  string
	start func(t *testing.T, l *Loops, nc net.Conn, cfg session.Config, s *sink) *endpoint
}{
	{"evloop", func(t *testing.T, l *Loops, nc net.Conn, cfg session.Config, s *sink) *endpoint {
		return startEv(t, l, nc, core.Client, cfg, s)
	}},
	{"netconn", func(t *testing.T, _ *Loops, nc net.Conn, cfg session.Config, s *sink) *endpoint {
		return startNet(t, nc, core.Client, cfg, s)
	}},
}

// bodyFor is the body of one call, filled from a generator seeded by the
// connection, the caller and the call, so that bytes of another call, or
// of another connection, are never equal to the expected ones by chance.
func bodyFor(conn, caller, i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(conn)<<32|uint64(caller), uint64(i)))
	n := 1 + rng.IntN(2000)
	switch i % 4 {
	case 0:
		n = wire.DefaultMaxFrameSize // one frame larger than a 64 KiB write buffer
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

// echoAll runs callers goroutines on each client, each making calls
// checked echoes.
func echoAll(t *testing.T, clis []*endpoint, callers, calls int) {
	t.Helper()
	var wg sync.WaitGroup
	for ci, cli := range clis {
		for g := range callers {
			wg.Go(func() {
				for i := range calls {
					body := bodyFor(ci, g, i)
					got, err := call(t, cli.conn, body, 20*time.Second)
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

// TestConcurrentEcho: several connections, each with several callers, echo
// 64 KiB, chunked and small bodies at once through a server on evloop, and
// every byte of every answer is checked. Small socket buffers make writes
// park (EAGAIN) and reads see frames in pieces.
func TestConcurrentEcho(t *testing.T) {
	const conns, callers, calls = 4, 4, 24
	for _, cl := range clients {
		for _, buf := range []int{0, 8 << 10} {
			t.Run(cl.name+map[bool]string{true: "/default buffers", false: "/small buffers"}[buf == 0], func(t *testing.T) {
				l := newLoops(t, 2)
				begin := time.Now()
				var clis []*endpoint
				for range conns {
					nc, ns := tcpPair(t, buf)
					startEv(t, l, ns, core.Server, session.Config{}, nil)
					clis = append(clis, cl.start(t, l, nc, session.Config{}, nil))
				}
				echoAll(t, clis, callers, calls)
				t.Logf("TIMING %d connections × %d callers × %d echoes: %v", conns, callers, calls, time.Since(begin))
			})
		}
	}
}

// TestManyConnsFewLoops: two hundred connections on two loops (server and
// client sides on evloop), each with two callers.
func TestManyConnsFewLoops(t *testing.T) {
	const conns = 200
	l := newLoops(t, 2)
	var clis []*endpoint
	for range conns {
		nc, ns := tcpPair(t, 0)
		startEv(t, l, ns, core.Server, session.Config{}, nil)
		clis = append(clis, startEv(t, l, nc, core.Client, session.Config{}, nil))
	}
	echoAll(t, clis, 2, 3)
}

// TestDone: closed once the socket is closed, whether obtained before or
// after; onDone runs once.
func TestDone(t *testing.T) {
	l := newLoops(t, 1)
	t.Run("before close", func(t *testing.T) {
		_, ns := tcpPair(t, 0)
		srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
		done := srv.Done()
		select {
		case <-done:
			t.Fatal("Done closed while the connection is open")
		default:
		}
		srv.Close(nil)
		waitClosed(t, done, 2*time.Second, "Done obtained before Close")
		waitClosed(t, srv.ran, 2*time.Second, "onDone")
	})
	t.Run("after close", func(t *testing.T) {
		_, ns := tcpPair(t, 0)
		srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
		srv.Close(nil)
		select {
		case <-srv.Done():
		default:
			t.Fatal("Done obtained after Close returned is not closed")
		}
		if srv.Done() != srv.Done() {
			t.Error("Done returns a different channel each call")
		}
	})
	t.Run("closed before start", func(t *testing.T) {
		_, ns := tcpPair(t, 0)
		c, err := l.Adopt(ns, core.NewParams(core.Server, session.Config{}, core.Options{}), newSink())
		if err != nil {
			t.Fatal(err)
		}
		c.Close(errors.New("never started"))
		ran := make(chan struct{})
		c.Start(func() { close(ran) })
		waitClosed(t, ran, 2*time.Second, "onDone of a connection closed before Start")
	})
}

// TestAdoptTakesTCPOnly: any other net.Conn is refused and left open.
func TestAdoptTakesTCPOnly(t *testing.T) {
	l := newLoops(t, 1)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := l.Adopt(a, core.NewParams(core.Server, session.Config{}, core.Options{}), newSink()); err == nil {
		t.Fatal("Adopt took a net.Pipe")
	}
}

// TestAddrs: the addresses are those of the adopted connection.
func TestAddrs(t *testing.T) {
	l := newLoops(t, 1)
	nc, ns := tcpPair(t, 0)
	srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
	c := srv.conn.(*Conn)
	if got, want := c.RemoteAddr().String(), nc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if got, want := c.LocalAddr().String(), nc.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
}

// TestTimerFiresDeadlines: the loop's timers fire the core's deadlines
// with nothing else happening on the connection — the handshake timeout
// of a peer that sends nothing, the heartbeat of a peer gone silent, and a
// call's deadline earlier than the one its loop sleeps until.
func TestTimerFiresDeadlines(t *testing.T) {
	l := newLoops(t, 1)
	t.Run("handshake", func(t *testing.T) {
		const hs = 200 * time.Millisecond
		for _, role := range []core.Role{core.Server, core.Client} {
			nc, ns := tcpPair(t, 0)
			if role == core.Client {
				ns = nc
			}
			begin := time.Now()
			e := startEv(t, l, ns, role, session.Config{HandshakeTimeout: hs}, nil)
			waitClosed(t, e.Done(), 5*time.Second, role.String()+" facing a silent peer")
			took := time.Since(begin)
			t.Logf("TIMING %s facing a silent peer closed after %v", role, took)
			if err := e.Err(); !errors.Is(err, session.ErrHandshakeTimeout) {
				t.Errorf("%s: closed with %v, want session.ErrHandshakeTimeout", role, err)
			}
			if took < hs || took > hs+2*time.Second {
				t.Errorf("%s: closed after %v, want about HandshakeTimeout %v", role, took, hs)
			}
		}
	})

	t.Run("heartbeat", func(t *testing.T) {
		cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond}
		nc, ns := tcpPair(t, 0)
		cli := startEv(t, l, nc, core.Client, cfg, nil)
		peer := wire.NewFramer(ns, ns)
		_ = ns.SetDeadline(time.Now().Add(5 * time.Second))
		begin := time.Now()
		if _, err := peer.ServerHandshake(wire.Hello{}); err != nil {
			t.Fatal(err)
		}
		pings := 0 // the peer reads everything and answers nothing
		for {
			f, err := peer.ReadFrame()
			if err != nil {
				break
			}
			if f.Type == wire.TypePing {
				pings++
			}
		}
		waitClosed(t, cli.Done(), 5*time.Second, "client facing a silent server")
		took := time.Since(begin)
		t.Logf("TIMING silent server found dead after %v (%d PINGs sent)", took, pings)
		if err := cli.Err(); !errors.Is(err, session.ErrPeerDead) {
			t.Errorf("closed with %v, want session.ErrPeerDead", err)
		}
		if pings < 1 {
			t.Errorf("%d PINGs sent to a silent peer, want at least 1", pings)
		}
		if took < cfg.HeartbeatTimeout || took > cfg.HeartbeatTimeout+2*time.Second {
			t.Errorf("found dead after %v, want about HeartbeatTimeout %v", took, cfg.HeartbeatTimeout)
		}
	})

	t.Run("call deadline", func(t *testing.T) {
		nc, ns := tcpPair(t, 0)
		ss := newSink()
		ss.held = make(chan core.Incoming, 2) // never answered
		startEv(t, l, ns, core.Server, session.Config{}, ss)
		cli := startEv(t, l, nc, core.Client, session.Config{}, nil)
		long := make(chan error, 1)
		go func() {
			_, err := call(t, cli.conn, []byte("long"), 20*time.Second)
			long <- err
		}()
		<-ss.held // the loop sleeps until a later time (a heartbeat, the long deadline)
		const d = 300 * time.Millisecond
		begin := time.Now()
		_, err := call(t, cli.conn, []byte("short"), d)
		took := time.Since(begin)
		t.Logf("TIMING a call with a %v deadline ended after %v", d, took)
		var de *session.DeadlineError
		if !errors.As(err, &de) || !errors.Is(err, session.ErrTimeout) || !de.Sent {
			t.Errorf("call past its deadline: %v, want a *session.DeadlineError (sent) matching session.ErrTimeout", err)
		}
		if took < d || took > d+2*time.Second {
			t.Errorf("ended after %v, want about its deadline %v", took, d)
		}
		cli.Close(nil)
		if err := <-long; !errors.Is(err, session.ErrConnClosed) {
			t.Errorf("the call in flight when the connection was closed: %v, want session.ErrConnClosed", err)
		}
	})
}

// TestHeartbeatsKeepIdleAlive: two idle connections with short heartbeats,
// one client on evloop and one on netconn, stay open for many heartbeat
// timeouts, their PINGs answered by the server on evloop.
func TestHeartbeatsKeepIdleAlive(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 200 * time.Millisecond}
	l := newLoops(t, 1)
	var srvs, clis []*endpoint
	for _, cl := range clients {
		nc, ns := tcpPair(t, 0)
		srvs = append(srvs, startEv(t, l, ns, core.Server, cfg, nil))
		clis = append(clis, cl.start(t, l, nc, cfg, nil))
	}
	// An observation window: ten heartbeat timeouts of idleness.
	time.Sleep(10 * cfg.HeartbeatTimeout)
	for i, e := range append(srvs, clis...) {
		select {
		case <-e.Done():
			t.Errorf("endpoint %d closed while idle with heartbeats: %v", i, e.Err())
		default:
		}
		if n := e.sink.heartbeat.Load(); n < 3 {
			t.Errorf("endpoint %d: %d PINGs answered in %v of a %v interval, want several", i, n, 10*cfg.HeartbeatTimeout, cfg.HeartbeatInterval)
		}
	}
}

// TestGracefulEnd: after the server's GOAWAY (or the client's Drain) with
// nothing in flight, both sides send their FIN, both close, and neither
// reports an error.
func TestGracefulEnd(t *testing.T) {
	for _, cl := range clients {
		for _, how := range []string{"goaway", "drain"} {
			t.Run(cl.name+"/"+how, func(t *testing.T) {
				l := newLoops(t, 2)
				nc, ns := tcpPair(t, 0)
				srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
				cli := cl.start(t, l, nc, session.Config{}, nil)
				if got, err := call(t, cli.conn, []byte("before"), 10*time.Second); err != nil || string(got) != "before" {
					t.Fatalf("call: %q, %v", got, err)
				}
				if how == "goaway" {
					srv.GoAway(wire.ReasonShutdown, "test")
					waitClosed(t, cli.sink.goAway, 5*time.Second, "the client's GOAWAY")
				} else {
					cli.Drain()
				}
				waitClosed(t, srv.ran, 5*time.Second, "the server's end")
				waitClosed(t, cli.ran, 5*time.Second, "the client's end")
				for i, e := range []*endpoint{srv, cli} {
					if err := e.Err(); err != nil {
						t.Errorf("side %d: Err() = %v after a graceful end, want nil", i, err)
					}
					if n := e.sink.closes.Load(); n != 1 || e.sink.closeErr != nil {
						t.Errorf("side %d: Sink.Closed called %d times, with %v; want once, with nil", i, n, e.sink.closeErr)
					}
				}
			})
		}
	}
}

// TestCloseFromAnotherGoroutine: Close while callers have calls in flight
// and handlers answer: every call ends, the socket closes, onDone runs.
func TestCloseFromAnotherGoroutine(t *testing.T) {
	l := newLoops(t, 2)
	nc, ns := tcpPair(t, 0)
	srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
	cli := startEv(t, l, nc, core.Client, session.Config{}, nil)
	stop := errors.New("stopped by the test")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				if _, err := call(t, cli.conn, bodyFor(0, g, i), 10*time.Second); err != nil {
					if !errors.Is(err, stop) && !errors.Is(err, session.ErrConnClosed) {
						t.Errorf("caller %d: %v, want the error given to Close", g, err)
					}
					return
				}
			}
		})
	}
	waitFor(5*time.Second, func() bool { return srv.sink.requests.Load() >= 20 })
	cli.Close(stop)
	wg.Wait()
	waitClosed(t, cli.ran, 2*time.Second, "onDone")
	if err := cli.Err(); !errors.Is(err, stop) {
		t.Errorf("Err() = %v, want the error given to Close", err)
	}
	waitClosed(t, srv.Done(), 5*time.Second, "the server's end")
}

// TestLoopsCloseWithConnsOpen: Loops.Close closes every connection with
// ErrLoopsClosed, runs every onDone and stops the loops; a connection
// adopted before and started after is closed too, and Adopt then fails.
func TestLoopsCloseWithConnsOpen(t *testing.T) {
	l, err := NewLoops(2)
	if err != nil {
		t.Fatal(err)
	}
	// Servers and clients on l; each with its peer on netconn, so that
	// nothing ends before Close (an evloop peer closed first would end
	// its partner gracefully).
	var eps []*endpoint
	for range 20 {
		nc, ns := tcpPair(t, 0)
		eps = append(eps, startEv(t, l, ns, core.Server, session.Config{}, nil))
		startNet(t, nc, core.Client, session.Config{}, nil)
		nc, ns = tcpPair(t, 0)
		startNet(t, ns, core.Server, session.Config{}, nil)
		eps = append(eps, startEv(t, l, nc, core.Client, session.Config{}, nil))
	}
	_, late := tcpPair(t, 0)
	lc, err := l.Adopt(late, core.NewParams(core.Server, session.Config{}, core.Options{}), newSink())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		waitClosed(t, e.sink.ready, 5*time.Second, "handshake")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Close() // idempotent
	for i, e := range eps {
		waitClosed(t, e.ran, 2*time.Second, "onDone")
		if err := e.Err(); !errors.Is(err, ErrLoopsClosed) || !errors.Is(err, session.ErrConnClosed) {
			t.Errorf("conn %d: Err() = %v, want ErrLoopsClosed", i, err)
		}
	}
	ran := make(chan struct{})
	lc.Start(func() { close(ran) })
	waitClosed(t, ran, 2*time.Second, "onDone of a connection started after Loops.Close")
	if err := lc.Err(); !errors.Is(err, ErrLoopsClosed) {
		t.Errorf("started after Loops.Close: Err() = %v, want ErrLoopsClosed", err)
	}
	_, again := tcpPair(t, 0)
	if _, err := l.Adopt(again, core.NewParams(core.Server, session.Config{}, core.Options{}), newSink()); !errors.Is(err, ErrLoopsClosed) {
		t.Errorf("Adopt after Close: %v, want ErrLoopsClosed", err)
	}
}
