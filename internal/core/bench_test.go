package core

import (
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// benchSink is a Sink that keeps the last request's id and the last
// call's end, for BenchmarkRoundTrip.
type benchSink struct {
	id    uint64
	ended bool
}

func (s *benchSink) Ready(wire.Hello) {}
func (s *benchSink) Request(in Incoming) bool {
	s.id = in.ID
	return true
}
func (s *benchSink) Cancelled(uint64)                             {}
func (s *benchSink) CallDone(*Call, []byte, wire.Metadata, error) { s.ended = true }
func (s *benchSink) GoAway(uint64, wire.Reason, []byte)           {}
func (s *benchSink) Closed(error)                                 {}
func (s *benchSink) HeartbeatRTT(time.Duration)                   {}

// benchPair is a client core and a server core connected in memory (no
// transport), their HELLOs exchanged, for the benchmarks.
type benchPair struct {
	b        *testing.B
	cli, srv *Conn
	now      int64
	buf      []byte
}

func newBenchPair(b *testing.B, cs, ss Sink) *benchPair {
	p := &benchPair{b: b, now: 1, buf: make([]byte, 0, 64<<10)}
	p.cli = New(Client, session.Config{}, Options{}, cs, p.now)
	p.srv = New(Server, session.Config{}, Options{}, ss, p.now)
	p.relay(p.cli, p.srv)
	p.relay(p.srv, p.cli)
	return p
}

// relay hands everything from has to send to to.
func (p *benchPair) relay(from, to *Conn) {
	p.buf = from.Transmit(p.now, p.buf[:0], 64<<10)
	from.Written(p.now, len(p.buf))
	if n := to.Receive(p.now, p.buf); n != len(p.buf) {
		p.b.Fatalf("%d of %d bytes consumed", n, len(p.buf))
	}
}

// BenchmarkRoundTrip is the protocol core's share of a call: a client
// core's request handed to a server core, answered, and the answer handed
// back, in memory (no transport), one call at a time: what a server and a
// client do per call besides moving bytes and running the handler.
func BenchmarkRoundTrip(b *testing.B) {
	var cs, ss benchSink
	p := newBenchPair(b, &cs, &ss)
	cli, srv := p.cli, p.srv
	body := make([]byte, 64)
	call := &Call{Method: "echo", Body: body}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p.now++
		cs.ended = false
		if err := cli.Call(p.now, call); err != nil {
			b.Fatal(err)
		}
		p.relay(cli, srv)
		srv.Answer(p.now, ss.id, nil, body)
		p.relay(srv, cli)
		if !cs.ended {
			b.Fatal("the call did not end")
		}
	}
}

// pipeSink is a Sink that keeps the ids of the requests taken in and
// counts the calls ended, for BenchmarkPipelined.
type pipeSink struct {
	benchSink
	ids   []uint64
	ended int
}

func (s *pipeSink) Request(in Incoming) bool {
	s.ids = append(s.ids, in.ID)
	return true
}
func (s *pipeSink) CallDone(*Call, []byte, wire.Metadata, error) { s.ended++ }

// BenchmarkPipelined is BenchmarkRoundTrip with 32 calls in flight: the
// calls leave together, are answered together, and their answers come
// back together, as in bench/'s pipe scenario; reported per call.
func BenchmarkPipelined(b *testing.B) {
	const depth = 32
	var cs, ss pipeSink
	p := newBenchPair(b, &cs, &ss)
	cli, srv := p.cli, p.srv
	body := make([]byte, 64)
	calls := make([]Call, depth)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += depth {
		p.now++
		cs.ended = 0
		for j := range calls {
			calls[j] = Call{Method: "echo", Body: body}
			if err := cli.Call(p.now, &calls[j]); err != nil {
				b.Fatal(err)
			}
		}
		p.relay(cli, srv)
		for _, id := range ss.ids {
			srv.Answer(p.now, id, nil, body)
		}
		ss.ids = ss.ids[:0]
		p.relay(srv, cli)
		if cs.ended != depth {
			b.Fatalf("%d calls of %d ended", cs.ended, depth)
		}
	}
}
