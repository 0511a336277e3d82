package core

import (
	"math"

	"github.com/tcppro/tcppro/internal/bufpool"
	"github.com/tcppro/tcppro/wire"
)

// outQueue is what a Conn has to send, in three parts:
//
//   - control frames (HELLO, PING, PONG, CANCEL, GOAWAY, refusals and
//     connection-level ERRORs), whole frames, sent first;
//   - fifo: whole single-frame answers (a server's), in order;
//   - ring: messages that go out frame by frame (a client's requests, a
//     server's answers larger than one frame), taking turns one chunk each.
//
// queued counts the data bytes not yet transmitted (fifo, and each ring
// message's remaining head and body); inTransit the bytes handed to the
// transport and not yet reported written.
type outQueue struct {
	ctrl  frames
	peerN int // of the frames in ctrl, those owed to the peer (see peerControl)

	fifo frames

	ring *msg // the message whose turn is next; nil when none

	queued    int
	inTransit int
	waitStart int64 // since when output is pending without progress
}

// frames is a queue of whole encoded frames. Its buffer stays with the
// busy state it belongs to, emptied once every frame has been handed out,
// and goes back to the pool with it when the connection is idle. A queue
// about to outgrow a small buffer borrows a larger one from bufpool and
// gives it back once emptied: a burst of answers does not grow a buffer
// from nothing each time, and a connection keeps no large buffer between
// bursts.
type frames struct {
	buf   []byte
	off   int     // bytes of buf handed out
	lent  *[]byte // buf's holder while buf is borrowed from bufpool
	small []byte  // the queue's own buffer, kept aside while it borrows
}

// keepCap is the largest buffer a queue keeps once emptied.
const keepCap = 512

// lendCap is the size of the buffer a queue borrows when it outgrows a
// small one: the answers to a burst of small requests.
const lendCap = 4 << 10

// add appends the frame that frame encodes and returns its length.
func (q *frames) add(frame func([]byte) []byte) int {
	n := len(q.buf)
	if q.lent == nil && n > 0 && cap(q.buf) <= keepCap && cap(q.buf)-n < keepCap/4 {
		p := bufpool.Get(lendCap)
		*p = append((*p)[:0], q.buf...)
		q.small, q.buf, q.lent = q.buf[:0], *p, p
	}
	q.buf = frame(q.buf)
	return len(q.buf) - n
}

// len is the number of bytes not handed out yet.
func (q *frames) len() int { return len(q.buf) - q.off }

// rest returns the bytes not handed out yet.
func (q *frames) rest() []byte { return q.buf[q.off:] }

// took reports n more bytes handed out (copied by the caller): once all
// are, the queue is emptied.
func (q *frames) took(n int) {
	q.off += n
	if q.off == len(q.buf) {
		q.reset()
	}
}

// reset drops what is left.
func (q *frames) reset() {
	switch {
	case q.lent != nil:
		// The buffer as it is now: bufpool keeps it if appends have not
		// moved it to a capacity outside its size classes.
		*q.lent = q.buf
		bufpool.Put(q.lent)
		q.buf, q.lent, q.small = q.small, nil, nil
	case cap(q.buf) > keepCap:
		q.buf = nil
	default:
		q.buf = q.buf[:0]
	}
	q.off = 0
}

// minChunk is the smallest body chunk Transmit cuts to fill the room left
// in a buffer that already holds frames.
const minChunk = 4 << 10

// maxChunk caps the frames of a large message, whatever the peer accepts,
// so that a control frame never waits behind more than this (protocol.md
// §1): the default MAX_FRAME_SIZE.
const maxChunk = wire.DefaultMaxFrameSize

// pending is the number of bytes waiting to leave: queued, control and in
// transit.
func (o *outQueue) pending() int {
	return o.queued + o.ctrl.len() + o.inTransit
}

// willQueue is called before anything is added to the queue: output that
// was idle starts waiting for write progress now.
func (o *outQueue) willQueue(now int64) {
	if o.pending() == 0 {
		o.waitStart = now
	}
}

// addControl queues a control frame, encoded by frame. After this side's
// FIN nothing more can be written: the frame is dropped.
func (c *Conn) addControl(now int64, frame func([]byte) []byte) {
	if c.finSent {
		return
	}
	o := &c.work().out
	o.willQueue(now)
	o.ctrl.add(frame)
	c.updatePause(now)
}

// queueAnswer queues an answer that fits one frame (encoded by frame, which
// appends it to the fifo); on a server, queued bytes are held against the
// memory bounds until transmitted.
func (c *Conn) queueAnswer(now int64, frame func([]byte) []byte) {
	o := &c.work().out
	o.willQueue(now)
	c.addQueued(o.fifo.add(frame))
	c.updatePause(now)
}

// peerControl queues a control frame owed to the peer because of what it
// sent (a PONG, a refusal). Past MaxQueuedControl unsent ones, the peer is
// flooding without reading: the connection fails with CONTROL_FLOOD. The
// control frames this side sends of its own accord (HELLO, GOAWAY, PING,
// CANCEL) do not count.
func (c *Conn) peerControl(now int64, frame func([]byte) []byte) {
	if c.finSent {
		return // dropped by addControl: not counted either
	}
	if c.peerN() >= c.floodBound() {
		c.failFlood(now)
		return
	}
	c.addControl(now, frame)
	c.b.out.peerN++ // made by addControl
}

// peerN is the number of control frames owed to the peer and not yet
// handed out.
func (c *Conn) peerN() int {
	if c.b == nil {
		return 0
	}
	return c.b.out.peerN
}

// floodBound is how many control frames owed to the peer may wait unsent:
// MaxQueuedControl, plus on a server one refusal per request a conforming
// client may have in flight (it counts a refused request in flight until it
// reads the refusal, so it cannot cause more), so that a burst of refusals
// is never taken for a flood (protocol.md §11.3).
func (c *Conn) floodBound() int {
	if c.p.role == Server {
		return c.p.cfg.MaxQueuedControl + c.p.cfg.MaxInFlight
	}
	return c.p.cfg.MaxQueuedControl
}

// peerFrame reports whether the control frame b was queued by peerControl:
// a PONG, or a refusal (an ERROR with a request's id).
func peerFrame(b []byte) bool {
	h, _ := wire.ParseHeader(b)
	return h.Type == wire.TypePong || (h.Type == wire.TypeError && h.ID != 0)
}

// msg is a message that goes out frame by frame.
type msg struct {
	next, prev *msg
	id         uint64
	typ        wire.Type // TypeRequest or TypeResponse
	headSent   bool
	inRing     bool
	ovh        int // the head frame's payload bytes before the body
	body       []byte
	off        int // body bytes transmitted
	md         wire.Metadata
	method     string
	deadline   int64 // a request's deadline, for its timeout field
	call       *Call // a request's call
}

// remaining is the bytes of m that are still counted in queued.
func (m *msg) remaining() int {
	r := len(m.body) - m.off
	if !m.headSent {
		r += wire.HeaderLen + m.ovh
	}
	return r
}

// push adds m to the ring, after every message already in it: its head
// frame then goes out after theirs, so heads leave in the order of push
// (which keeps request ids increasing on the wire).
func (c *Conn) push(now int64, m *msg) {
	o := &c.work().out
	o.willQueue(now)
	if o.ring == nil {
		m.next, m.prev = m, m
		o.ring = m
	} else {
		tail := o.ring.prev
		m.prev, m.next = tail, o.ring
		tail.next = m
		o.ring.prev = m
	}
	m.inRing = true
	c.addQueued(m.remaining())
	c.updatePause(now)
}

// unring takes m out of the ring, uncounting what it had left to send.
func (c *Conn) unring(m *msg) {
	if !m.inRing {
		return
	}
	o := &c.b.out // m is in its ring
	c.addQueued(-m.remaining())
	if m.next == m {
		o.ring = nil
	} else {
		m.prev.next = m.next
		m.next.prev = m.prev
		if o.ring == m {
			o.ring = m.next
		}
	}
	m.next, m.prev, m.inRing = nil, nil, false
}

// addQueued changes the count of queued data bytes (of output queued or
// leaving the queue: the connection is busy); on a server, queued bytes
// are answers, held against the memory bounds until transmitted.
func (c *Conn) addQueued(n int) {
	if n == 0 {
		return
	}
	c.b.out.queued += n
	if c.p.role != Server {
		return
	}
	if c.p.opts.Budget != nil {
		if n > 0 {
			c.p.opts.Budget.Reserve(n, true)
		} else {
			c.p.opts.Budget.Release(-n)
		}
	}
}

// Transmit appends the next frames to send to dst and returns it: control
// frames first, then data frames: one chunk of the ring's next message and
// the answers waiting in order, until about max bytes were added
// (max must be at least wire.MinMaxFrameSize; a frame is never split, and
// the first frame is taken whatever its size). The transport must write
// the bytes in order and report them with Written before it calls Transmit
// again.
func (c *Conn) Transmit(now int64, dst []byte, max int) []byte {
	defer c.rest()
	if c.done {
		return dst
	}
	if b := c.b; b != nil {
		dst = c.transmit(now, &b.out, dst, max)
	}
	c.updatePause(now)
	c.admit(now) // what left the write queue makes room for waiting calls
	return dst
}

// transmit is Transmit's work on the output queue o.
func (c *Conn) transmit(now int64, o *outQueue, dst []byte, max int) []byte {
	start := len(dst)
	for o.ctrl.len() > 0 {
		f := o.ctrl.rest()
		n := wire.FrameLen(f)
		if len(dst) > start && len(dst)-start+n > max {
			break
		}
		if peerFrame(f) {
			o.peerN--
		}
		dst = append(dst, f[:n]...)
		o.ctrl.took(n)
		c.framesOut++
	}
	// Data only once every control frame is out. The ring and the fifo
	// take turns, across calls too: when a chunk filled the last call,
	// the fifo goes first in this one.
	if !c.failed && o.ctrl.len() == 0 {
		// At most one partial chunk of a large message per call: a control
		// frame queued while these bytes are written waits behind one
		// chunk at most (protocol.md §1), whatever the peer's
		// MAX_FRAME_SIZE. Messages that leave whole (small requests) are
		// taken as long as they fit, so that one write carries them all.
		chunked := false
		for len(dst)-start < max {
			progressed := false
			if m := o.ring; m != nil && !chunked && !(c.fifoTurn && o.fifo.len() > 0) {
				dst, progressed = c.nextChunk(now, dst, max-(len(dst)-start), len(dst) == start)
				c.fifoTurn = progressed
				chunked = progressed && m.inRing // a part of m left, m has more to send
			}
			for o.fifo.len() > 0 {
				f := o.fifo.rest()
				n := wire.FrameLen(f)
				if len(dst) > start && len(dst)-start+n > max {
					break
				}
				dst = append(dst, f[:n]...)
				o.fifo.took(n)
				c.framesOut++
				c.addQueued(-n)
				progressed = true
				c.fifoTurn = false
			}
			if !progressed {
				break
			}
		}
	}
	o.inTransit += len(dst) - start
	return dst
}

// nextChunk appends the next frame of the message whose turn it is: its
// head frame with the body's first chunk, or a DATA frame with the next
// one, sized to the peer's MAX_FRAME_SIZE and to room.
func (c *Conn) nextChunk(now int64, dst []byte, room int, first bool) ([]byte, bool) {
	o := &c.b.out // the ring holds m
	m := o.ring
	ovh := 0
	if !m.headSent {
		ovh = m.ovh
	}
	space := min(int(c.peer.MaxFrameSize), maxChunk, room-wire.HeaderLen) - ovh
	rem := len(m.body) - m.off
	n := min(rem, space)
	if n < 0 || (!first && n < rem && n < minChunk) {
		return dst, false
	}
	more := m.off+n < len(m.body)
	chunk := m.body[m.off : m.off+n]
	sent := n
	if !m.headSent {
		if m.typ == wire.TypeRequest {
			dst = wire.AppendRequest(dst, m.id, more, timeoutMillis(m.deadline, now), m.method, m.md, chunk)
		} else {
			dst = wire.AppendResponse(dst, m.id, more, m.md, chunk)
		}
		m.headSent = true
		sent += wire.HeaderLen + ovh
	} else {
		dst = wire.AppendData(dst, m.id, more, chunk)
	}
	m.off += n
	c.addQueued(-sent)
	c.framesOut++
	if more {
		o.ring = m.next
		return dst, true
	}
	c.unring(m) // nothing left: remaining() is 0
	if m.call != nil {
		m.call.st = callSent
	}
	return dst, true
}

// timeoutMillis is the timeout a REQUEST carries: the time left until
// deadline, rounded up to a millisecond, at least 1; 0 for no deadline.
func timeoutMillis(deadline, now int64) uint32 {
	if deadline == 0 {
		return 0
	}
	left := deadline - now
	if left <= 0 {
		return 1
	}
	ms := (left + 999_999) / 1_000_000
	return uint32(min(ms, math.MaxUint32))
}

// Written reports that the transport wrote n bytes of what Transmit handed
// out (all of them, or fewer before a failure it reports with
// WriteFailed).
func (c *Conn) Written(now int64, n int) {
	defer c.rest()
	if b := c.b; b != nil { // bytes in transit keep the connection busy
		b.out.inTransit -= n
		if n > 0 {
			b.out.waitStart = now
		}
	}
	c.bytesOut += uint64(n)
	c.updatePause(now)
	c.settle(now)
}

// WriteFailed reports that writing to the socket failed: the bytes not
// written are abandoned, the connection fails with err (if it had not
// failed already) and, as nothing more can be written, it is done.
func (c *Conn) WriteFailed(now int64, err error) {
	defer c.rest()
	if c.b != nil {
		c.b.out.inTransit = 0
	}
	c.fail(now, connClosed("write", err), nil)
	c.finish()
}

// ReadFailed reports that reading from the socket failed other than by the
// peer's FIN (a reset, TCP_USER_TIMEOUT): the connection fails with err.
func (c *Conn) ReadFailed(now int64, err error) {
	defer c.rest()
	c.fail(now, connClosed("read", err), nil)
}

// DataQueued reports whether message frames (requests, answers) wait to
// be handed out.
func (c *Conn) DataQueued() bool {
	if c.b == nil {
		return false
	}
	o := &c.b.out
	return !c.failed && !c.done && (o.ring != nil || o.fifo.len() > 0)
}

// HasOutput reports whether Transmit has frames to hand out.
func (c *Conn) HasOutput() bool {
	if c.done || c.b == nil {
		return false
	}
	o := &c.b.out
	if o.ctrl.len() > 0 {
		return true
	}
	return !c.failed && (o.ring != nil || o.fifo.len() > 0)
}

// WantFin reports whether the transport should half-close the socket (send
// FIN) now: the connection has ended gracefully and everything was written.
// The transport then calls FinSent.
func (c *Conn) WantFin() bool {
	return c.finWanted && !c.finSent && !c.failed && c.pending() == 0
}

// updatePause pauses a server's reading while it holds WriteQueueSize bytes
// or more for a peer that does not read them, and resumes it as they leave.
// The heartbeat's silence is counted from the resumption: nothing could be
// received while reading was paused.
func (c *Conn) updatePause(now int64) {
	if c.p.role != Server {
		return
	}
	p := c.pending() >= c.p.cfg.WriteQueueSize
	if c.paused && !p {
		c.lastRecv = max(c.lastRecv, now)
	}
	c.paused = p
}
