package core

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// t0 is the clock at the start of the unit tests.
const t0 = 1000 * sec

// recorder is a Sink that records every event.
type recorder struct {
	readies   []wire.Hello
	requests  []Incoming // copies
	refuse    bool       // Request returns false
	cancelled []uint64
	done      []doneCall
	goAways   []uint64
	closed    []error
	rtts      []time.Duration
}

type doneCall struct {
	call *Call
	body []byte
	md   wire.Metadata
	err  error
}

func (r *recorder) Ready(h wire.Hello) { r.readies = append(r.readies, h) }
func (r *recorder) Request(in Incoming) bool {
	in.Method = bytes.Clone(in.Method)
	in.Body = bytes.Clone(in.Body)
	r.requests = append(r.requests, in)
	return !r.refuse
}
func (r *recorder) Cancelled(id uint64) { r.cancelled = append(r.cancelled, id) }
func (r *recorder) CallDone(c *Call, body []byte, md wire.Metadata, err error) {
	r.done = append(r.done, doneCall{c, bytes.Clone(body), md, err})
}
func (r *recorder) GoAway(lastID uint64, _ wire.Reason, _ []byte) {
	r.goAways = append(r.goAways, lastID)
}
func (r *recorder) Closed(err error)             { r.closed = append(r.closed, err) }
func (r *recorder) HeartbeatRTT(d time.Duration) { r.rtts = append(r.rtts, d) }

// doneOf returns how call ended, failing the test if it did not, or more
// than once.
func (r *recorder) doneOf(t *testing.T, cl *Call) doneCall {
	t.Helper()
	var found []doneCall
	for _, d := range r.done {
		if d.call == cl {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("call %q ended %d times", cl.Method, len(found))
	}
	return found[0]
}

// decode decodes whole frames, copying their payloads.
func decode(t *testing.T, b []byte) []wire.Frame {
	t.Helper()
	var fs []wire.Frame
	if err := eachFrame(b, func(f wire.Frame) {
		f.Payload = bytes.Clone(f.Payload)
		fs = append(fs, f)
	}); err != nil {
		t.Fatalf("output is not whole frames: %v", err)
	}
	return fs
}

// out drains c's output as a transport writing everything at once would,
// and returns the frames.
func out(t *testing.T, c *Conn, now int64) []wire.Frame {
	t.Helper()
	var fs []wire.Frame
	for i := 0; c.HasOutput(); i++ {
		if i > 1000 {
			t.Fatal("HasOutput stays true")
		}
		b := c.Transmit(now, nil, 1<<24)
		c.Written(now, len(b))
		fs = append(fs, decode(t, b)...)
	}
	return fs
}

// step hands out one Transmit of at most max bytes and reports it written.
func step(t *testing.T, c *Conn, now int64, max int) []wire.Frame {
	t.Helper()
	b := c.Transmit(now, nil, max)
	c.Written(now, len(b))
	return decode(t, b)
}

// feed passes frames to c, which must consume them all.
func feed(t *testing.T, c *Conn, now int64, frames ...[]byte) {
	t.Helper()
	b := bytes.Join(frames, nil)
	if n := c.Receive(now, b); n != len(b) {
		t.Fatalf("Receive consumed %d of %d bytes", n, len(b))
	}
}

// relay moves everything from's output to to, frame by frame.
func relay(t *testing.T, from, to *Conn, now int64) []wire.Frame {
	t.Helper()
	fs := out(t, from, now)
	for _, f := range fs {
		feed(t, to, now, frameBytes(f))
	}
	return fs
}

func frameBytes(f wire.Frame) []byte {
	return append(wire.AppendHeader(nil, f.Header), f.Payload...)
}

// names describes frames compactly: "HELLO REQUEST#1+ DATA#1".
func names(fs []wire.Frame) string {
	var s []string
	for _, f := range fs {
		n := f.Type.String()
		if f.ID != 0 {
			n += fmt.Sprintf("#%d", f.ID)
		}
		if f.More() {
			n += "+"
		}
		s = append(s, n)
	}
	return strings.Join(s, " ")
}

func errorCode(t *testing.T, f wire.Frame) wire.Code {
	t.Helper()
	if f.Type != wire.TypeError {
		t.Fatalf("%v, want ERROR", f.Header)
	}
	code, _, _, err := wire.ParseError(f.ID, f.Flags, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func helloFrame(h wire.Hello) []byte { return wire.AppendHello(nil, h) }

func clientHello() []byte {
	return helloFrame(wire.Hello{Version: wire.Version, MaxFrameSize: 64 << 10, MaxMessageSize: 4 << 20})
}

// hello is a valid HELLO but for its version and MAX_IN_FLIGHT.
func hello(version uint16, inFlight uint32) wire.Hello {
	return wire.Hello{Version: version, MaxFrameSize: 64 << 10, MaxMessageSize: 4 << 20, MaxInFlight: inFlight}
}

func serverHello(maxFrame uint32, inFlight uint32) wire.Hello {
	return wire.Hello{Version: wire.Version, MaxFrameSize: maxFrame, MaxMessageSize: 4 << 20, MaxInFlight: inFlight}
}

// newServer returns a server that has answered a client's HELLO.
func newServer(t *testing.T, cfg session.Config, opts Options) (*Conn, *recorder) {
	t.Helper()
	r := &recorder{}
	c := New(Server, cfg, opts, r, t0)
	feed(t, c, t0, clientHello())
	if got := names(out(t, c, t0)); got != "HELLO" {
		t.Fatalf("server sent %s, want HELLO", got)
	}
	return c, r
}

// newClient returns a client that has received h, the server's HELLO.
func newClient(t *testing.T, cfg session.Config, h wire.Hello) (*Conn, *recorder) {
	t.Helper()
	r := &recorder{}
	c := New(Client, cfg, Options{}, r, t0)
	if got := names(out(t, c, t0)); got != "HELLO" {
		t.Fatalf("client sent %s, want HELLO", got)
	}
	feed(t, c, t0, helloFrame(h))
	return c, r
}

// pair returns a client and a server that have exchanged HELLOs.
func pair(t *testing.T, ccfg, scfg session.Config) (cli, srv *Conn, cr, sr *recorder) {
	t.Helper()
	cr, sr = &recorder{}, &recorder{}
	cli = New(Client, ccfg, Options{}, cr, t0)
	srv = New(Server, scfg, Options{}, sr, t0)
	relay(t, cli, srv, t0)
	relay(t, srv, cli, t0)
	if !cli.Ready() || !srv.Ready() {
		t.Fatal("handshake did not complete")
	}
	return cli, srv, cr, sr
}

func TestHandshake(t *testing.T) {
	v1Request := wire.AppendRequest(nil, 1, false, 0, "echo", nil, []byte("hi"))
	tests := []struct {
		name    string
		role    Role
		in      [][]byte
		want    string // frames sent after the input (the client's HELLO and REQUEST left out)
		code    wire.Code
		err     error // the connection's error, nil if it stays open
		ready   bool
		version uint16
	}{
		{name: "server answers HELLO", role: Server, in: [][]byte{clientHello()}, want: "HELLO", ready: true, version: 2},
		{name: "server answers a higher version with its own", role: Server, in: [][]byte{helloFrame(hello(3, 0))}, want: "HELLO", ready: true, version: 2},
		{name: "server refuses a v1 first frame", role: Server, in: [][]byte{v1Request}, want: "ERROR", code: wire.CodeUnsupportedVersion, err: session.ErrUnsupportedVersion},
		{name: "server refuses a large v1 first frame", role: Server, in: [][]byte{wire.AppendRequest(nil, 1, false, 0, "echo", nil, make([]byte, 100<<10))}, want: "ERROR", code: wire.CodeUnsupportedVersion, err: session.ErrUnsupportedVersion},
		{name: "server refuses HELLO version 1", role: Server, in: [][]byte{helloFrame(hello(1, 0))}, want: "ERROR", code: wire.CodeUnsupportedVersion, err: session.ErrUnsupportedVersion},
		{name: "server refuses a second HELLO", role: Server, in: [][]byte{clientHello(), clientHello()}, want: "ERROR", code: wire.CodeProtocol, err: wire.ErrProtocol, ready: true},
		{name: "client takes the server's HELLO", role: Client, in: [][]byte{helloFrame(serverHello(16<<10, 3))}, want: "", ready: true},
		{name: "client fails on BUSY, answering nothing", role: Client, in: [][]byte{wire.AppendError(nil, 0, wire.CodeBusy, nil, "full")}, want: "", err: session.ErrBusy},
		{name: "client refuses another version", role: Client, in: [][]byte{helloFrame(hello(3, 1))}, want: "ERROR", code: wire.CodeUnsupportedVersion, err: session.ErrUnsupportedVersion},
		{name: "client refuses a first frame not HELLO", role: Client, in: [][]byte{wire.AppendPing(nil, 1)}, want: "ERROR", code: wire.CodeProtocol, err: wire.ErrProtocol},
		{name: "client refuses MAX_IN_FLIGHT 0", role: Client, in: [][]byte{helloFrame(hello(2, 0))}, want: "ERROR", code: wire.CodeProtocol, err: wire.ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			c := New(tt.role, session.Config{MaxInFlight: 7}, Options{}, r, t0)
			cl := &Call{Method: "m"}
			if tt.role == Client {
				out(t, c, t0) // its HELLO
				if err := c.Call(t0, cl); err != nil {
					t.Fatal(err)
				}
			}
			for _, b := range tt.in {
				c.Receive(t0, b)
			}
			fs := out(t, c, t0)
			if tt.role == Client && tt.ready {
				fs = fs[1:] // the call's REQUEST
			}
			if got := names(fs); got != tt.want {
				t.Fatalf("sent %q, want %q", got, tt.want)
			}
			if tt.code != 0 {
				last := fs[len(fs)-1]
				if last.ID != 0 || errorCode(t, last) != tt.code {
					t.Fatalf("sent %v code %v, want code %v with id 0", last.Header, errorCode(t, last), tt.code)
				}
			}
			if c.Ready() != tt.ready {
				t.Fatalf("Ready() = %t, want %t", c.Ready(), tt.ready)
			}
			if tt.ready && tt.role == Server && tt.err == nil {
				h, err := wire.ParseHello(fs[0].Payload)
				if err != nil || h.Version != tt.version || h.MaxInFlight != 7 {
					t.Fatalf("server's HELLO %+v, %v", h, err)
				}
			}
			if tt.err == nil {
				if c.Failed() || len(r.closed) != 0 {
					t.Fatalf("connection failed: %v", c.Err())
				}
				return
			}
			if !errors.Is(c.Err(), tt.err) || len(r.closed) != 1 || !c.Done() {
				t.Fatalf("Err() = %v (closed %d times, done %t), want %v", c.Err(), len(r.closed), c.Done(), tt.err)
			}
			if tt.role == Client {
				if d := r.doneOf(t, cl); !session.RetrySafe(d.err) {
					t.Fatalf("unsent call ended with %v, not retry safe", d.err)
				}
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	for _, role := range []Role{Client, Server} {
		t.Run(role.String(), func(t *testing.T) {
			r := &recorder{}
			c := New(role, session.Config{HandshakeTimeout: time.Second}, Options{}, r, t0)
			out(t, c, t0)
			if n := c.Next(); n != t0+sec {
				t.Fatalf("Next() = %d, want the handshake timeout", n-t0)
			}
			c.Tick(t0 + sec - 1)
			if c.Failed() {
				t.Fatal("failed before the handshake timeout")
			}
			c.Tick(t0 + sec)
			if !errors.Is(c.Err(), session.ErrHandshakeTimeout) || !c.Done() {
				t.Fatalf("Err() = %v, done %t", c.Err(), c.Done())
			}
		})
	}
}

// TestChunking sends bodies larger than a frame both ways, with PINGs
// arriving between the chunks: the PONG goes ahead of the next chunk, and
// two large messages take turns.
func TestChunking(t *testing.T) {
	ccfg := session.Config{MaxFrameSize: 16 << 10, HeartbeatInterval: -1}
	scfg := session.Config{MaxFrameSize: 16 << 10, HeartbeatInterval: -1}
	cli, srv, cr, sr := pair(t, ccfg, scfg)
	b1, b2 := blockBytes(1, 0, 50_000), blockBytes(2, 0, 20_000)
	c1, c2 := &Call{Method: "big", Body: b1}, &Call{Method: "big2", Body: b2}
	for _, c := range []*Call{c1, c2} {
		if err := cli.Call(t0, c); err != nil {
			t.Fatal(err)
		}
	}
	var sent []wire.Frame
	for i := 0; cli.HasOutput(); i++ {
		fs := step(t, cli, t0, wire.MinMaxFrameSize)
		for _, f := range fs {
			if f.Length > 16<<10 {
				t.Fatalf("%v larger than the peer's MAX_FRAME_SIZE", f.Header)
			}
			feed(t, srv, t0, frameBytes(f))
		}
		sent = append(sent, fs...)
		if i == 1 {
			feed(t, cli, t0, wire.AppendPing(nil, 42))
			if fs := step(t, cli, t0, wire.MinMaxFrameSize); names(fs[:1]) != "PONG" {
				t.Fatalf("after a PING the client sent %s, want the PONG first", names(fs))
			} else {
				sent = append(sent, fs...)
				for _, f := range fs[1:] {
					feed(t, srv, t0, frameBytes(f))
				}
			}
		}
	}
	const want = "REQUEST#1+ REQUEST#2+ PONG DATA#1+ DATA#2 DATA#1+ DATA#1"
	if got := names(sent); got != want {
		t.Fatalf("client sent %s, want %s", got, want)
	}
	// Request 2, shorter, completes first.
	if len(sr.requests) != 2 || !bytes.Equal(sr.requests[0].Body, b2) || !bytes.Equal(sr.requests[1].Body, b1) {
		t.Fatal("the server did not get both bodies whole")
	}

	// The answer: RESPONSE then DATA frames, a PONG ahead of the next one.
	ans := blockBytes(3, 0, 40_000)
	srv.Answer(t0, 1, nil, ans)
	srv.Answer(t0, 2, nil, []byte("small"))
	var got []wire.Frame
	for i := 0; srv.HasOutput(); i++ {
		fs := step(t, srv, t0, wire.MinMaxFrameSize)
		got = append(got, fs...)
		for _, f := range fs {
			feed(t, cli, t0, frameBytes(f))
		}
		if i == 0 {
			feed(t, srv, t0, wire.AppendPing(nil, 7))
		}
	}
	if want := "RESPONSE#1+ PONG RESPONSE#2 DATA#1+ DATA#1"; names(got) != want {
		t.Fatalf("server sent %s, want %s", names(got), want)
	}
	if d := cr.doneOf(t, c1); d.err != nil || !bytes.Equal(d.body, ans) {
		t.Fatalf("call 1 ended with %d bytes, %v", len(d.body), d.err)
	}
	if d := cr.doneOf(t, c2); d.err != nil || string(d.body) != "small" {
		t.Fatalf("call 2 ended with %q, %v", d.body, d.err)
	}
}

// TestChunkLimits: a call too large for the server fails unsent; an answer
// too large for the client becomes ERROR INTERNAL.
func TestChunkLimits(t *testing.T) {
	cli, srv, cr, _ := pair(t, session.Config{MaxMessageSize: 1000}, session.Config{MaxMessageSize: 2000})
	if err := cli.Call(t0, &Call{Method: "m", Body: make([]byte, 2001)}); !errors.Is(err, session.ErrTooLarge) {
		t.Fatalf("Call of a too large body: %v", err)
	}
	cl := &Call{Method: "m"}
	if err := cli.Call(t0, cl); err != nil {
		t.Fatal(err)
	}
	relay(t, cli, srv, t0)
	srv.Answer(t0, 1, nil, make([]byte, 1001))
	relay(t, srv, cli, t0)
	var se *session.Error
	if d := cr.doneOf(t, cl); !errors.As(d.err, &se) || se.Code != wire.CodeInternal {
		t.Fatalf("too large answer ended the call with %v", d.err)
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	cli, srv, cr, sr := pair(t, session.Config{MaxFrameSize: 16 << 10}, session.Config{MaxFrameSize: 16 << 10})
	reqMD := wire.Metadata{{Key: "traceparent", Value: "00-abc-01"}, {Key: "auth", Value: "\x00\xffbytes"}}
	ansMD := wire.Metadata{{Key: "server", Value: "s1"}}
	calls := []*Call{
		{Method: "a", Metadata: reqMD, Body: []byte("x")},
		{Method: "b", Metadata: reqMD, Body: blockBytes(4, 0, 40_000)}, // chunked
		{Method: "c", Metadata: reqMD},
	}
	for _, cl := range calls {
		if err := cli.Call(t0, cl); err != nil {
			t.Fatal(err)
		}
	}
	relay(t, cli, srv, t0)
	if len(sr.requests) != 3 {
		t.Fatalf("%d requests", len(sr.requests))
	}
	for _, in := range sr.requests {
		if !mdEqual(in.Metadata, reqMD) {
			t.Fatalf("request %d metadata %v, want %v", in.ID, in.Metadata, reqMD)
		}
	}
	srv.Answer(t0, 1, ansMD, []byte("ok"))
	srv.Answer(t0, 2, ansMD, blockBytes(5, 0, 40_000))
	srv.AnswerError(t0, 3, wire.CodeApplication, "no", ansMD)
	relay(t, srv, cli, t0)
	for i, cl := range calls[:2] {
		if d := cr.doneOf(t, cl); d.err != nil || !mdEqual(d.md, ansMD) {
			t.Fatalf("call %d: metadata %v, %v", i+1, d.md, d.err)
		}
	}
	var se *session.Error
	if d := cr.doneOf(t, calls[2]); !errors.As(d.err, &se) || se.Code != wire.CodeApplication || se.Message != "no" || !mdEqual(se.Metadata, ansMD) {
		t.Fatalf("call 3: %v", d.err)
	}
}
