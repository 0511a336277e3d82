//go:build linux

package evloop

// Tests of a peer that does not read: the server's output is parked
// (EPOLLOUT) without blocking its loop, which goes on reading.

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// smallBuf is the socket buffer size of these tests: a few answers fill
// both ends' buffers.
const smallBuf = 4 << 10

func (c *Conn) isParked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parked
}

func (c *Conn) watched() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

// parkedServer starts a server on l whose raw peer asks for a 256 KiB echo
// and reads nothing: the answer parks.
func parkedServer(t *testing.T, l *Loops, cfg session.Config) (*endpoint, *rawPeer) {
	t.Helper()
	nc, ns := tcpPair(t, smallBuf)
	srv := startEv(t, l, ns, core.Server, cfg, nil)
	p := newRawPeer(nc)
	p.handshake(t)
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	if err := p.fr.WriteRequest(1, true, 0, "echo", nil, chunk); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := p.fr.WriteData(1, i < 6, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(5*time.Second, srv.conn.(*Conn).isParked) {
		t.Fatal("the server's answer to a peer that does not read did not park within 5s")
	}
	return srv, p
}

// TestPeerNeverReads: a peer that never reads makes the server park its
// answer and the PONGs after it, yet the PINGs it keeps sending are still
// read (the loop is not blocked), so the connection ends with
// ErrWriteTimeout, not ErrPeerDead, and the other connections of the loop
// go on meanwhile.
func TestPeerNeverReads(t *testing.T) {
	cfg := session.Config{
		HeartbeatInterval: 300 * time.Millisecond,
		HeartbeatTimeout:  600 * time.Millisecond,
		WriteTimeout:      1200 * time.Millisecond,
		LingerTimeout:     100 * time.Millisecond,
	}
	l := newLoops(t, 1)
	srv, p := parkedServer(t, l, cfg)
	framesBefore := srv.Stats().FramesIn

	// Another connection on the same loop, busy meanwhile.
	nc2, ns2 := tcpPair(t, 0)
	startEv(t, l, ns2, core.Server, session.Config{}, nil)
	other := startEv(t, l, nc2, core.Client, session.Config{}, nil)
	otherCalls := 0

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	pings := 0
	deadline := time.After(10 * time.Second)
loop:
	for {
		select {
		case <-srv.Done():
			break loop
		case <-deadline:
			t.Fatalf("the connection was still open 10s after the peer stopped reading (%d PINGs sent)", pings)
		case <-tick.C:
		}
		_ = p.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := p.fr.WritePing(uint64(pings + 1)); err != nil {
			select {
			case <-srv.Done():
				break loop // closed while this PING was written
			default:
			}
			t.Fatalf("PING %d after %v: %v (the server stopped reading)", pings+1, time.Since(begin), err)
		}
		pings++
		if got, err := call(t, other.conn, []byte("meanwhile"), 5*time.Second); err != nil || string(got) != "meanwhile" {
			t.Errorf("a call on another connection of the loop: %q, %v", got, err)
		}
		otherCalls++
	}
	took := time.Since(begin)
	err := srv.Err()
	read := srv.Stats().FramesIn - framesBefore
	t.Logf("TIMING a peer that never reads, sending %d PINGs (%d read), cut after %v with %v; %d calls on another connection meanwhile",
		pings, read, took, err, otherCalls)
	if !errors.Is(err, session.ErrWriteTimeout) {
		t.Errorf("connection ended with %v, want session.ErrWriteTimeout", err)
	}
	if want := uint64(cfg.WriteTimeout / (100 * time.Millisecond)); read < want {
		t.Errorf("%d PINGs read before the cut, want at least %d", read, want)
	}
	if took > cfg.WriteTimeout+5*time.Second {
		t.Errorf("cut after %v, want about WriteTimeout %v", took, cfg.WriteTimeout)
	}
}

// TestCloseWhileParked: Close from another goroutine while the answer is
// parked returns at once, closes the socket and runs onDone.
func TestCloseWhileParked(t *testing.T) {
	l := newLoops(t, 1)
	srv, _ := parkedServer(t, l, session.Config{})
	stop := errors.New("stopped by the test")
	begin := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		srv.Close(stop)
	}()
	waitClosed(t, closed, 2*time.Second, "Close")
	waitClosed(t, srv.Done(), time.Second, "Done")
	waitClosed(t, srv.ran, 2*time.Second, "onDone")
	t.Logf("TIMING Close with parked output: done after %v", time.Since(begin))
	if err := srv.Err(); !errors.Is(err, stop) {
		t.Errorf("Err() = %v, want the error given to Close", err)
	}
	if !errors.Is(srv.sink.closeErr, stop) {
		t.Errorf("Sink.Closed(%v), want the error given to Close", srv.sink.closeErr)
	}
}

// TestReadingPausesWhileAnswersWait: while a server holds WriteQueueSize
// bytes for a peer that does not read them it stops reading after one
// more read — the one netconn's reader is already in when reading pauses,
// so that a PING sent right after the request is answered — and its
// socket is then watched for EPOLLOUT alone; it resumes as soon as the
// peer reads.
func TestReadingPausesWhileAnswersWait(t *testing.T) {
	const queue = 64 << 10
	const n = 10
	l := newLoops(t, 1)
	nc, ns := tcpPair(t, smallBuf)
	ss := newSink()
	ss.held = make(chan core.Incoming, n)
	srv := startEv(t, l, ns, core.Server, session.Config{WriteQueueSize: queue}, ss)
	p := newRawPeer(nc)
	p.handshake(t)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second)) // bounds every step below

	request := func(id uint64) error {
		return p.fr.WriteRequest(id, false, 0, "echo", nil, fmt.Appendf(nil, "request %d", id))
	}
	if err := request(1); err != nil {
		t.Fatal(err)
	}
	in := <-ss.held
	big := bytes.Repeat([]byte("answer 1 "), 4*queue/9)
	srv.Answer(in.ID, nil, big) // parks: the peer reads nothing
	if !waitFor(5*time.Second, func() bool { return srv.Stats().Queued >= queue }) {
		t.Fatalf("the answer was not queued within 5s (%d bytes queued)", srv.Stats().Queued)
	}
	c := srv.conn.(*Conn)
	// The read owed from before the pause takes request 2.
	if err := request(2); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return ss.requests.Load() == 2 }) {
		t.Fatalf("the read owed from before the pause did not take request 2 (%d requests read)", ss.requests.Load())
	}
	if ev := c.watched(); ev&unix.EPOLLIN != 0 || ev&unix.EPOLLOUT == 0 {
		t.Errorf("paused and parked, after the owed read, the socket is watched for %#x, want EPOLLOUT alone", ev)
	}

	sent := make(chan error, 1)
	go func() {
		for id := uint64(3); id <= n; id++ {
			if err := request(id); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// An observation window, not synchronisation: what the paused server
	// reads during it.
	time.Sleep(300 * time.Millisecond)
	if got := ss.requests.Load(); got > 2 {
		t.Errorf("the server read %d requests while holding %d bytes for a peer that reads nothing, want 2 (WriteQueueSize %d)",
			got, srv.Stats().Queued, queue)
	}

	go func() {
		for range n - 1 {
			select {
			case in := <-ss.held:
				srv.Answer(in.ID, nil, in.Body)
			case <-srv.Done():
				return
			}
		}
	}()
	bodies := map[uint64][]byte{}
	for complete := 0; complete < n; {
		f, err := p.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answers (%d of %d complete): %v", complete, n, err)
		}
		var chunk []byte
		switch f.Type {
		case wire.TypeResponse:
			_, chunk, err = wire.ParseResponse(f.Flags, f.Payload)
		case wire.TypeData:
			chunk = f.Payload
		case wire.TypePing:
			continue
		default:
			t.Fatalf("unexpected %v frame %d", f.Type, f.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		bodies[f.ID] = append(bodies[f.ID], chunk...)
		if !f.More() {
			complete++
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending requests 3..%d: %v", n, err)
	}
	if !bytes.Equal(bodies[1], big) {
		t.Errorf("answer 1: %d bytes, want the %d answered", len(bodies[1]), len(big))
	}
	for id := uint64(2); id <= n; id++ {
		if want := fmt.Sprintf("request %d", id); string(bodies[id]) != want {
			t.Errorf("answer %d: %q, want %q", id, bodies[id], want)
		}
	}
	// The loop leaves EPOLLOUT once the last write is out: just after the
	// peer could read it.
	if !waitFor(5*time.Second, func() bool { return c.watched() == unix.EPOLLIN }) {
		t.Errorf("all answers written, the socket is watched for %#x, want EPOLLIN", c.watched())
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
	var eps []*endpoint
	for range conns {
		nc, ns := tcpPair(t, 0)
		eps = append(eps, startEv(t, l, ns, core.Server, cfg, nil), startEv(t, l, nc, core.Client, cfg, nil))
	}
	for _, e := range eps {
		waitClosed(t, e.sink.ready, 5*time.Second, "handshake")
	}
	// Several heartbeats each way.
	if !waitFor(5*time.Second, func() bool {
		for _, e := range eps {
			if e.sink.heartbeat.Load() < 3 {
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

// goroutines counts goroutines once those that are ending (the tcpPair
// acceptors) are gone.
func goroutines() int {
	n := 0
	waitFor(time.Second, func() bool {
		m := runtimeGoroutines()
		if m == n {
			return true
		}
		n = m
		time.Sleep(10 * time.Millisecond) // let exiting goroutines exit; polling, not synchronisation
		return false
	})
	return n
}

func runtimeGoroutines() int { return runtime.NumGoroutine() }

// TestFrameLargerThanTheLoopsBuffer: a peer may send one frame as large as
// the MAX_FRAME_SIZE it was given, larger than a loop's read buffer; it is
// assembled over many reads in the connection's own buffer, byte for byte.
func TestFrameLargerThanTheLoopsBuffer(t *testing.T) {
	const size = 300 << 10
	l := newLoops(t, 1)
	nc, ns := tcpPair(t, 0)
	startEv(t, l, ns, core.Server, session.Config{MaxFrameSize: 1 << 20, MaxMessageSize: 4 << 20, ConnMemory: 8 << 20}, newSink())
	p := newRawPeer(nc)
	p.handshake(t)
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
		f, err := p.fr.ReadFrame()
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
