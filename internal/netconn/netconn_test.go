package netconn

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// bodyFor is the body of one call, filled from a generator seeded by the
// connection, the caller and the call, so that bytes of another call, or
// of another connection, are never equal to the expected ones by chance.
func bodyFor(conn, caller, i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(conn)<<32|uint64(caller), uint64(i)))
	n := 1 + rng.IntN(2000)
	switch i % 4 {
	case 0:
		// Exactly one frame of the default MAX_FRAME_SIZE: the answer
		// leaves as one frame larger than the writer's 64 KiB buffer,
		// which grows for it.
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

// TestConcurrentEcho guards the writers' buffers: several connections,
// each with several callers, echo 64 KiB and small bodies at once, and
// every byte of every answer is checked. A write buffer returned twice to
// the pool shared by all connections (as happened when the buffer grew for
// a frame larger than it) hands one buffer to two writers at once, mixing
// the answers of two connections.
func TestConcurrentEcho(t *testing.T) {
	const conns, callers, calls = 4, 4, 24
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			begin := time.Now()
			var wg sync.WaitGroup
			for ci := range conns {
				nc, ns := tr.pair(t)
				start(t, ns, core.Server, session.Config{}, nil)
				cli := start(t, nc, core.Client, session.Config{}, nil)
				for g := range callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range calls {
							body := bodyFor(ci, g, i)
							got, err := call(t, cli.Conn, body, 20*time.Second)
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
					}()
				}
			}
			wg.Wait()
			t.Logf("TIMING %d connections × %d callers × %d echoes over %s: %v", conns, callers, calls, tr.name, time.Since(begin))
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWritesCoalesce guards write coalescing: answers queued while a write
// is in progress leave together in the next write, not one write each.
func TestWritesCoalesce(t *testing.T) {
	const n = 64
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			var calls sync.WaitGroup
			t.Cleanup(calls.Wait) // after the connections' cleanup, which ends the calls
			nc, ns := tr.pair(t)
			hook := newHookConn(ns)
			ss := newSink()
			ss.held = make(chan core.Incoming, n)
			srv := start(t, hook, core.Server, session.Config{}, ss)
			cli := start(t, nc, core.Client, session.Config{}, nil)

			for i := range n {
				calls.Add(1)
				go func() {
					defer calls.Done()
					body := fmt.Appendf(nil, "call %d", i)
					if got, err := call(t, cli.Conn, body, 20*time.Second); err != nil || !bytes.Equal(got, body) {
						t.Errorf("call %d: %q, %v; want its body echoed", i, got, err)
					}
				}()
			}
			var reqs []core.Incoming
			for range n {
				select {
				case in := <-ss.held:
					reqs = append(reqs, in)
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d requests arrived within 10s", len(reqs), n)
				}
			}

			hook.holdWrites()
			before := hook.writes.Load()
			first := make(chan struct{})
			go func() {
				defer close(first)
				srv.Answer(reqs[0].ID, nil, reqs[0].Body) // writes on this goroutine: held
			}()
			select {
			case <-hook.inWrite:
			case <-time.After(5 * time.Second):
				t.Fatal("the first answer's write did not start within 5s")
			}
			for _, in := range reqs[1:] {
				srv.Answer(in.ID, nil, in.Body) // queued: a write is in progress
			}
			hook.releaseWrites()
			<-first
			calls.Wait()
			writes := hook.writes.Load() - before
			t.Logf("%d answers left in %d writes", n, writes)
			if writes > 3 {
				t.Errorf("%d answers, %d of them queued during a write, left in %d writes; want at most 3", n, n-1, writes)
			}
		})
	}
}

// TestReaderNeverWrites guards the reader's independence from writes: a
// peer that never reads makes the server's write of its PONG wait for
// ever, yet the PINGs it keeps sending are still read (a reader that wrote
// would be stuck in that write), so the connection ends with
// ErrWriteTimeout, not ErrPeerDead. Over a pipe, where a write returns
// only once the other end has read it.
func TestReaderNeverWrites(t *testing.T) {
	cfg := session.Config{
		HeartbeatInterval: 300 * time.Millisecond,
		HeartbeatTimeout:  600 * time.Millisecond,
		WriteTimeout:      1200 * time.Millisecond,
		LingerTimeout:     100 * time.Millisecond,
	}
	nc, ns := pipePair(t)
	srv := start(t, ns, core.Server, cfg, nil)
	p := newRawPeer(nc)
	p.handshake(t)

	// From here on the peer reads nothing. It sends a PING every 50ms
	// (its pace, well within HeartbeatTimeout) until the server closes.
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
		_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := p.fr.WritePing(uint64(pings + 1)); err != nil {
			select {
			case <-srv.Done():
				break loop // closed while this PING was written
			default:
			}
			t.Fatalf("PING %d after %v: %v (the server stopped reading)", pings+1, time.Since(begin), err)
		}
		pings++
	}
	took := time.Since(begin)
	err := srv.Err()
	t.Logf("TIMING a peer that never reads, sending %d PINGs, cut after %v with %v", pings, took, err)
	if !errors.Is(err, session.ErrWriteTimeout) || errors.Is(err, session.ErrPeerDead) {
		t.Errorf("connection ended with %v, want session.ErrWriteTimeout", err)
	}
	if want := int(cfg.WriteTimeout / (100 * time.Millisecond)); pings < want {
		t.Errorf("%d PINGs read before the cut, want at least %d (one per 50ms for WriteTimeout %v, with slack)", pings, want, cfg.WriteTimeout)
	}
	if took < cfg.WriteTimeout || took > cfg.WriteTimeout+5*time.Second {
		t.Errorf("cut after %v, want about WriteTimeout %v plus LingerTimeout %v", took, cfg.WriteTimeout, cfg.LingerTimeout)
	}
}

// TestCloseWhileBlocked guards Close: called from another goroutine while
// the reader is blocked in Read and a writer in Write, it returns at once,
// the blocked calls return, and Run returns.
func TestCloseWhileBlocked(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			nc, ns := tr.pair(t)
			hook := newHookConn(ns)
			srv := start(t, hook, core.Server, session.Config{}, nil)
			p := newRawPeer(nc)
			p.handshake(t)

			hook.holdWrites()
			if err := p.fr.WritePing(1); err != nil {
				t.Fatal(err)
			}
			select {
			case <-hook.inWrite: // the PONG's write is held: the PING was read
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not start writing its PONG within 5s")
			}
			if !waitFor(5*time.Second, func() bool { return hook.inRead.Load() == 1 }) {
				t.Fatal("the reader did not read again within 5s")
			}

			stop := errors.New("stopped by the test")
			begin := time.Now()
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				srv.Close(stop)
			}()
			waitClosed(t, closed, 2*time.Second, "Close")
			waitClosed(t, srv.ran, 2*time.Second, "Run")
			waitClosed(t, srv.Done(), time.Second, "Done")
			t.Logf("TIMING Close with a read and a write blocked: Run returned after %v", time.Since(begin))
			if err := srv.Err(); !errors.Is(err, stop) {
				t.Errorf("Err() = %v, want the error given to Close", err)
			}
			if !errors.Is(srv.sink.closeErr, stop) {
				t.Errorf("Sink.Closed(%v), want the error given to Close", srv.sink.closeErr)
			}
			if !waitFor(2*time.Second, func() bool { return hook.inRead.Load() == 0 && hook.inWriteNow.Load() == 0 }) {
				t.Errorf("a Read or Write is still blocked after Close")
			}
		})
	}
}

// TestDone guards Done: closed once the socket is closed, whether it was
// obtained before or after.
func TestDone(t *testing.T) {
	t.Run("before close", func(t *testing.T) {
		_, ns := pipePair(t)
		srv := start(t, ns, core.Server, session.Config{}, nil)
		done := srv.Done()
		select {
		case <-done:
			t.Fatal("Done closed while the connection is open")
		default:
		}
		srv.Close(nil)
		waitClosed(t, done, 2*time.Second, "Done obtained before Close")
	})
	t.Run("after close", func(t *testing.T) {
		_, ns := pipePair(t)
		srv := start(t, ns, core.Server, session.Config{}, nil)
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
}

// TestTimerFiresDeadlines guards the timer: it fires the core's deadlines
// without anything else happening on the connection — the handshake
// timeout of a peer that sends nothing, the heartbeat of a peer that goes
// silent, and a call's deadline earlier than the one the timer was armed
// for.
func TestTimerFiresDeadlines(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name+"/handshake", func(t *testing.T) {
			const hs = 200 * time.Millisecond
			for _, role := range []core.Role{core.Server, core.Client} {
				nc, ns := tr.pair(t)
				if role == core.Client {
					ns = nc
				}
				begin := time.Now() // before the connection starts: took is at least its timeout
				e := start(t, ns, role, session.Config{HandshakeTimeout: hs}, nil)
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

		t.Run(tr.name+"/heartbeat", func(t *testing.T) {
			cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond}
			nc, ns := tr.pair(t)
			cli := start(t, nc, core.Client, cfg, nil)
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

		t.Run(tr.name+"/call deadline", func(t *testing.T) {
			nc, ns := tr.pair(t)
			ss := newSink()
			ss.held = make(chan core.Incoming, 2) // never answered
			start(t, ns, core.Server, session.Config{}, ss)
			cli := start(t, nc, core.Client, session.Config{}, nil)
			long := make(chan error, 1)
			go func() {
				_, err := call(t, cli.Conn, []byte("long"), 20*time.Second)
				long <- err
			}()
			<-ss.held // the timer is armed for a later time (a heartbeat, the long deadline)
			const d = 300 * time.Millisecond
			begin := time.Now()
			_, err := call(t, cli.Conn, []byte("short"), d)
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
}

// TestGracefulEnd guards the graceful end over a transport that can
// half-close (TCP) and one that cannot (a pipe): after GOAWAY with nothing
// in flight, both sides send their FIN (or close), both Runs return, and
// neither reports an error.
func TestGracefulEnd(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			nc, ns := tr.pair(t)
			srv := start(t, ns, core.Server, session.Config{}, nil)
			cli := start(t, nc, core.Client, session.Config{}, nil)
			if got, err := call(t, cli.Conn, []byte("before"), 10*time.Second); err != nil || string(got) != "before" {
				t.Fatalf("call: %q, %v", got, err)
			}
			srv.GoAway(wire.ReasonShutdown, "test")
			waitClosed(t, cli.sink.goAway, 5*time.Second, "the client's GOAWAY")
			waitClosed(t, srv.ran, 5*time.Second, "the server's Run")
			waitClosed(t, cli.ran, 5*time.Second, "the client's Run")
			for _, e := range []*endpoint{srv, cli} {
				if err := e.Err(); err != nil {
					t.Errorf("%v: Err() = %v after a graceful end, want nil", e.core.Role(), err)
				}
				if n := e.sink.closes.Load(); n != 1 || e.sink.closeErr != nil {
					t.Errorf("%v: Sink.Closed called %d times, with %v; want once, with nil", e.core.Role(), n, e.sink.closeErr)
				}
			}
		})
	}
}

// TestReadingPausesWhileAnswersWait guards the pause of a server whose
// peer does not read its answers (protocol.md §11.4): while it holds
// WriteQueueSize bytes for the peer it stops reading (so the peer cannot
// make it hold more), and it resumes as soon as the peer reads. Over a
// pipe, where the peer's writes return only once the server has read them
// (loopback TCP would absorb the answers in socket buffers).
func TestReadingPausesWhileAnswersWait(t *testing.T) {
	const queue = 64 << 10
	const n = 10
	nc, ns := pipePair(t)
	ss := newSink()
	ss.held = make(chan core.Incoming, n)
	srv := start(t, ns, core.Server, session.Config{WriteQueueSize: queue}, ss)
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
	answering := make(chan struct{})
	go func() {
		defer close(answering)
		srv.Answer(in.ID, nil, big) // its write waits for the peer to read
	}()
	if !waitFor(5*time.Second, func() bool { return srv.Stats().Queued >= queue }) {
		t.Fatalf("the answer was not queued within 5s (%d bytes queued)", srv.Stats().Queued)
	}

	// The peer sends its other requests, still reading nothing.
	sent := make(chan error, 1)
	go func() {
		for id := uint64(2); id <= n; id++ {
			if err := request(id); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// An observation window, not synchronisation: what the paused server
	// reads during it. The one read in progress when reading paused may
	// take one request; no more.
	time.Sleep(300 * time.Millisecond)
	if got := ss.requests.Load(); got > 2 {
		t.Errorf("the server read %d requests while holding %d bytes for a peer that reads nothing, want at most 2 (WriteQueueSize %d)",
			got, srv.Stats().Queued, queue)
	}

	// The peer reads: the server resumes reading, and every request is
	// answered.
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
			continue // left unanswered: the test is shorter than a heartbeat
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
		t.Fatalf("sending requests 2..%d once the peer read: %v", n, err)
	}
	<-answering
	if !bytes.Equal(bodies[1], big) {
		t.Errorf("answer 1: %d bytes, want the %d answered", len(bodies[1]), len(big))
	}
	for id := uint64(2); id <= n; id++ {
		if want := fmt.Sprintf("request %d", id); string(bodies[id]) != want {
			t.Errorf("answer %d: %q, want %q", id, bodies[id], want)
		}
	}
}
