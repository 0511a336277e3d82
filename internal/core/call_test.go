package core

import (
	"errors"
	"testing"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

var errGaveUp = errors.New("caller gave up")

// TestClientCancel: a call abandoned before its REQUEST left is simply
// dropped; one abandoned after is cancelled with CANCEL, no further DATA
// goes out for it and what still arrives of its answer is dropped.
func TestClientCancel(t *testing.T) {
	tests := []struct {
		name   string
		body   int
		before func(t *testing.T, c *Conn)              // before Abandon
		want   string                                   // frames sent after Abandon
		after  func(t *testing.T, c *Conn, r *recorder) // late frames
	}{
		{name: "not admitted", want: ""},
		{name: "REQUEST sent", before: func(t *testing.T, c *Conn) { out(t, c, t0) }, want: "CANCEL#1",
			after: func(t *testing.T, c *Conn, r *recorder) {
				feed(t, c, t0, wire.AppendResponse(nil, 1, false, nil, []byte("late")))
			}},
		{name: "body partly sent", body: 50_000, before: func(t *testing.T, c *Conn) { step(t, c, t0, wire.MinMaxFrameSize) }, want: "CANCEL#1"},
		{name: "answer partly received", before: func(t *testing.T, c *Conn) {
			out(t, c, t0)
			feed(t, c, t0, wire.AppendResponse(nil, 1, true, nil, []byte("first")))
		}, want: "CANCEL#1",
			after: func(t *testing.T, c *Conn, r *recorder) {
				feed(t, c, t0, wire.AppendData(nil, 1, false, []byte("rest")), wire.AppendError(nil, 1, wire.CodeApplication, nil, "x"))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			c := New(Client, session.Config{}, Options{}, r, t0)
			out(t, c, t0)
			cl := &Call{Method: "m", Body: make([]byte, tt.body)}
			if err := c.Call(t0, cl); err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				feed(t, c, t0, helloFrame(serverHello(16<<10, 4)))
				tt.before(t, c)
			}
			c.Abandon(t0, cl, errGaveUp)
			c.Abandon(t0, cl, errGaveUp) // ended already: nothing
			if tt.before == nil {
				feed(t, c, t0, helloFrame(serverHello(16<<10, 4)))
			}
			if got := names(out(t, c, t0)); got != tt.want {
				t.Fatalf("sent %q after Abandon, want %q", got, tt.want)
			}
			if tt.after != nil {
				tt.after(t, c, r)
			}
			if d := r.doneOf(t, cl); !errors.Is(d.err, errGaveUp) {
				t.Fatalf("call ended with %v", d.err)
			}
			if c.Failed() || c.InFlight() != 0 {
				t.Fatalf("connection failed (%v) or holds %d calls", c.Err(), c.InFlight())
			}
		})
	}
}

// TestClientGoAway: calls above GOAWAY's last id end retry safe; a later
// GOAWAY with a smaller last id ends more of them, one with a larger one
// changes nothing; the calls below are answered, then the client wants its
// FIN.
func TestClientGoAway(t *testing.T) {
	c, r := newClient(t, session.Config{}, serverHello(64<<10, 10))
	calls := make([]*Call, 5)
	for i := range calls {
		calls[i] = &Call{Method: "m"}
		if err := c.Call(t0, calls[i]); err != nil {
			t.Fatal(err)
		}
	}
	out(t, c, t0)
	for _, g := range []struct {
		last  uint64
		ended int // calls ended so far
	}{{4, 1}, {2, 3}, {3, 3}} {
		feed(t, c, t0, wire.AppendGoAway(nil, g.last, wire.ReasonDrain, ""))
		if len(r.done) != g.ended {
			t.Fatalf("after GOAWAY %d: %d calls ended, want %d", g.last, len(r.done), g.ended)
		}
	}
	if want := []uint64{4, 2, 2}; len(r.goAways) != 3 || r.goAways[0] != want[0] || r.goAways[1] != want[1] || r.goAways[2] != want[2] {
		t.Fatalf("GoAway reported %v, want %v", r.goAways, want)
	}
	for _, d := range r.done {
		if !session.RetrySafe(d.err) || !errors.Is(d.err, session.ErrGoAway) || d.call.ID() != 0 {
			t.Fatalf("call ended with %v", d.err)
		}
	}
	if err := c.Call(t0, &Call{Method: "m"}); !session.RetrySafe(err) {
		t.Fatalf("Call after GOAWAY: %v", err)
	}
	feed(t, c, t0, wire.AppendResponse(nil, 1, false, nil, nil))
	if c.WantFin() {
		t.Fatal("WantFin with call 2 unanswered")
	}
	feed(t, c, t0, wire.AppendResponse(nil, 2, false, nil, nil))
	if !c.WantFin() || len(r.done) != 5 {
		t.Fatalf("WantFin %t, %d calls ended", c.WantFin(), len(r.done))
	}
}

// TestClientEOFAfterGoAway: a client with nothing left to do that reads
// the server's FIN before sending its own ends gracefully.
func TestClientEOFAfterGoAway(t *testing.T) {
	c, r := newClient(t, session.Config{}, serverHello(64<<10, 10))
	cl := &Call{Method: "m"}
	if err := c.Call(t0, cl); err != nil {
		t.Fatal(err)
	}
	c.Transmit(t0, nil, 1<<20) // being written when the GOAWAY arrives
	feed(t, c, t0, wire.AppendGoAway(nil, 0, wire.ReasonShutdown, ""))
	c.ReceiveEOF(t0)
	if !c.Done() || len(r.closed) != 1 || r.closed[0] != nil {
		t.Fatalf("done %t, closed %v", c.Done(), r.closed)
	}
}

// TestClientInFlight: calls wait for a slot below the smaller of the two
// MaxInFlight, and for room in the write queue, which Transmit makes.
func TestClientInFlight(t *testing.T) {
	t.Run("slots", func(t *testing.T) {
		c, _ := newClient(t, session.Config{MaxInFlight: 3}, serverHello(64<<10, 2))
		calls := []*Call{{Method: "a"}, {Method: "b"}, {Method: "c"}}
		for _, cl := range calls {
			if err := c.Call(t0, cl); err != nil {
				t.Fatal(err)
			}
		}
		if got := names(out(t, c, t0)); got != "REQUEST#1 REQUEST#2" || calls[2].ID() != 0 {
			t.Fatalf("sent %s", got)
		}
		feed(t, c, t0, wire.AppendResponse(nil, 2, false, nil, nil))
		if got := names(out(t, c, t0)); got != "REQUEST#3" {
			t.Fatalf("after an answer, sent %s", got)
		}
	})
	t.Run("write queue", func(t *testing.T) {
		c, _ := newClient(t, session.Config{WriteQueueSize: 1000}, serverHello(16<<10, 10))
		big, small := &Call{Method: "big", Body: make([]byte, 5000)}, &Call{Method: "small"}
		for _, cl := range []*Call{big, small} {
			if err := c.Call(t0, cl); err != nil {
				t.Fatal(err)
			}
		}
		if big.ID() != 1 || small.ID() != 0 {
			t.Fatalf("ids %d, %d: the second call should wait", big.ID(), small.ID())
		}
		c.Transmit(t0, nil, 1<<20)
		if small.ID() != 2 {
			t.Fatal("the queue drained, but the waiting call was not admitted")
		}
	})
}

// TestClientDeadline: a call ends at its deadline, whether it waits, was
// sent, or is being answered; a sent one is cancelled.
func TestClientDeadline(t *testing.T) {
	c, r := newClient(t, session.Config{MaxInFlight: 1}, serverHello(64<<10, 10))
	sent, waiting := &Call{Method: "a", Deadline: t0 + 2*sec}, &Call{Method: "b", Deadline: t0 + sec}
	for _, cl := range []*Call{sent, waiting} {
		if err := c.Call(t0, cl); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Call(t0, &Call{Method: "c", Deadline: t0}); err == nil {
		t.Fatal("Call with its deadline passed was taken")
	}
	out(t, c, t0)
	if n := c.Next(); n != t0+sec {
		t.Fatalf("Next() = %d, want the first deadline", n-t0)
	}
	c.Tick(t0 + sec)
	var de *session.DeadlineError
	if d := r.doneOf(t, waiting); !errors.As(d.err, &de) || de.Sent {
		t.Fatalf("waiting call ended with %v", d.err)
	}
	c.Tick(t0 + 2*sec)
	if d := r.doneOf(t, sent); !errors.As(d.err, &de) || !de.Sent {
		t.Fatalf("sent call ended with %v", d.err)
	}
	if got := names(out(t, c, t0+2*sec)); got != "CANCEL#1" {
		t.Fatalf("sent %s, want CANCEL#1", got)
	}
}

// TestClientEOF: the server's FIN fails the calls; only those never sent
// are retry safe.
func TestClientEOF(t *testing.T) {
	c, r := newClient(t, session.Config{MaxInFlight: 1}, serverHello(64<<10, 10))
	sent, waiting := &Call{Method: "a"}, &Call{Method: "b"}
	for _, cl := range []*Call{sent, waiting} {
		if err := c.Call(t0, cl); err != nil {
			t.Fatal(err)
		}
	}
	out(t, c, t0)
	c.ReceiveEOF(t0)
	if d := r.doneOf(t, sent); !errors.Is(d.err, session.ErrConnClosed) || session.RetrySafe(d.err) {
		t.Fatalf("sent call ended with %v", d.err)
	}
	if d := r.doneOf(t, waiting); !errors.Is(d.err, session.ErrConnClosed) || !session.RetrySafe(d.err) {
		t.Fatalf("waiting call ended with %v", d.err)
	}
	if !c.Done() || len(r.closed) != 1 {
		t.Fatalf("done %t, closed %v", c.Done(), r.closed)
	}
}

// TestClientProtocolErrors: answers the client cannot take end the
// connection with ERROR PROTOCOL.
func TestClientProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"answer to an id never sent", wire.AppendResponse(nil, 9, false, nil, nil)},
		{"second RESPONSE", wire.AppendResponse(nil, 1, true, nil, nil)},
		{"ERROR after RESPONSE began", wire.AppendError(nil, 1, wire.CodeApplication, nil, "x")},
		{"REQUEST to a client", wire.AppendRequest(nil, 1, false, 0, "m", nil, nil)},
		{"answer above MAX_MESSAGE_SIZE", wire.AppendData(nil, 1, false, make([]byte, 2000))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r := newClient(t, session.Config{MaxMessageSize: 1000}, serverHello(64<<10, 10))
			cl := &Call{Method: "m"}
			if err := c.Call(t0, cl); err != nil {
				t.Fatal(err)
			}
			out(t, c, t0)
			feed(t, c, t0, wire.AppendResponse(nil, 1, true, nil, []byte("head")))
			c.Receive(t0, tt.in)
			fs := out(t, c, t0)
			if names(fs) != "ERROR" || errorCode(t, fs[0]) != wire.CodeProtocol || !errors.Is(c.Err(), wire.ErrProtocol) {
				t.Fatalf("sent %s, Err() = %v", names(fs), c.Err())
			}
			if d := r.doneOf(t, cl); session.RetrySafe(d.err) {
				t.Fatalf("sent call ended retry safe: %v", d.err)
			}
		})
	}
}

// TestClientDrain: a client connection drained from this side takes no new
// call, ends the calls not sent as not processed, lets the calls sent
// finish, and wants its FIN once none is left.
func TestClientDrain(t *testing.T) {
	cli, r := newClient(t, session.Config{}, serverHello(64<<10, 1))
	sent, waiting := &Call{Method: "a"}, &Call{Method: "b"}
	for _, cl := range []*Call{sent, waiting} {
		if err := cli.Call(t0, cl); err != nil {
			t.Fatal(err)
		}
	}
	out(t, cli, t0) // the first call's REQUEST; the second waits for a slot
	cli.Drain(t0)
	if d := r.doneOf(t, waiting); !session.RetrySafe(d.err) {
		t.Fatalf("waiting call ended with %v, want retry safe", d.err)
	}
	if err := cli.Call(t0, &Call{Method: "c"}); !session.RetrySafe(err) || cli.Usable() {
		t.Fatalf("new call on a draining connection: %v (usable %t)", err, cli.Usable())
	}
	if cli.WantFin() {
		t.Fatal("FIN wanted with a call in flight")
	}
	feed(t, cli, t0, wire.AppendResponse(nil, sent.ID(), false, nil, []byte("ok")))
	if d := r.doneOf(t, sent); d.err != nil || string(d.body) != "ok" {
		t.Fatalf("sent call ended with %q, %v", d.body, d.err)
	}
	if !cli.WantFin() {
		t.Fatal("no FIN wanted once the last call ended")
	}
}
