package core

// The simulation harness, continued: the taps that check and decode what
// each side transmits and consumes, the raw flooding peer, and the trace.

import (
	"fmt"
	"strings"

	"github.com/tcppro/tcppro/wire"
)

// eachFrame decodes b, which must hold whole frames.
func eachFrame(b []byte, f func(wire.Frame)) error {
	d := wire.Decoder{MaxFrameSize: wire.MaxMaxFrameSize}
	for len(b) > 0 {
		fr, n, err := d.Next(b)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%d bytes of a partial frame", len(b))
		}
		f(fr)
		b = b[n:]
	}
	return nil
}

// isData reports whether f is a message frame, which queues behind control
// frames: REQUEST, RESPONSE, DATA, and ERROR answering a request (the
// core's refusals, OVERLOADED, are control frames).
func isData(f wire.Frame) bool {
	switch f.Type {
	case wire.TypeRequest, wire.TypeResponse, wire.TypeData:
		return true
	case wire.TypeError:
		return f.ID != 0 && len(f.Payload) >= 2 && wire.Code(uint16(f.Payload[0])<<8|uint16(f.Payload[1])) != wire.CodeOverloaded
	}
	return false
}

// tapIn looks at the frames a side's Conn consumed: each PING is owed a PONG.
func (s *side) tapIn(b []byte) {
	if err := eachFrame(b, func(f wire.Frame) {
		if f.Type == wire.TypePing {
			d, _ := wire.ParsePing(f.Payload)
			s.owed = append(s.owed, d)
		}
	}); err != nil {
		s.w.fail("%s consumed bytes that are not whole frames: %v", s.name, err)
	}
}

// tapOut checks what Transmit handed out: whole frames within the peer's
// MAX_FRAME_SIZE and about max bytes, every PONG owed ahead of any message
// frame; and passes each frame to the scenario.
func (s *side) tapOut(b []byte, max int) {
	w := s.w
	var sum [6]frameSum
	nsum, data := 0, false
	peerMax := s.conn.peer.MaxFrameSize
	if s.conn.failed {
		s.owed = nil // the queue was dropped: only a final ERROR goes out
	}
	err := eachFrame(b, func(f wire.Frame) {
		if nsum < len(sum) {
			sum[nsum] = frameSum{f.Type, f.Flags, f.ID, f.Length}
		}
		nsum++
		if f.Length > peerMax && s.conn.helloRecv {
			w.fail("%s sent a %v frame of %d bytes, the peer's MAX_FRAME_SIZE is %d", s.name, f.Type, f.Length, peerMax)
		}
		if f.Type == wire.TypePong {
			d, _ := wire.ParsePing(f.Payload)
			for i, o := range s.owed {
				if o == d {
					s.owed = append(s.owed[:i], s.owed[i+1:]...)
					break
				}
			}
		}
		if isData(f) {
			if len(s.owed) > 0 && !data {
				w.fail("%s sent %v id=%d before the PONG owed for PING %d", s.name, f.Type, f.ID, s.owed[0])
			}
			data = true
		}
		w.scen.sent(s, f)
	})
	if err != nil {
		w.fail("%s: Transmit handed out bytes that are not whole frames: %v", s.name, err)
	}
	if len(b) > max && nsum > 1 {
		w.fail("%s: Transmit(max %d) handed out %d bytes in %d frames", s.name, max, len(b), nsum)
	}
	if len(s.owed) > 0 && len(b)+wire.HeaderLen+8 <= max {
		w.fail("%s: Transmit(max %d) handed out %d bytes without the PONG owed for PING %d", s.name, max, len(b), s.owed[0])
	}
	w.logFrames(s.idx, len(b), max, sum[:min(nsum, len(sum))], nsum)
}

// peerControlQueued counts the control frames queued because of what the
// peer sent (PONGs and refusals), which MaxQueuedControl bounds.
func (c *Conn) peerControlQueued() int {
	if c.b == nil {
		return 0
	}
	n := 0
	for b := c.b.out.ctrl.rest(); len(b) >= wire.HeaderLen; b = b[wire.FrameLen(b):] {
		h, _ := wire.ParseHeader(b)
		if h.Type == wire.TypePong || (h.Type == wire.TypeError && h.ID != 0) {
			n++
		}
	}
	return n
}

// reqLen is the number of requests a server holds.
func (c *Conn) reqLen() int {
	if c.b == nil {
		return 0
	}
	return c.b.reqs.len()
}

// fifoLen is the bytes of single-frame answers waiting in the fifo.
func (c *Conn) fifoLen() int {
	if c.b == nil {
		return 0
	}
	return c.b.out.fifo.len()
}

// The trace: the last events of a run, formatted only when shown.

type frameSum struct {
	typ   wire.Type
	flags uint8
	id    uint64
	n     uint32
}

func (f frameSum) String() string {
	s := f.typ.String()
	if f.id != 0 {
		s += fmt.Sprintf("#%d", f.id)
	}
	if f.flags&wire.FlagMore != 0 && f.typ != wire.TypeError {
		s += "+"
	}
	return s + fmt.Sprintf("(%d)", f.n)
}

type traceEntry struct {
	step  int
	at    int64
	side  int8
	what  string
	n     int8
	a     [3]int64
	fr    [6]frameSum
	nfr   int
	extra string
}

func (e *traceEntry) String(w *world) string {
	var b strings.Builder
	who := "-"
	if e.side >= 0 {
		who = w.sides[e.side].name
	}
	fmt.Fprintf(&b, "#%-6d %12s %-6s ", e.step, fmtTime(e.at-simT0), who)
	args := make([]any, e.n)
	for i := range args {
		args[i] = e.a[i]
	}
	fmt.Fprintf(&b, e.what, args...)
	if e.nfr > 0 {
		for i := 0; i < min(e.nfr, len(e.fr)); i++ {
			b.WriteString(" " + e.fr[i].String())
		}
		if e.nfr > len(e.fr) {
			fmt.Fprintf(&b, " …(%d frames)", e.nfr)
		}
	}
	if e.extra != "" {
		b.WriteString(" " + e.extra)
	}
	return b.String()
}

const traceLen = 60

type tracer struct {
	ring  [traceLen]traceEntry
	n     int
	print func(string) // every entry, as it happens (-sim.trace)
}

func (w *world) add(e traceEntry) {
	e.step, e.at = w.step, w.now
	w.tr.ring[w.tr.n%traceLen] = e
	w.tr.n++
	if w.tr.print != nil {
		w.tr.print(e.String(w))
	}
}

// log records an event; what is a format with one %d per argument.
func (w *world) log(side int8, what string, a ...int64) {
	e := traceEntry{side: side, what: what, n: int8(len(a))}
	copy(e.a[:], a)
	w.add(e)
}

// logx records an event with a formatted detail (for rare events).
func (w *world) logx(side int8, what string, format string, args ...any) {
	w.add(traceEntry{side: side, what: what, extra: fmt.Sprintf(format, args...)})
}

func (w *world) logFrames(side int8, n, max int, fr []frameSum, nfr int) {
	e := traceEntry{side: side, what: "Transmit %d bytes (max %d):", n: 2, a: [3]int64{int64(n), int64(max)}, nfr: nfr}
	copy(e.fr[:], fr)
	w.add(e)
}

func (w *world) traceTail() string {
	var b strings.Builder
	start := max(0, w.tr.n-traceLen)
	for i := start; i < w.tr.n; i++ {
		e := &w.tr.ring[i%traceLen]
		b.WriteString(e.String(w))
		b.WriteByte('\n')
	}
	return b.String()
}

func fmtTime(t int64) string { return fmt.Sprintf("%d.%06ds", t/sec, t%sec/us) }

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// rawPeer is a byte-level client that sends HELLO, then PINGs (and a few
// requests), and never reads.
type rawPeer struct {
	pending []byte
	nextID  uint64
	stopped bool
	pings   int
}

func (s *side) rawWrite() {
	w, r := s.w, s.raw
	s.wsched = false
	if r.stopped || s.closed {
		return
	}
	if s.out.gone {
		r.stopped = true
		w.log(s.idx, "raw peer: write failed, stops")
		return
	}
	if len(r.pending) == 0 {
		if r.nextID == 0 {
			r.pending = wire.AppendHello(r.pending, wire.Hello{Version: wire.Version, MaxFrameSize: wire.DefaultMaxFrameSize, MaxMessageSize: wire.DefaultMaxMessageSize})
			r.nextID = 1
		}
		for range 1 + w.rng.IntN(64) {
			r.pings++
			r.pending = wire.AppendPing(r.pending, uint64(r.pings))
		}
		if w.rng.IntN(8) == 0 {
			r.pending = wire.AppendRequest(r.pending, r.nextID, false, 0, "flood", nil, []byte("x"))
			r.nextID++
		}
	}
	free := s.out.free()
	if free == 0 {
		s.wblock = true
		s.out.blocked = s
		return
	}
	n := min(free, len(r.pending), 1+w.rng.IntN(4096))
	s.out.write(r.pending[:n])
	r.pending = r.pending[n:]
	w.log(s.idx, "raw peer wrote %d", int64(n))
	s.schedWrite()
}
