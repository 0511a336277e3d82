//go:build linux

package evloop

// Tests of what is evloop's own: many connections on few loops, what
// Adopt takes, the loops' end, an idle connection's cost in goroutines,
// and frames larger than a loop's buffer. What every driver promises is
// tested by internal/conntest (conformance_test.go); the tests of a peer
// that does not read check, through the Watching hook, what the loop
// watches the socket for.

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

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

// startEv adopts nc on l and starts it (see conntest.Start).
func startEv(t testing.TB, l *Loops, nc net.Conn, role core.Role, cfg session.Config, s *conntest.Sink) *conntest.Endpoint {
	t.Helper()
	return conntest.Start(t, on(l), nc, role, cfg, s)
}

// startNet runs nc with netconn, as startEv does with evloop.
func startNet(t testing.TB, nc net.Conn, role core.Role, cfg session.Config, s *conntest.Sink) *conntest.Endpoint {
	t.Helper()
	return conntest.Start(t, netconnDriver, nc, role, cfg, s)
}

// TestManyConnsFewLoops: two hundred connections on two loops (server and
// client sides on evloop), each with two callers.
func TestManyConnsFewLoops(t *testing.T) {
	const conns = 200
	l := newLoops(t, 2)
	var clis []*conntest.Endpoint
	for range conns {
		nc, ns := conntest.TCPPair(t, 0)
		startEv(t, l, ns, core.Server, session.Config{}, nil)
		clis = append(clis, startEv(t, l, nc, core.Client, session.Config{}, nil))
	}
	conntest.EchoAll(t, clis, 2, 3)
}

// TestAdoptTakesTCPOnly: any other net.Conn is refused and left open.
func TestAdoptTakesTCPOnly(t *testing.T) {
	l := newLoops(t, 1)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := l.Adopt(a, core.NewParams(core.Server, session.Config{}, core.Options{}), conntest.NewSink()); err == nil {
		t.Fatal("Adopt took a net.Pipe")
	}
}

// TestAddrs: the addresses are those of the adopted connection.
func TestAddrs(t *testing.T) {
	l := newLoops(t, 1)
	nc, ns := conntest.TCPPair(t, 0)
	srv := startEv(t, l, ns, core.Server, session.Config{}, nil)
	c := srv.Conn.(*Conn)
	if got, want := c.RemoteAddr().String(), nc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	if got, want := c.LocalAddr().String(), nc.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
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
	var eps []*conntest.Endpoint
	for range 20 {
		nc, ns := conntest.TCPPair(t, 0)
		eps = append(eps, startEv(t, l, ns, core.Server, session.Config{}, nil))
		startNet(t, nc, core.Client, session.Config{}, nil)
		nc, ns = conntest.TCPPair(t, 0)
		startNet(t, ns, core.Server, session.Config{}, nil)
		eps = append(eps, startEv(t, l, nc, core.Client, session.Config{}, nil))
	}
	_, late := conntest.TCPPair(t, 0)
	lc, err := l.Adopt(late, core.NewParams(core.Server, session.Config{}, core.Options{}), conntest.NewSink())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range eps {
		conntest.WaitClosed(t, e.Sink.ReadyCh, 5*time.Second, "handshake")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Close() // idempotent
	for i, e := range eps {
		conntest.WaitClosed(t, e.Ended, 2*time.Second, "onDone")
		if err := e.Err(); !errors.Is(err, ErrLoopsClosed) || !errors.Is(err, session.ErrConnClosed) {
			t.Errorf("conn %d: Err() = %v, want ErrLoopsClosed", i, err)
		}
	}
	ran := make(chan struct{})
	lc.Start(func() { close(ran) })
	conntest.WaitClosed(t, ran, 2*time.Second, "onDone of a connection started after Loops.Close")
	if err := lc.Err(); !errors.Is(err, ErrLoopsClosed) {
		t.Errorf("started after Loops.Close: Err() = %v, want ErrLoopsClosed", err)
	}
	_, again := conntest.TCPPair(t, 0)
	if _, err := l.Adopt(again, core.NewParams(core.Server, session.Config{}, core.Options{}), conntest.NewSink()); !errors.Is(err, ErrLoopsClosed) {
		t.Errorf("Adopt after Close: %v, want ErrLoopsClosed", err)
	}
}

// TestIdleHoldsNoGoroutine: idle connections with heartbeats on, past
// their handshake and several heartbeats, hold no goroutine: only the
// loops' own exist.
func TestIdleHoldsNoGoroutine(t *testing.T) {
	const conns = 100
	cfg := session.Config{HeartbeatInterval: 20 * time.Millisecond, HeartbeatTimeout: 2 * time.Second}
	l := newLoops(t, 2)
	before := goroutines()
	var eps []*conntest.Endpoint
	for range conns {
		nc, ns := conntest.TCPPair(t, 0)
		eps = append(eps, startEv(t, l, ns, core.Server, cfg, nil), startEv(t, l, nc, core.Client, cfg, nil))
	}
	for _, e := range eps {
		conntest.WaitClosed(t, e.Sink.ReadyCh, 5*time.Second, "handshake")
	}
	// Several heartbeats each way.
	if !conntest.WaitFor(5*time.Second, func() bool {
		for _, e := range eps {
			if e.Sink.Heartbeats.Load() < 3 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("heartbeats did not flow within 5s")
	}
	if after := goroutines(); after > before {
		t.Errorf("%d idle connections (both ends on evloop) hold %d goroutines, want none", 2*conns, after-before)
	}
}

// goroutines counts goroutines once those that are ending (the TCPPair
// acceptors) are gone.
func goroutines() int {
	n := 0
	conntest.WaitFor(time.Second, func() bool {
		m := runtime.NumGoroutine()
		if m == n {
			return true
		}
		n = m
		time.Sleep(10 * time.Millisecond) // let exiting goroutines exit; polling, not synchronisation
		return false
	})
	return n
}

// TestFrameLargerThanTheLoopsBuffer: a peer may send one frame as large as
// the MAX_FRAME_SIZE it was given, larger than a loop's read buffer; it is
// assembled over many reads in the connection's own buffer, byte for byte.
func TestFrameLargerThanTheLoopsBuffer(t *testing.T) {
	const size = 300 << 10
	l := newLoops(t, 1)
	nc, ns := conntest.TCPPair(t, 0)
	startEv(t, l, ns, core.Server, session.Config{MaxFrameSize: 1 << 20, MaxMessageSize: 4 << 20, ConnMemory: 8 << 20}, nil)
	p := conntest.NewRawPeer(nc)
	p.Handshake(t)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	// One REQUEST frame, written in pieces so that it arrives over many
	// reads.
	frame := wire.AppendRequest(nil, 1, false, 0, "echo", nil, body)
	go func() {
		for off := 0; off < len(frame); off += 10000 {
			if _, err := nc.Write(frame[off:min(off+10000, len(frame))]); err != nil {
				return
			}
		}
	}()
	var got []byte
	for {
		f, err := p.Fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes of the answer: %v", len(got), err)
		}
		switch f.Type {
		case wire.TypeResponse:
			_, chunk, err := wire.ParseResponse(f.Flags, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, chunk...)
		case wire.TypeData:
			got = append(got, f.Payload...)
		default:
			continue
		}
		if !f.More() {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("the answer differs from the %d-byte request (%d bytes back)", size, len(got))
	}
}
