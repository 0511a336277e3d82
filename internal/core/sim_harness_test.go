package core

// The deterministic simulation harness: a fake clock, an event queue, two
// byte pipes and the transports that move bytes and time between a Conn on
// each side (or a raw byte-level peer). sim_test.go builds scenarios on it
// and checks the invariants. Nothing here uses goroutines, real time or
// sockets: a seed fixes everything.

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

const (
	us  = int64(time.Microsecond)
	ms  = int64(time.Millisecond)
	sec = int64(time.Second)
)

var (
	errSimReset      = errors.New("sim: connection reset by peer")
	errSimBrokenPipe = errors.New("sim: broken pipe")
)

// simEv is a scheduled event. Events of a side (side ≥ 0) wait while that
// side is frozen.
type simEv struct {
	at   int64
	seq  uint64
	side int8
	fn   func()
}

type evHeap []*simEv

func (h evHeap) Len() int { return len(h) }
func (h evHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h evHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *evHeap) Push(x any)   { *h = append(*h, x.(*simEv)) }
func (h *evHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return x
}

// pipe is one direction of a simulated TCP connection: the bytes written
// and not yet read, up to a capacity (the socket buffers and the network).
type pipe struct {
	buf     []byte
	off     int
	cap     int
	eof     bool  // the writer half-closed or closed: EOF once drained
	reset   bool  // the writer's socket was reset: the reader fails
	gone    bool  // the reader closed its socket: writes fail
	blocked *side // a writer waiting for room
}

func (p *pipe) avail() int { return len(p.buf) - p.off }
func (p *pipe) free() int  { return max(p.cap-p.avail(), 0) }

func (p *pipe) write(b []byte) {
	if p.off > 0 && p.off >= len(p.buf)/2 {
		p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
		p.off = 0
	}
	p.buf = append(p.buf, b...)
}

func (p *pipe) take(n int) []byte {
	b := p.buf[p.off : p.off+n]
	p.off += n
	return b
}

// wake lets a writer that waited for room (or for the reader to go) retry.
func (p *pipe) wake() {
	if s := p.blocked; s != nil {
		p.blocked = nil
		s.wblock = false
		s.schedWrite()
	}
}

// side is one end of the connection: a Conn (or a raw peer) and its
// transport.
type side struct {
	w    *world
	idx  int8
	name string
	conn *Conn
	cfg  session.Config // effective
	raw  *rawPeer
	in   *pipe
	out  *pipe
	peer *side

	wbuf   []byte // handed out by Transmit
	woff   int    // how much of it is in the pipe
	wmax   int
	wsched bool // a write step is scheduled
	wblock bool // waiting for room in out

	rbuf   []byte // bytes received and not consumed
	rsched bool

	stopUntil   int64 // reading stopped until then
	frozenUntil int64 // frozen (nothing at all) until then
	frozeAt     int64
	closed      bool // the socket was closed
	finSent     bool
	tickAt      int64  // the earliest tick scheduled by Next, 0: none
	pings       uint64 // the core's PINGs seen by the checks
	pingDue     int64  // when the next PING falls due, as of the last check (before the grid)

	owed []uint64 // PINGs received whose PONG is not out yet

	closedN   int
	closedErr error
	closedAt  int64
	sawEOF    bool
}

func (s *side) frozen() bool { return s.w.now < s.frozenUntil }

// world is one simulation run.
type world struct {
	seed    uint64
	rng     *rand.Rand
	p       *simParams
	now     int64
	seq     uint64
	step    int
	q       evHeap
	sides   [2]*side
	cli     *side
	srv     *side
	budget  simBudget
	tr      tracer
	stats   map[string]int // what happened, for the statistics of a run
	err     string
	errStep int
	scen    scenario
}

// at schedules fn at time t for side (-1: none).
func (w *world) at(t int64, side int8, fn func()) {
	w.seq++
	heap.Push(&w.q, &simEv{at: max(t, w.now), seq: w.seq, side: side, fn: fn})
}

// count counts one occurrence of what, for the statistics.
func (w *world) count(what string) {
	if w.stats != nil {
		w.stats[what]++
	}
}

// fail records the first invariant violation.
func (w *world) fail(format string, args ...any) {
	if w.err != "" {
		return
	}
	w.err = fmt.Sprintf(format, args...)
	w.errStep = w.step
	w.add(traceEntry{side: -1, what: "VIOLATION:", extra: w.err})
}

// run runs the events until none is left, a violation, or the limits.
func (w *world) run(limit int64, maxSteps int) {
	for w.q.Len() > 0 && w.err == "" {
		ev := heap.Pop(&w.q).(*simEv)
		if ev.at > limit {
			w.now = ev.at
			w.fail("the simulation did not end by t=%s", fmtTime(limit-simT0))
			return
		}
		w.now = ev.at
		if ev.side >= 0 && w.sides[ev.side].frozen() {
			w.seq++
			ev.at, ev.seq = w.sides[ev.side].frozenUntil, w.seq
			heap.Push(&w.q, ev)
			continue
		}
		w.step++
		if w.step > maxSteps {
			w.fail("more than %d steps", maxSteps)
			return
		}
		ev.fn()
		w.pump()
		w.check()
	}
}

// pump lets each side's transport react to its Conn's state until nothing
// changes: close the socket when Done, send FIN, start a write, schedule a
// read and the next tick.
func (w *world) pump() {
	for i := 0; ; i++ {
		changed := false
		for _, s := range w.sides {
			if s.pumpOnce() {
				changed = true
			}
		}
		if !changed || w.err != "" {
			return
		}
		if i > 100 {
			w.fail("the transports do not settle")
			return
		}
	}
}

func (s *side) pumpOnce() bool {
	w := s.w
	if s.frozen() || s.closed {
		return false
	}
	if s.raw != nil {
		if !s.wsched && !s.wblock && !s.raw.stopped {
			s.schedWrite()
		}
		return false
	}
	c := s.conn
	if c.Done() {
		s.closeSocket()
		return true
	}
	if c.WantFin() && !s.finSent {
		if s.woff < len(s.wbuf) {
			w.fail("%s: WantFin with %d bytes still being written", s.name, len(s.wbuf)-s.woff)
		}
		s.finSent = true
		s.out.eof = true
		half := w.p.calm || w.rng.IntN(10) != 0
		w.log(s.idx, "FIN (half-close %d)", b2i(half))
		c.FinSent(w.now, half)
		return true
	}
	changed := false
	if s.woff == len(s.wbuf) && c.HasOutput() {
		s.startWrite()
		changed = true
	}
	if !s.rsched && s.wantRead() {
		s.rsched = true
		w.at(w.now+s.readDelay(), s.idx, s.readStep)
	}
	s.schedTick()
	return changed
}

// closeSocket closes the socket of a side whose Conn is done: the peer reads
// EOF once the pipe drains (or fails at once after a reset), and what it
// writes from now on fails.
func (s *side) closeSocket() {
	w := s.w
	s.closed = true
	if !s.out.eof {
		s.out.eof = true
		if w.p.resetOnClose {
			s.out.reset = true
			s.out.off = len(s.out.buf)
		}
	}
	s.in.gone = true
	s.in.wake()
	s.wbuf, s.woff = s.wbuf[:0], 0
	w.log(s.idx, "socket closed (reset %d)", b2i(s.out.reset))
}

func (s *side) wantRead() bool {
	if s.closed || s.raw != nil || !s.conn.WantRead() || s.w.now < s.stopUntil {
		return false
	}
	return s.in.avail() > 0 || s.in.eof || s.in.reset
}

func (s *side) readDelay() int64 {
	p := s.w.p
	if p.readDelayMax == 0 || s.w.rng.IntN(4) == 0 {
		return 0
	}
	return s.w.rng.Int64N(p.readDelayMax)
}

// readStep reads a random piece of what is in the pipe (split anywhere)
// and passes it, after the bytes not consumed before, to Receive.
func (s *side) readStep() {
	w := s.w
	s.rsched = false
	if !s.wantRead() {
		return
	}
	c, p := s.conn, s.in
	switch {
	case p.reset:
		w.log(s.idx, "ReadFailed (reset)")
		c.ReadFailed(w.now, errSimReset)
		return
	case p.avail() == 0:
		w.log(s.idx, "ReceiveEOF (%d bytes left over)", int64(len(s.rbuf)))
		s.sawEOF = true
		c.ReceiveEOF(w.now)
		return
	}
	avail := p.avail()
	k := avail
	switch r := w.rng.IntN(100); {
	case r < w.p.tinyReadPct:
		k = 1 + w.rng.IntN(min(avail, 40))
	case r < 60:
		k = 1 + w.rng.IntN(min(avail, 1+w.rng.IntN(64<<10)))
	}
	s.rbuf = append(s.rbuf, p.take(k)...)
	p.wake()
	n := c.Receive(w.now, s.rbuf)
	w.log(s.idx, "Receive %d new, consumed %d of %d", int64(k), int64(n), int64(len(s.rbuf)))
	if n < 0 || n > len(s.rbuf) {
		w.fail("%s: Receive consumed %d of %d bytes", s.name, n, len(s.rbuf))
		return
	}
	if !c.Failed() && !c.refused { // a refused connection discards what it reads
		s.tapIn(s.rbuf[:n])
	}
	s.rbuf = s.rbuf[:copy(s.rbuf, s.rbuf[n:])]
}

// startWrite takes the next bytes from Transmit.
func (s *side) startWrite() {
	w := s.w
	max := w.p.writeMax[0]
	if w.rng.IntN(4) == 0 {
		max = w.p.writeMax[1]
	}
	max = wire.MinMaxFrameSize + w.rng.IntN(max-wire.MinMaxFrameSize+1)
	s.wbuf = s.conn.Transmit(w.now, s.wbuf[:0], max)
	s.woff, s.wmax = 0, max
	if len(s.wbuf) == 0 {
		w.fail("%s: HasOutput is true but Transmit(max %d) handed out nothing", s.name, max)
		return
	}
	if s.finSent {
		w.fail("%s: Transmit handed out %d bytes after FinSent", s.name, len(s.wbuf))
	}
	s.tapOut(s.wbuf, max)
	s.schedWrite()
}

func (s *side) schedWrite() {
	if s.wsched || s.closed {
		return
	}
	s.wsched = true
	w := s.w
	d := int64(0)
	if w.p.writeLatMax > 0 && w.rng.IntN(3) != 0 {
		d = w.rng.Int64N(w.p.writeLatMax)
	}
	if w.p.stallPct > 0 && w.rng.IntN(100) < w.p.stallPct {
		d += w.rng.Int64N(w.p.stallMax)
	}
	if s.raw != nil {
		w.at(w.now+d, s.idx, s.rawWrite)
	} else {
		w.at(w.now+d, s.idx, s.writeStep)
	}
}

// writeStep moves some of the bytes handed out into the pipe, as far as it
// has room, and reports them with Written.
func (s *side) writeStep() {
	w := s.w
	s.wsched = false
	if s.closed || s.woff == len(s.wbuf) {
		return
	}
	if s.out.gone {
		w.log(s.idx, "WriteFailed (%d bytes unwritten)", int64(len(s.wbuf)-s.woff))
		s.wbuf, s.woff = s.wbuf[:0], 0
		s.conn.WriteFailed(w.now, errSimBrokenPipe)
		if !s.conn.Done() {
			w.fail("%s: not done after WriteFailed", s.name)
		}
		return
	}
	free := s.out.free()
	if free == 0 {
		s.wblock = true
		s.out.blocked = s
		w.count(s.name + ": write blocked")
		w.log(s.idx, "write blocked (pipe full)")
		return
	}
	n := min(len(s.wbuf)-s.woff, free)
	if w.rng.IntN(3) == 0 {
		n = 1 + w.rng.IntN(n)
	}
	s.out.write(s.wbuf[s.woff : s.woff+n])
	s.woff += n
	w.log(s.idx, "Written %d (%d left)", int64(n), int64(len(s.wbuf)-s.woff))
	s.conn.Written(w.now, n)
	if s.woff < len(s.wbuf) {
		s.schedWrite()
	}
}

// schedTick schedules a Tick at Next(), and sometimes a spurious one
// before it.
func (s *side) schedTick() {
	w := s.w
	if s.closed || s.conn.Done() {
		return
	}
	n := s.conn.Next()
	if n == 0 {
		return
	}
	n = max(n, w.now)
	if s.tickAt != 0 && s.tickAt <= n {
		return
	}
	s.tickAt = n
	w.at(n, s.idx, func() { s.tick(n) })
	if w.p.spuriousPct > 0 && n > w.now+1 && w.rng.IntN(100) < w.p.spuriousPct {
		t := w.now + 1 + w.rng.Int64N(n-w.now-1)
		w.at(t, s.idx, func() { s.tick(t) })
	}
}

func (s *side) tick(at int64) {
	w := s.w
	if s.tickAt == at {
		s.tickAt = 0
	}
	if s.closed || s.conn.Done() {
		return
	}
	w.log(s.idx, "Tick")
	s.conn.Tick(w.now)
	if n := s.conn.Next(); n != 0 && n <= w.now {
		w.fail("%s: Next() = %s after Tick(%s): not in the future", s.name, fmtTime(n-simT0), fmtTime(w.now-simT0))
	}
}

// freeze stops a side for d: no reads, writes, ticks or commands.
func (s *side) freeze(d int64) {
	s.frozeAt, s.frozenUntil = s.w.now, s.w.now+d
	s.w.log(s.idx, "FROZEN for %dms", d/ms)
	s.w.at(s.frozenUntil, s.idx, func() { s.w.log(s.idx, "thawed") })
}

// simBudget is the server's shared memory Budget: a counter with a limit.
type simBudget struct {
	n, limit int
	w        *world
}

func (b *simBudget) Reserve(n int, force bool) bool {
	if n < 0 {
		b.w.fail("Budget.Reserve(%d)", n)
	}
	if !force && b.n+n > b.limit {
		return false
	}
	b.n += n
	return true
}

func (b *simBudget) Release(n int) {
	b.n -= n
	if n < 0 || b.n < 0 {
		b.w.fail("Budget.Release(%d) leaves %d", n, b.n)
	}
}
