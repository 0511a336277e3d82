package core

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestSmallRequestsShareAWrite: calls queued together leave in one
// Transmit (one write), not one write each; only a large message's partial
// chunk ends a Transmit.
func TestSmallRequestsShareAWrite(t *testing.T) {
	cli, _ := newClient(t, session.Config{}, serverHello(64<<10, 128))
	for i := 0; i < 10; i++ {
		if err := cli.Call(t0, &Call{Method: "echo", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if fs := step(t, cli, t0, 64<<10); len(fs) != 10 {
		t.Fatalf("one Transmit carried %d of 10 queued requests: %s", len(fs), names(fs))
	}
	big := make([]byte, 200<<10)
	if err := cli.Call(t0, &Call{Method: "big", Body: big}); err != nil {
		t.Fatal(err)
	}
	if err := cli.Call(t0, &Call{Method: "small", Body: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	fs := step(t, cli, t0, 1<<20)
	if got := names(fs); got != "REQUEST#11+" {
		t.Fatalf("first Transmit after a large call: %s, want its first chunk alone", got)
	}
}

// TestLargeAnswerChunked: an answer larger than one chunk goes out in
// chunks even when the client accepts huge frames, so that a PONG queued
// meanwhile waits for one chunk at most.
func TestLargeAnswerChunked(t *testing.T) {
	srv, _ := New(Server, session.Config{}, Options{}, &recorder{}, t0), 0
	feed(t, srv, t0, helloFrame(wire.Hello{Version: wire.Version, MaxFrameSize: wire.MaxMaxFrameSize, MaxMessageSize: 8 << 20}))
	out(t, srv, t0)
	feed(t, srv, t0, reqFrame(1, false, "a"))
	srv.Answer(t0, 1, nil, make([]byte, 1<<20))
	b := srv.Transmit(t0, nil, 64<<10)
	if len(b) > maxChunk+wire.HeaderLen {
		t.Fatalf("one Transmit handed out %d bytes of a 1 MiB answer, want one chunk (%d)", len(b), maxChunk)
	}
	srv.Written(t0, len(b))
	feed(t, srv, t0, wire.AppendPing(nil, 9))
	if fs := step(t, srv, t0, 64<<10); len(fs) == 0 || fs[0].Type != wire.TypePong {
		t.Fatalf("after a chunk, sent %s, want the PONG first", names(fs))
	}
}

// TestIncompleteRequestBounded: a request whose body stops arriving does
// not hold its memory and slot for ever, even while the peer answers
// PINGs: with no body bytes for FrameReadTimeout, the connection ends
// (ErrFrameTimeout) and the bytes are released.
func TestIncompleteRequestBounded(t *testing.T) {
	b := &countBudget{limit: 1 << 30}
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second, FrameReadTimeout: 5 * time.Second}
	srv, _ := newServer(t, cfg, Options{Budget: b})
	feed(t, srv, t0, reqFrame(1, true, "first chunk"))
	for now := t0 + sec; now < t0+5*sec; now += sec {
		feed(t, srv, now, wire.AppendPong(nil, 0)) // alive, but no body
		srv.Tick(now)
		if srv.Failed() {
			t.Fatalf("failed at %v: %v", now-t0, srv.Err())
		}
	}
	feed(t, srv, t0+4500*ms, data(1, true, "")) // an empty DATA frame is no progress
	srv.Tick(t0 + 5*sec)
	if !errors.Is(srv.Err(), session.ErrFrameTimeout) {
		t.Fatalf("Err() = %v, want ErrFrameTimeout", srv.Err())
	}
	if b.n != 0 || srv.Stats().Held != 0 {
		t.Fatalf("budget %d, held %d after the end", b.n, srv.Stats().Held)
	}
}

// TestHandledRequestKeepsBudgetPastClose: when a connection ends while a
// handler still holds its request's body, the bytes stay reserved until
// the handler answers.
func TestHandledRequestKeepsBudgetPastClose(t *testing.T) {
	b := &countBudget{limit: 1 << 30}
	srv, r := newServer(t, session.Config{}, Options{Budget: b})
	feed(t, srv, t0, reqFrame(1, false, "a body of some bytes"))
	if len(r.requests) != 1 {
		t.Fatal("request not handed over")
	}
	held := b.n
	srv.ReadFailed(t0, errors.New("reset"))
	if !srv.Done() || b.n != held {
		t.Fatalf("done %t, budget %d after the end, want %d until the answer", srv.Done(), b.n, held)
	}
	srv.Answer(t0, 1, nil, []byte("late"))
	if b.n != 0 || srv.HasOutput() {
		t.Fatalf("budget %d, output %t after the late answer", b.n, srv.HasOutput())
	}
}

// TestIncomingArrived: a request's Arrived is when its REQUEST frame came,
// not when its last chunk did (its timeout counts from then).
func TestIncomingArrived(t *testing.T) {
	srv, r := newServer(t, session.Config{}, Options{})
	feed(t, srv, t0+ms, reqFrame(1, true, "a"))
	feed(t, srv, t0+9*ms, data(1, false, "b"))
	if len(r.requests) != 1 || r.requests[0].Arrived != t0+ms {
		t.Fatalf("requests %+v, want one arrived at t0+1ms", r.requests)
	}
}

// TestConnLevelRetrySafety: an ERROR with ID 0 makes the calls on the
// connection retry safe only for the codes that refuse a whole connection.
func TestConnLevelRetrySafety(t *testing.T) {
	for code, safe := range map[wire.Code]bool{
		wire.CodeBusy: true, wire.CodeShuttingDown: true, wire.CodeUnsupportedVersion: true,
		wire.CodeOverloaded: false, wire.CodeProtocol: false, wire.CodeInternal: false,
	} {
		cli, r := newClient(t, session.Config{}, serverHello(64<<10, 8))
		cl := &Call{Method: "m"}
		if err := cli.Call(t0, cl); err != nil {
			t.Fatal(err)
		}
		out(t, cli, t0)
		feed(t, cli, t0, wire.AppendError(nil, 0, code, nil, "bye"))
		if err := r.doneOf(t, cl).err; session.RetrySafe(err) != safe {
			t.Errorf("%v with ID 0: RetrySafe(%v) = %t, want %t", code, err, !safe, safe)
		}
	}
}
