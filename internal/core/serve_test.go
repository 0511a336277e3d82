package core

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

func reqFrame(id uint64, more bool, body string) []byte {
	return wire.AppendRequest(nil, id, more, 0, "m", nil, []byte(body))
}

func data(id uint64, more bool, body string) []byte {
	return wire.AppendData(nil, id, more, []byte(body))
}

// TestOverloadedInFlight: a request beyond MaxInFlight is answered
// OVERLOADED at once, its DATA discarded, and reading goes on.
func TestOverloadedInFlight(t *testing.T) {
	srv, r := newServer(t, session.Config{MaxInFlight: 2}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "a"), reqFrame(2, false, "b"), reqFrame(3, true, "c"))
	if !srv.WantRead() {
		t.Fatal("the server stopped reading at its in-flight limit")
	}
	feed(t, srv, t0, data(3, false, "rest"), wire.AppendPing(nil, 9))
	fs := out(t, srv, t0)
	if names(fs) != "ERROR#3 PONG" || errorCode(t, fs[0]) != wire.CodeOverloaded {
		t.Fatalf("sent %s, want ERROR#3 OVERLOADED then PONG", names(fs))
	}
	if len(r.requests) != 2 || srv.InFlight() != 2 || srv.Stats().RefusedInFlight != 1 {
		t.Fatalf("%d requests, %d in flight, %d refused", len(r.requests), srv.InFlight(), srv.Stats().RefusedInFlight)
	}
	srv.Answer(t0, 1, nil, []byte("A"))
	feed(t, srv, t0, reqFrame(4, false, "d"))
	if fs := out(t, srv, t0); names(fs) != "RESPONSE#1" || len(r.requests) != 3 || r.requests[2].ID != 4 {
		t.Fatalf("after an answer: sent %s, %d requests", names(fs), len(r.requests))
	}
}

// TestMemoryRefusal: a request that arrives or grows past ConnMemory or the
// Budget is refused OVERLOADED, the rest of its DATA discarded, and what it
// held released.
func TestMemoryRefusal(t *testing.T) {
	tests := []struct {
		name   string
		mem    int
		budget int
	}{
		{"ConnMemory", 100, 1 << 30},
		{"Budget", 1 << 20, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &countBudget{limit: tt.budget}
			srv, r := newServer(t, session.Config{ConnMemory: tt.mem}, Options{Budget: b})
			feed(t, srv, t0, reqFrame(1, true, "0123456789"))
			if srv.Stats().Held == 0 || srv.InFlight() != 1 {
				t.Fatalf("held %d, in flight %d after the REQUEST", srv.Stats().Held, srv.InFlight())
			}
			feed(t, srv, t0, data(1, true, string(make([]byte, 100))))
			feed(t, srv, t0, data(1, false, "end"), reqFrame(2, false, "ok"))
			fs := out(t, srv, t0)
			if names(fs) != "ERROR#1" || errorCode(t, fs[0]) != wire.CodeOverloaded {
				t.Fatalf("sent %s, want ERROR#1 OVERLOADED", names(fs))
			}
			if srv.Failed() || len(r.requests) != 1 || r.requests[0].ID != 2 || srv.Stats().RefusedMemory != 1 {
				t.Fatalf("failed %v, requests %v, refused %d", srv.Err(), len(r.requests), srv.Stats().RefusedMemory)
			}
			srv.Answer(t0, 2, nil, make([]byte, 500)) // answers are never refused
			if fs := out(t, srv, t0); names(fs) != "RESPONSE#2" {
				t.Fatalf("sent %s, want the answer", names(fs))
			}
			if srv.Stats().Held != 0 || b.n != 0 {
				t.Fatalf("held %d, Budget %d at the end", srv.Stats().Held, b.n)
			}
		})
	}
}

type countBudget struct{ n, limit int }

func (b *countBudget) Reserve(n int, force bool) bool {
	if !force && b.n+n > b.limit {
		return false
	}
	b.n += n
	return true
}
func (b *countBudget) Release(n int) { b.n -= n }

// TestServerCancel: CANCEL stops a request being received or handled;
// other CANCELs are ignored.
func TestServerCancel(t *testing.T) {
	srv, r := newServer(t, session.Config{}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "handled"), reqFrame(2, true, "receiving"))
	feed(t, srv, t0, wire.AppendCancel(nil, 1), wire.AppendCancel(nil, 2), wire.AppendCancel(nil, 9), wire.AppendCancel(nil, 1))
	feed(t, srv, t0, data(2, false, "rest"))
	if len(r.cancelled) != 1 || r.cancelled[0] != 1 {
		t.Fatalf("Cancelled %v, want [1]", r.cancelled)
	}
	if len(r.requests) != 1 || srv.InFlight() != 0 {
		t.Fatalf("%d requests delivered, %d in flight", len(r.requests), srv.InFlight())
	}
	srv.Answer(t0, 1, nil, []byte("late"))
	if srv.HasOutput() || srv.Stats().Held != 0 || srv.Failed() {
		t.Fatalf("after the late answer: output %t, held %d, err %v", srv.HasOutput(), srv.Stats().Held, srv.Err())
	}
}

// TestGoAwayServer: GOAWAY's last id is the highest request received;
// requests above it are discarded with their DATA, those below answered,
// and the server then wants its FIN.
func TestGoAwayServer(t *testing.T) {
	srv, r := newServer(t, session.Config{}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "a"), reqFrame(2, true, "b"))
	if last, first := srv.GoAway(t0, wire.ReasonDrain, "bye"); last != 2 || !first {
		t.Fatalf("GoAway = %d, %t", last, first)
	}
	if last, first := srv.GoAway(t0, wire.ReasonShutdown, "again"); last != 2 || first {
		t.Fatalf("second GoAway = %d, %t", last, first)
	}
	feed(t, srv, t0, reqFrame(3, true, "c"), data(3, false, "c"), data(2, false, "end"))
	if fs := out(t, srv, t0); names(fs) != "GOAWAY" {
		t.Fatalf("sent %s", names(fs))
	}
	if len(r.requests) != 2 || r.requests[1].ID != 2 || string(r.requests[1].Body) != "bend" {
		t.Fatalf("requests %+v", r.requests)
	}
	srv.Answer(t0, 1, nil, nil)
	if srv.WantFin() {
		t.Fatal("WantFin with request 2 in flight")
	}
	srv.Answer(t0, 2, nil, nil)
	if fs := out(t, srv, t0); names(fs) != "RESPONSE#1 RESPONSE#2" || !srv.WantFin() {
		t.Fatalf("sent %s, WantFin %t", names(fs), srv.WantFin())
	}
	srv.FinSent(t0, true)
	srv.ReceiveEOF(t0)
	if !srv.Done() || len(r.closed) != 1 || r.closed[0] != nil {
		t.Fatalf("done %t, closed %v", srv.Done(), r.closed)
	}
}

// TestServerEOF: after the client's FIN the server drops what was still
// arriving, finishes what is in flight, then sends its FIN; or fails once
// WriteTimeout has passed.
func TestServerEOF(t *testing.T) {
	t.Run("finishes", func(t *testing.T) {
		srv, r := newServer(t, session.Config{}, Options{})
		feed(t, srv, t0, reqFrame(1, false, "a"), reqFrame(2, true, "b"))
		srv.ReceiveEOF(t0)
		if srv.WantRead() || srv.WantFin() || srv.Done() || srv.InFlight() != 1 {
			t.Fatalf("after EOF: read %t fin %t done %t in flight %d", srv.WantRead(), srv.WantFin(), srv.Done(), srv.InFlight())
		}
		srv.Answer(t0+sec, 1, nil, []byte("A"))
		if srv.WantFin() {
			t.Fatal("WantFin before the answer was written")
		}
		if fs := out(t, srv, t0+sec); names(fs) != "RESPONSE#1" || !srv.WantFin() {
			t.Fatalf("sent %s, WantFin %t", names(fs), srv.WantFin())
		}
		srv.FinSent(t0+sec, true)
		if !srv.Done() || len(r.closed) != 1 || r.closed[0] != nil {
			t.Fatalf("done %t, closed %v", srv.Done(), r.closed)
		}
	})
	t.Run("nothing in flight", func(t *testing.T) {
		srv, _ := newServer(t, session.Config{}, Options{})
		srv.ReceiveEOF(t0)
		if !srv.WantFin() {
			t.Fatal("no FIN wanted")
		}
	})
	t.Run("times out", func(t *testing.T) {
		srv, r := newServer(t, session.Config{WriteTimeout: time.Second}, Options{})
		feed(t, srv, t0, reqFrame(1, false, "a"))
		srv.ReceiveEOF(t0)
		srv.Tick(t0 + sec - 1)
		if srv.Failed() {
			t.Fatal("failed early")
		}
		srv.Tick(t0 + sec)
		if !errors.Is(srv.Err(), session.ErrConnClosed) || !srv.Done() || len(r.closed) != 1 {
			t.Fatalf("Err() = %v, done %t", srv.Err(), srv.Done())
		}
	})
}

// TestControlFlood: a peer that makes the server queue more than
// MaxQueuedControl PONGs and refusals without reading them gets ERROR
// CONTROL_FLOOD.
func TestControlFlood(t *testing.T) {
	// The bound is MaxQueuedControl plus MaxInFlight: 4.
	srv, r := newServer(t, session.Config{MaxQueuedControl: 3, MaxInFlight: 1}, Options{})
	feed(t, srv, t0, wire.AppendPing(nil, 1), reqFrame(1, false, "a"), reqFrame(2, false, "refused"), wire.AppendPing(nil, 2), wire.AppendPing(nil, 3))
	if srv.Failed() {
		t.Fatalf("failed at 4 queued: %v", srv.Err())
	}
	feed(t, srv, t0, wire.AppendPing(nil, 4))
	if !errors.Is(srv.Err(), session.ErrControlFlood) || len(r.closed) != 1 {
		t.Fatalf("Err() = %v", srv.Err())
	}
	fs := out(t, srv, t0)
	if names(fs) != "ERROR" || errorCode(t, fs[0]) != wire.CodeControlFlood || !srv.Done() {
		t.Fatalf("sent %s, done %t", names(fs), srv.Done())
	}
}

// TestRefusalBurstIsNotAFlood: a conforming client with MaxInFlight
// requests in flight, all refused in one read (every worker busy), is not
// taken for a flood, however small MaxQueuedControl is.
func TestRefusalBurstIsNotAFlood(t *testing.T) {
	srv, r := newServer(t, session.Config{MaxQueuedControl: 3, MaxInFlight: 300}, Options{})
	r.refuse = true
	var b []byte
	for id := uint64(1); id <= 300; id++ {
		b = append(b, reqFrame(id, false, "x")...)
	}
	feed(t, srv, t0, b)
	if srv.Failed() {
		t.Fatalf("300 refusals of requests in flight taken for a flood: %v", srv.Err())
	}
	if fs := out(t, srv, t0); len(fs) != 300 {
		t.Fatalf("sent %d frames, want 300 refusals", len(fs))
	}
}

// TestControlFloodOwnFrames: the frames a side queues of its own accord
// (HELLO, GOAWAY, PING) do not count against the peer's MaxQueuedControl.
func TestControlFloodOwnFrames(t *testing.T) {
	srv, _ := newServer(t, session.Config{MaxQueuedControl: 1, HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}, Options{})
	srv.GoAway(t0, wire.ReasonDrain, "")
	srv.Tick(t0 + sec) // a PING
	feed(t, srv, t0+sec, wire.AppendPing(nil, 1))
	if srv.Failed() {
		t.Fatalf("one PONG queued after GOAWAY and PING: %v", srv.Err())
	}
	if fs := out(t, srv, t0+sec); names(fs) != "GOAWAY PING PONG" {
		t.Fatalf("sent %s", names(fs))
	}
}

// TestControlAheadOfData: control frames never wait behind a data frame,
// even when more of them are queued than one Transmit takes.
func TestControlAheadOfData(t *testing.T) {
	srv, _ := newServer(t, session.Config{MaxInFlight: 1, MaxQueuedControl: 1000}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "a"))
	for id := uint64(2); id < 400; id++ {
		feed(t, srv, t0, reqFrame(id, false, "refused"))
	}
	feed(t, srv, t0, wire.AppendPing(nil, 1))
	srv.Answer(t0, 1, nil, []byte("A"))
	pong, data := -1, -1
	for i := 0; srv.HasOutput(); {
		// 195 refusals of 84 bytes leave 20 bytes, room for the answer.
		for _, f := range step(t, srv, t0, 16400) {
			switch f.Type {
			case wire.TypePong:
				pong = i
			case wire.TypeResponse:
				data = i
			}
			i++
		}
	}
	if pong < 0 || data < pong {
		t.Fatalf("RESPONSE sent as frame %d, the PONG as frame %d", data, pong)
	}
}

// TestAnswerTurns: a large answer delays a small one by one chunk, even
// when each Transmit holds only one chunk.
func TestAnswerTurns(t *testing.T) {
	srv, _ := newServer(t, session.Config{}, Options{})
	feed(t, srv, t0, reqFrame(1, false, "big"), reqFrame(2, false, "small"))
	srv.Answer(t0, 1, nil, make([]byte, 300<<10))
	var got []wire.Frame
	for i := 0; srv.HasOutput(); i++ {
		got = append(got, step(t, srv, t0, 64<<10)...)
		if i == 0 {
			srv.Answer(t0, 2, nil, []byte("small"))
		}
	}
	if want := "RESPONSE#1+ RESPONSE#2 DATA#1+ DATA#1+ DATA#1+ DATA#1"; names(got) != want {
		t.Fatalf("sent %s, want %s", names(got), want)
	}
}

// TestGoAwayBeforeHello: a server going away before the client's HELLO
// arrived refuses the connection with ERROR SHUTTING_DOWN (a GOAWAY cannot
// come before the server's HELLO); the client's calls end retry safe.
func TestGoAwayBeforeHello(t *testing.T) {
	sr, cr := &recorder{}, &recorder{}
	srv := New(Server, session.Config{}, Options{}, sr, t0)
	cli := New(Client, session.Config{}, Options{}, cr, t0)
	cl := &Call{Method: "m"}
	if err := cli.Call(t0, cl); err != nil {
		t.Fatal(err)
	}
	if last, first := srv.GoAway(t0, wire.ReasonShutdown, "draining"); last != 0 || first {
		t.Fatalf("GoAway = %d, %t", last, first)
	}
	relay(t, cli, srv, t0)
	fs := relay(t, srv, cli, t0)
	if names(fs) != "ERROR" || errorCode(t, fs[0]) != wire.CodeShuttingDown {
		t.Fatalf("server sent %s", names(fs))
	}
	if d := cr.doneOf(t, cl); !session.RetrySafe(d.err) || !errors.Is(d.err, session.ErrShuttingDown) {
		t.Fatalf("call ended with %v", d.err)
	}
	// The refusal ends gracefully: FIN after the ERROR, then done at the
	// client's FIN (or after LingerTimeout).
	if !srv.WantFin() {
		t.Fatal("no FIN wanted after the refusal")
	}
	srv.FinSent(t0, true)
	srv.ReceiveEOF(t0 + ms)
	if !srv.Done() || srv.Err() != nil {
		t.Fatalf("done %t, err %v after the client's FIN", srv.Done(), srv.Err())
	}
}

// TestRefuse: a refused connection reads and discards what the client
// sends (its HELLO, even a partial frame) until the client's FIN, after
// sending the ERROR and its own FIN; it ends at LingerTimeout otherwise.
func TestRefuse(t *testing.T) {
	srv := New(Server, session.Config{LingerTimeout: time.Second}, Options{}, &recorder{}, t0)
	srv.Refuse(t0, wire.CodeBusy, "full")
	hello := clientHello()
	if n := srv.Receive(t0, hello[:7]); n != 7 || srv.Failed() {
		t.Fatalf("consumed %d of a partial HELLO, failed %t", n, srv.Failed())
	}
	if fs := out(t, srv, t0); names(fs) != "ERROR" || errorCode(t, fs[0]) != wire.CodeBusy {
		t.Fatalf("sent %s", names(fs))
	}
	srv.FinSent(t0, true)
	srv.Tick(t0 + 999*ms)
	if srv.Done() || !srv.WantRead() {
		t.Fatalf("done %t, want read %t before LingerTimeout", srv.Done(), srv.WantRead())
	}
	srv.Tick(t0 + sec)
	if !srv.Done() {
		t.Fatal("not done after LingerTimeout")
	}
}

// TestSinkRefusal: a request the Sink refuses is answered OVERLOADED with
// its id, and the connection goes on.
func TestSinkRefusal(t *testing.T) {
	cli, srv, cr, sr := pair(t, session.Config{}, session.Config{})
	sr.refuse = true
	cl := &Call{Method: "m"}
	if err := cli.Call(t0, cl); err != nil {
		t.Fatal(err)
	}
	relay(t, cli, srv, t0)
	fs := relay(t, srv, cli, t0)
	if names(fs) != "ERROR#1" || errorCode(t, fs[0]) != wire.CodeOverloaded {
		t.Fatalf("server sent %s", names(fs))
	}
	if d := cr.doneOf(t, cl); !session.RetrySafe(d.err) || cli.Failed() || srv.Failed() {
		t.Fatalf("call ended with %v; client %v, server %v", d.err, cli.Err(), srv.Err())
	}
}
