package conntest

// Tests of the drivers' timers: the core's deadlines fire with nothing
// else happening, and a driver that stops running does not take its
// peer for dead.

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TimerFiresDeadlines guards the timers: they fire the core's deadlines
// without anything else happening on the connection — the handshake
// timeout of a peer that sends nothing, the heartbeat of a peer that goes
// silent, and a call's deadline earlier than the one the timer was armed
// for (or the loop sleeps until).
func TimerFiresDeadlines(t *testing.T, d Driver, others ...Driver) {
	for _, tr := range over([]transport{tcp, pipe}, d) {
		t.Run(tr.name+"/handshake", func(t *testing.T) {
			const hs = 200 * time.Millisecond
			for _, role := range []core.Role{core.Server, core.Client} {
				nc, ns := tr.pair(t)
				if role == core.Client {
					ns = nc
				}
				begin := time.Now() // before the connection starts: took is at least its timeout
				e := Start(t, d, ns, role, session.Config{HandshakeTimeout: hs}, nil)
				WaitClosed(t, e.Done(), 5*time.Second, role.String()+" facing a silent peer")
				took := time.Since(begin)
				t.Logf("TIMING %s facing a silent peer closed after %v", e.Name, took)
				if err := e.Err(); !errors.Is(err, session.ErrHandshakeTimeout) {
					t.Errorf("%s: closed with %v, want session.ErrHandshakeTimeout", role, err)
				}
				if took < hs || took > hs+2*time.Second {
					t.Errorf("%s: closed after %v, want about HandshakeTimeout %v", role, took, hs)
				}
			}
		})

		t.Run(tr.name+"/heartbeat", func(t *testing.T) {
			cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond}
			nc, ns := tr.pair(t)
			cli := Start(t, d, nc, core.Client, cfg, nil)
			peer := wire.NewFramer(ns, ns)
			_ = ns.SetDeadline(time.Now().Add(5 * time.Second))
			begin := time.Now() // before the peer's last bytes (its HELLO)
			if _, err := peer.ServerHandshake(wire.Hello{}); err != nil {
				t.Fatal(err)
			}
			// The peer reads everything and answers nothing.
			pings := 0
			for {
				f, err := peer.ReadFrame()
				if err != nil {
					break
				}
				if f.Type == wire.TypePing {
					pings++
				}
			}
			WaitClosed(t, cli.Done(), 5*time.Second, "client facing a silent server")
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

		for _, p := range pairs(d, others) {
			if len(over([]transport{tr}, p.srv, p.cli)) == 0 {
				continue
			}
			t.Run(tr.name+"/call deadline/"+p.String(), func(t *testing.T) {
				nc, ns := tr.pair(t)
				ss := NewSink()
				ss.Held = make(chan core.Incoming, 2) // never answered
				Start(t, p.srv, ns, core.Server, session.Config{}, ss)
				cli := Start(t, p.cli, nc, core.Client, session.Config{}, nil)
				long := make(chan error, 1)
				go func() {
					_, err := cli.Echo(t, []byte("long"), 20*time.Second)
					long <- err
				}()
				<-ss.Held // the timer is armed for a later time (a heartbeat, the long deadline)
				const dl = 300 * time.Millisecond
				begin := time.Now()
				_, err := cli.Echo(t, []byte("short"), dl)
				took := time.Since(begin)
				t.Logf("TIMING a call with a %v deadline ended after %v", dl, took)
				var de *session.DeadlineError
				if !errors.As(err, &de) || !errors.Is(err, session.ErrTimeout) || !de.Sent {
					t.Errorf("call past its deadline: %v, want a *session.DeadlineError (sent) matching session.ErrTimeout", err)
				}
				if took < dl || took > dl+2*time.Second {
					t.Errorf("ended after %v, want about its deadline %v", took, dl)
				}
				cli.Close(nil)
				if err := <-long; !errors.Is(err, session.ErrConnClosed) {
					t.Errorf("the call in flight when the connection was closed: %v, want session.ErrConnClosed", err)
				}
			})
		}
	}
}

// BodyStallUnderFrameFlood: a peer starts a request in several frames,
// never sends the rest of its body, and floods empty DATA frames (no
// progress, protocol.md §8) so that its socket nearly always holds unread
// bytes. The body progress timeout (FrameReadTimeout, 200 ms) must still
// end the connection.
func BodyStallUnderFrameFlood(t *testing.T, d Driver) {
	cli, srv := TCPPair(t, 0)
	cfg := session.Config{FrameReadTimeout: 200 * time.Millisecond}
	s := NewSink()
	s.Held = make(chan core.Incoming, 1)
	Start(t, d, srv, core.Server, cfg, s)
	peer := NewRawPeer(cli)
	peer.Handshake(t)
	if err := peer.Fr.WriteRequest(1, true, 0, "m", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	var batch []byte
	for len(batch) < 64<<10 {
		batch = wire.AppendData(batch, 1, true, nil)
	}
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for {
			if _, err := cli.Write(batch); err != nil {
				return // the server closed, or the test did
			}
		}
	}()
	t0 := time.Now()
	var err error
	select {
	case <-s.ClosedCh:
		err = s.CloseErr
	case <-time.After(3 * time.Second):
	}
	el := time.Since(t0)
	cli.Close()
	<-flooded
	if err == nil {
		t.Fatalf("after %v of a flood of empty DATA frames the connection is still open (FrameReadTimeout 200 ms)", el)
	}
	if !errors.Is(err, session.ErrFrameTimeout) {
		t.Fatalf("closed after %v with %v, want ErrFrameTimeout", el, err)
	}
	t.Logf("closed after %v with %v", el, err)
}

// StallIsNotPeerSilence: a driver that does not run for three heartbeat
// timeouts (its process stopped or starved; stopped here by the driver's
// Stall hook) while the peer keeps sending must not declare the peer dead:
// the deadline has passed, but the peer's bytes wait in the socket, and
// the driver hands them to the core before the core judges. Nothing fails
// during the stall, and afterwards a PING is answered.
func StallIsNotPeerSilence(t *testing.T, d Driver) {
	if d.Stall == nil {
		t.Skipf("%s has no Stall hook: the suite cannot stop its work on a connection", d.Name)
	}
	cli, srv := TCPPair(t, 0)
	nc, stall := d.Stall(t, srv)
	cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}
	e := Start(t, d, nc, core.Server, cfg, nil)
	peer := NewRawPeer(cli)
	peer.Handshake(t)

	resume := stall(e.Conn, func() {
		if err := peer.Fr.WritePing(1); err != nil {
			t.Fatal(err)
		}
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(resume) }) // before the connection's cleanup, should the test fail
	// Three heartbeat timeouts of stall, the peer sending a PING every
	// 50 ms throughout.
	tick := time.NewTicker(50 * time.Millisecond)
	for i := range 18 {
		<-tick.C
		if err := peer.Fr.WritePing(uint64(100 + i)); err != nil {
			t.Fatalf("the peer's PING %d: %v", i, err)
		}
	}
	tick.Stop()
	if err := e.Err(); err != nil {
		t.Fatalf("during the stall the connection failed: %v", err)
	}
	once.Do(resume)

	// Alive: a PING is answered.
	_ = cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := peer.Fr.WritePing(999); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := peer.Fr.ReadFrame()
		if err != nil {
			t.Fatalf("after the stall: %v (connection error: %v)", err, e.Err())
		}
		if f.Type == wire.TypePong {
			if v, _ := wire.ParsePing(f.Payload); v == 999 {
				break
			}
		}
	}
	if err := e.Err(); err != nil {
		t.Fatalf("after the stall the connection failed: %v (the peer declared dead?)", err)
	}
}
