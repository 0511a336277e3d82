package server_test

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// warm sends n echo requests one at a time from id first on, so that the
// server's reader runs the next request itself (inline).
func (p *rawPeer) warm(t *testing.T, first uint64, n int) uint64 {
	t.Helper()
	id := first
	for range n {
		p.send(t, id, "echo", []byte("warm"))
		if f := p.expect(t, 2*time.Second, wire.TypeResponse); f.ID != id {
			t.Fatalf("response id %d, want %d", f.ID, id)
		}
		id++
	}
	return id
}

// echoPastHeartbeatBound sends echo requests from id first on, one every
// 20 ms, each answered before the next, for longer than the heartbeat
// bound (the connection must stay alive meanwhile), and returns the next
// free id.
func (p *rawPeer) echoPastHeartbeatBound(t *testing.T, first uint64) uint64 {
	t.Helper()
	id := first
	deadline := time.Now().Add(hbInterval + hbTimeout + 100*time.Millisecond)
	for time.Now().Before(deadline) {
		p.send(t, id, "echo", []byte("while slow"))
		if f := p.expect(t, 2*time.Second, wire.TypeResponse); f.ID != id {
			t.Fatalf("response id %d while slow requests run, want %d", f.ID, id)
		}
		id++
		pollPause(20 * time.Millisecond)
	}
	return id
}

func (p *rawPeer) send(t *testing.T, id uint64, method string, body []byte) {
	t.Helper()
	p.wmu.Lock()
	err := p.fr.WriteRequest(id, 10_000, method, body)
	p.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

// warmPeerWithGate starts a server whose method blocks on a gate, dials a
// raw peer that answers PINGs and warms its connection, so that the next
// request runs on the connection's reader. It returns the id to use next.
func warmPeerWithGate(t *testing.T, method string) (*testServer, *gate, *rawPeer, uint64) {
	t.Helper()
	mux := echoMux()
	g := newGate(t)
	mux.Handle(method, g)
	ts := startServer(t, baseConfig(), mux)
	t.Cleanup(g.Release) // before the server's cleanup, which waits for handlers
	p := dialRaw(t, ts.addr, true)
	return ts, g, p, p.warm(t, 1, 5)
}

// TestSlowInlineRequestKeepsConnectionServed: a request run on the
// connection's reader that blocks does not stop the connection: another
// goroutine takes over reading (on a second descriptor, the first one's
// read lock being held), so a later request on the same connection is
// answered and heartbeats flow while the slow one waits. Three rounds make
// the readers alternate between the two descriptors and back.
func TestSlowInlineRequestKeepsConnectionServed(t *testing.T) {
	mux := echoMux()
	gates := make(chan *gate, 3)
	mux.HandleFunc("slow", func(ctx context.Context, req *server.Request) ([]byte, error) {
		return (<-gates).ServeTCP(ctx, req)
	})
	ts := startServer(t, baseConfig(), mux)
	p := dialRaw(t, ts.addr, true)
	id := uint64(1)
	for round := range 3 {
		g := newGate(t)
		gates <- g
		id = p.warm(t, id, 5)
		slow := id
		p.send(t, slow, "slow", nil)
		g.waitStarted(t, 2*time.Second)
		id = p.echoPastHeartbeatBound(t, slow+1)
		g.Release()
		if f := p.expect(t, 2*time.Second, wire.TypeResponse); f.ID != slow || string(f.Payload) != "released" {
			t.Fatalf("round %d: got %v, want the slow request's response", round, f)
		}
	}
}

// TestCloseWithInlineRequestBlocked: closing the server while a request
// blocks on a connection's reader ends the connection at once; the peer
// does not wait for the handler to return.
func TestCloseWithInlineRequestBlocked(t *testing.T) {
	ts, g, p, id := warmPeerWithGate(t, "stuck")
	p.send(t, id, "stuck", nil)
	g.waitStarted(t, 2*time.Second)
	start := time.Now()
	ts.Close()
	p.expectClosed(t, time.Second)
	t.Logf("TIMING peer saw the close %v after Close", time.Since(start))
}

// TestRequestAndFINTogether: a peer that sends a request and half-closes
// at once gets its answer and then the server's FIN promptly, even when
// the FIN arrives with the request's bytes (one readiness event for both:
// see session.Conn.checkFIN). Heartbeats are slow here, so only that check
// can end these connections in time.
func TestRequestAndFINTogether(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = 5 * time.Second
	cfg.Session.HeartbeatTimeout = 5 * time.Second
	mux := echoMux()
	mux.HandleFunc("nap", func(context.Context, *server.Request) ([]byte, error) {
		time.Sleep(5 * time.Millisecond) // the FIN arrives while the request runs
		return []byte("rested"), nil
	})
	ts := startServer(t, cfg, mux)
	var worst time.Duration
	for i := range 20 {
		p := dialRaw(t, ts.addr, false)
		id := uint64(1)
		if i%2 == 1 {
			id = p.warm(t, id, 3) // the last request runs inline
		}
		p.send(t, id, "nap", nil)
		start := time.Now()
		if err := p.conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if f := p.expect(t, 2*time.Second, wire.TypeResponse); f.ID != id {
			t.Fatalf("conn %d: response id %d, want %d", i, f.ID, id)
		}
		_, err := p.next(time.Second)
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("conn %d: want the server's FIN within 1 s of ours, got %v", i, err)
		}
		worst = max(worst, time.Since(start))
		p.Close()
	}
	t.Logf("TIMING worst FIN-to-FIN %v over 20 connections", worst)
}

// TestSeveralSlowRequestsKeepConnectionServed: slow requests sent one
// after the other on a warm connection, each in its own read, while the
// earlier ones still run. The reader that takes over from a slow inline
// request must not run the next one inline too: with two descriptors, the
// reader after it would wait for a read lock held until a slow request
// returns, and the connection would go unread (its PINGs unanswered, the
// peer declared dead). So requests and heartbeats keep flowing.
func TestSeveralSlowRequestsKeepConnectionServed(t *testing.T) {
	_, g, p, id := warmPeerWithGate(t, "slow")
	const slow = 4
	first := id
	for range slow {
		p.send(t, id, "slow", nil)
		g.waitStarted(t, 2*time.Second) // each one in its own read
		id++
	}
	p.echoPastHeartbeatBound(t, id)
	g.Release()
	got := map[uint64]bool{}
	for range slow {
		f := p.expect(t, 2*time.Second, wire.TypeResponse)
		got[f.ID] = true
	}
	for i := first; i < first+slow; i++ {
		if !got[i] {
			t.Fatalf("slow request %d not answered after release (got %v)", i, got)
		}
	}
}
