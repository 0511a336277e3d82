package core

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

func pingData(t *testing.T, f wire.Frame) uint64 {
	t.Helper()
	d, err := wire.ParsePing(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPong: only a PONG matching the outstanding PING gives a round trip;
// others are ignored, without error.
func TestPong(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 10 * time.Second}
	c, r := newClient(t, cfg, serverHello(64<<10, 1))
	c.Tick(t0 + sec)
	fs := out(t, c, t0+sec)
	if names(fs) != "PING" {
		t.Fatalf("sent %s, want PING", names(fs))
	}
	first := pingData(t, fs[0])
	feed(t, c, t0+sec+ms, wire.AppendPong(nil, first+100))
	if len(r.rtts) != 0 || c.Failed() {
		t.Fatalf("unmatched PONG: RTTs %v, err %v", r.rtts, c.Err())
	}
	// A second PING replaces the first, on the ping grid (50ms).
	c.Tick(t0 + 2*sec + 50*ms)
	second := pingData(t, out(t, c, t0+2*sec+50*ms)[0])
	feed(t, c, t0+2*sec+51*ms, wire.AppendPong(nil, first))
	if len(r.rtts) != 0 {
		t.Fatalf("the first PING's PONG gave RTTs %v", r.rtts)
	}
	feed(t, c, t0+2*sec+54*ms, wire.AppendPong(nil, second))
	feed(t, c, t0+2*sec+55*ms, wire.AppendPong(nil, second))
	if len(r.rtts) != 1 || r.rtts[0] != 4*time.Millisecond || c.Stats().RTT != 4*time.Millisecond {
		t.Fatalf("RTTs %v, want [4ms]", r.rtts)
	}
}

// TestHeartbeat: PINGs after each interval of silence; the peer is dead
// after the heartbeat timeout counted from the last bytes received, a
// partial frame included.
func TestHeartbeat(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}
	c, r := newClient(t, cfg, serverHello(64<<10, 1))
	steps := []struct {
		at   int64
		in   []byte // received at at, before the Tick
		want string // sent after the Tick
		next int64  // Next() after
	}{
		{at: t0 + sec, want: "PING", next: t0 + 2*sec},
		{at: t0 + 2*sec, want: "PING", next: t0 + 3*sec},
		{at: t0 + 2500*ms, in: wire.AppendPing(nil, 5)[:10], want: "", next: t0 + 3500*ms},
		{at: t0 + 3500*ms, want: "PING", next: t0 + 4500*ms},
		{at: t0 + 4500*ms, want: "PING", next: t0 + 5500*ms},
	}
	for _, s := range steps {
		if s.in != nil {
			if n := c.Receive(s.at, s.in); n != 0 {
				t.Fatalf("consumed %d bytes of a partial frame", n)
			}
		}
		c.Tick(s.at)
		if got := names(out(t, c, s.at)); got != s.want || c.Next() != s.next {
			t.Fatalf("at %v: sent %q, Next() %v; want %q, %v", time.Duration(s.at-t0), got, time.Duration(c.Next()-t0), s.want, time.Duration(s.next-t0))
		}
	}
	c.Tick(t0 + 5500*ms - 1)
	if c.Failed() {
		t.Fatal("failed before the heartbeat timeout")
	}
	c.Tick(t0 + 5500*ms)
	if !errors.Is(c.Err(), session.ErrPeerDead) || len(r.closed) != 1 {
		t.Fatalf("Err() = %v", c.Err())
	}
}

// TestPingGrid: a PING leaves at the first multiple of the ping grid at or
// after it falls due, never before, so that connections whose PINGs fall
// due within one step of the grid send them together; the grid is bounded
// by the interval and by its margin below the heartbeat timeout.
func TestPingGrid(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}
	a, _ := newServer(t, cfg, Options{})
	b, _ := newServer(t, cfg, Options{})
	feed(t, a, t0+3*ms, wire.AppendPong(nil, 1))
	feed(t, b, t0+41*ms, wire.AppendPong(nil, 1))
	want := t0 + sec + 50*ms // due at +1.003s and +1.041s: the grid is 50ms
	if a.Next() != want || b.Next() != want {
		t.Fatalf("Next() = %v and %v, want both %v", time.Duration(a.Next()-t0), time.Duration(b.Next()-t0), time.Duration(want-t0))
	}
	for _, c := range []*Conn{a, b} {
		c.Tick(want - 1)
		if got := names(out(t, c, want-1)); got != "" {
			t.Fatalf("sent %q before the grid's step", got)
		}
		c.Tick(want)
		if got := names(out(t, c, want)); got != "PING" {
			t.Fatalf("sent %q on the grid's step, want PING", got)
		}
	}
	// Due on the grid: sent when due. The next PING is due an interval
	// after the last one, on the grid already.
	if a.Next() != want+sec {
		t.Fatalf("next PING at %v, want %v", time.Duration(a.Next()-t0), time.Duration(want+sec-t0))
	}

}

// TestPingGridLivenessMargin: a PING waits at most one grid step, an eighth
// of the margin between the interval and the timeout, so that a peer whose
// round trip fits in the rest of the margin is never declared dead.
func TestPingGridLivenessMargin(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 1100 * time.Millisecond}
	step := int64(cfg.PingGrid()) // 12.5ms
	for _, rtt := range []int64{87 * ms, 100*ms - step} {
		c, _ := newServer(t, cfg, Options{})
		last := t0 + 1 // just after a step: the PING waits almost a whole one
		feed(t, c, last, wire.AppendPong(nil, 1))
		at := c.Next()
		if at-last > sec+step {
			t.Fatalf("PING at %v after the last bytes, want at most the interval and one step", time.Duration(at-last))
		}
		c.Tick(at)
		fs := out(t, c, at)
		if names(fs) != "PING" {
			t.Fatalf("sent %q, want PING", names(fs))
		}
		for now := at + ms; now < at+rtt; now += ms {
			c.Tick(now)
		}
		feed(t, c, at+rtt, wire.AppendPong(nil, pingData(t, fs[0])))
		if c.Failed() {
			t.Fatalf("round trip %v (margin 100ms, step %v): %v", time.Duration(rtt), time.Duration(step), c.Err())
		}
	}
}

// TestHeartbeatWhilePaused: a server that stopped reading because the
// peer does not read its answers leaves liveness to the write timeout, and
// counts silence again from when it resumes.
func TestHeartbeatWhilePaused(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 2 * time.Second, WriteQueueSize: 1000, WriteTimeout: 5 * time.Second}
	srv, _ := newServer(t, cfg, Options{})
	feed(t, srv, t0, reqFrame(1, false, "a"))
	srv.Answer(t0, 1, nil, make([]byte, 2000))
	b := srv.Transmit(t0, nil, 1<<20)
	if srv.WantRead() {
		t.Fatal("reading not paused with 2000 bytes unwritten")
	}
	srv.Tick(t0 + 4*sec)
	if srv.Failed() {
		t.Fatalf("failed while paused: %v", srv.Err())
	}
	srv.Written(t0+4*sec, len(b))
	if !srv.WantRead() || srv.Stats().LastReceived != t0+4*sec {
		t.Fatalf("after the write: reading %t, last received %v", srv.WantRead(), srv.Stats().LastReceived-t0)
	}
	srv.Tick(t0 + 6*sec - 1)
	if srv.Failed() {
		t.Fatalf("failed %v after resuming: %v", 2*sec-1, srv.Err())
	}
	srv.Tick(t0 + 6*sec)
	if !errors.Is(srv.Err(), session.ErrPeerDead) {
		t.Fatalf("Err() = %v", srv.Err())
	}
}

// TestFrameTimeout: a frame that started arriving must keep arriving;
// nothing is due between frames.
func TestFrameTimeout(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: -1, FrameReadTimeout: 2 * time.Second}
	c, _ := newClient(t, cfg, serverHello(64<<10, 1))
	if n := c.Next(); n != 0 {
		t.Fatalf("Next() = %v between frames", time.Duration(n-t0))
	}
	ping := wire.AppendPing(nil, 1)
	c.Receive(t0+sec, ping[:5])
	c.Receive(t0+2*sec, ping[:6])
	if n := c.Next(); n != t0+4*sec {
		t.Fatalf("Next() = %v, want the frame timeout", time.Duration(n-t0))
	}
	c.Tick(t0 + 4*sec - 1)
	if c.Failed() {
		t.Fatal("failed early")
	}
	c.Tick(t0 + 4*sec)
	if !errors.Is(c.Err(), session.ErrFrameTimeout) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

// TestWriteTimeout: output that makes no progress for WriteTimeout fails
// the connection; any progress restarts the count.
func TestWriteTimeout(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: -1, WriteTimeout: 2 * time.Second}
	c, r := newClient(t, cfg, serverHello(64<<10, 1))
	cl := &Call{Method: "m", Body: make([]byte, 1000)}
	if err := c.Call(t0, cl); err != nil {
		t.Fatal(err)
	}
	b := c.Transmit(t0, nil, 1<<20)
	c.Written(t0+1500*ms, 100)
	c.Tick(t0 + 3500*ms - 1)
	if c.Failed() {
		t.Fatal("failed early")
	}
	if n := c.Next(); n != t0+3500*ms {
		t.Fatalf("Next() = %v", time.Duration(n-t0))
	}
	c.Tick(t0 + 3500*ms)
	if !errors.Is(c.Err(), session.ErrWriteTimeout) || !errors.Is(r.doneOf(t, cl).err, session.ErrWriteTimeout) {
		t.Fatalf("Err() = %v", c.Err())
	}
	_ = b
}

// TestWriteFailedIsDone: once a write failed the connection is done, even
// when it had failed before.
func TestWriteFailedIsDone(t *testing.T) {
	srv, r := newServer(t, session.Config{}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "a"))
	srv.Answer(t0, 1, nil, []byte("answer"))
	srv.Transmit(t0, nil, 1<<20)
	// A failure with nothing final to send is done at once, even with
	// bytes being written: the transport closes the socket, which cuts a
	// write blocked on a peer that does not read.
	srv.ReadFailed(t0, errors.New("reset"))
	if !srv.Done() || len(r.closed) != 1 {
		t.Fatalf("done %t, closed %v", srv.Done(), r.closed)
	}
	srv.WriteFailed(t0, errors.New("broken pipe"))
	if len(r.closed) != 1 {
		t.Fatalf("closed %v", r.closed)
	}
}

// TestNoOutputAfterFin: after its FIN a side queues nothing: no PONG, no
// PING, no GOAWAY.
func TestNoOutputAfterFin(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 10 * time.Second, LingerTimeout: 5 * time.Second}
	srv, _ := newServer(t, cfg, Options{})
	srv.GoAway(t0, wire.ReasonShutdown, "")
	out(t, srv, t0)
	srv.FinSent(t0, true)
	feed(t, srv, t0+ms, wire.AppendPing(nil, 1))
	srv.Tick(t0 + 3*sec)
	if srv.HasOutput() || srv.Failed() {
		t.Fatalf("output %t after FIN, err %v", srv.HasOutput(), srv.Err())
	}
	srv.Tick(t0 + 5*sec)
	if !srv.Done() {
		t.Fatal("not done after LingerTimeout")
	}
}

// TestSilent: Silent tells, without changing anything, whether a Tick
// would end the connection for the peer's silence — the handshake, the
// heartbeat timeout, a stalled frame — and bytes received in time make it
// false again (a transport reads what waits in its socket first).
func TestSilent(t *testing.T) {
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second, FrameReadTimeout: 2 * time.Second, HandshakeTimeout: 5 * time.Second}

	srv := New(Server, cfg, Options{}, &recorder{}, t0)
	if srv.Silent(t0+5*sec-1) || !srv.Silent(t0+5*sec) {
		t.Fatal("a server without the client's HELLO: Silent must turn true at HandshakeTimeout")
	}

	c, r := newClient(t, cfg, serverHello(64<<10, 1))
	if c.Silent(t0 + 3*sec - 1) {
		t.Fatal("silent before the heartbeat timeout")
	}
	if !c.Silent(t0 + 3*sec) {
		t.Fatal("not silent at the heartbeat timeout")
	}
	if c.Failed() || len(r.closed) != 0 {
		t.Fatal("Silent changed the connection")
	}
	// The PONG of a PING that waited in the socket: the peer is alive.
	feed(t, c, t0+3*sec, wire.AppendPong(nil, 0))
	if c.Silent(t0 + 3*sec) {
		t.Fatal("silent although bytes were just received")
	}
	c.Tick(t0 + 3*sec)
	if c.Failed() {
		t.Fatalf("failed after bytes arrived: %v", c.Err())
	}
	// Half a frame, then nothing: silent at FrameReadTimeout, and Tick agrees.
	half := wire.AppendPing(nil, 7)[:5]
	if n := c.Receive(t0+4*sec, half); n != 0 {
		t.Fatalf("Receive consumed %d bytes of half a frame", n)
	}
	if c.Silent(t0+6*sec-1) || !c.Silent(t0+6*sec) {
		t.Fatal("a stalled frame: Silent must turn true at FrameReadTimeout")
	}
	c.Tick(t0 + 6*sec)
	if !errors.Is(c.Err(), session.ErrFrameTimeout) {
		t.Fatalf("Tick after Silent: %v, want ErrFrameTimeout", c.Err())
	}
	if c.Silent(t0 + 6*sec) {
		t.Fatal("a failed connection is not silent any more: it is over")
	}
}
