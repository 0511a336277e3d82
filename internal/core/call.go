package core

import (
	"fmt"
	"maps"
	"slices"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Call is one client call. Its owner fills in the exported fields and
// passes it to Conn.Call; the Conn then holds it — and reads Body and
// Metadata — until it ends the call through Sink.CallDone, exactly once.
// After that the owner may reuse the Call.
type Call struct {
	Method   string
	Metadata wire.Metadata
	Body     []byte
	Deadline int64 // 0: none
	Owner    any   // for the owner's use: the Conn never looks at it

	m        msg // its request, once admitted
	st       callState
	heapIdx  int
	wnext    *Call // the waiting list
	wprev    *Call
	resp     []byte        // the answer's body, while it arrives in chunks
	respMD   wire.Metadata // the answer's metadata, meanwhile
	respMore bool          // the answer's head arrived with MORE
}

type callState uint8

const (
	callIdle    callState = iota // not in a Conn: new, or ended
	callWaiting                  // waiting for a slot or for room to be admitted
	callQueued                   // admitted; frames still to send
	callSent                     // every frame sent; the answer is awaited
)

// ID is the request id the call was given when admitted, or 0.
func (cl *Call) ID() uint64 { return cl.m.id }

// maxKeptResp is the largest answer buffer a Call keeps for its next use.
const maxKeptResp = 64 << 10

// Call starts a client call: it waits, inside the Conn, for the peer's
// HELLO, for a slot below the in-flight limit and for room in the write
// queue, then is sent, and ends with its answer, its error or its deadline.
// A non-nil error means the Conn did not take the call (Sink.CallDone is
// not called): the connection failed or is going away (errors that
// session.RetrySafe accepts), the deadline has passed, or the call is too
// large for the peer.
func (c *Conn) Call(now int64, cl *Call) error {
	defer c.rest()
	if c.p.role != Client {
		panic("core: Call on a server connection")
	}
	if cl.st != callIdle {
		panic("core: Call given a call that is in progress")
	}
	switch {
	case c.failed:
		return session.NotProcessed(c.Err())
	case c.goingAway || c.cl.draining || c.finWanted:
		return session.NotProcessed(session.ErrGoAway)
	case cl.Deadline != 0 && now >= cl.Deadline:
		return &session.DeadlineError{}
	}
	if err := c.checkCall(cl); err != nil {
		return err
	}
	cl.st = callWaiting
	cl.heapIdx = -1
	c.cl.waiting.pushBack(cl)
	if cl.Deadline != 0 {
		c.cl.deadlines.push(cl)
	}
	c.admit(now)
	return nil
}

// checkCall checks what the encoder would refuse, and, once the peer's
// HELLO is known, its limits.
func (c *Conn) checkCall(cl *Call) error {
	if len(cl.Method) == 0 || len(cl.Method) > wire.MaxMethodLen {
		return fmt.Errorf("%w: method name of %d bytes", wire.ErrInvalidMethod, len(cl.Method))
	}
	if len(cl.Metadata) > 0 {
		if err := cl.Metadata.Validate(); err != nil {
			return err
		}
	}
	if !c.helloRecv {
		return nil
	}
	if n := len(cl.Body); n > int(c.peer.MaxMessageSize) {
		return fmt.Errorf("%w: body of %d bytes, the server accepts at most %d (MAX_MESSAGE_SIZE)", session.ErrTooLarge, n, c.peer.MaxMessageSize)
	}
	if ovh := wire.RequestOverhead(cl.Method, cl.Metadata); ovh > int(c.peer.MaxFrameSize) {
		return fmt.Errorf("%w: method and metadata take %d bytes, the server's frames hold %d (MAX_FRAME_SIZE)", session.ErrTooLarge, ovh, c.peer.MaxFrameSize)
	}
	return nil
}

// admit gives waiting calls, oldest first, an id and a place in the write
// queue while the peer's in-flight limit, this side's MaxInFlight and
// WriteQueueSize allow.
func (c *Conn) admit(now int64) {
	if c.p.role != Client || !c.helloRecv || c.failed || c.goingAway || c.cl.draining || c.finWanted {
		return
	}
	limit := min(c.p.cfg.MaxInFlight, int(c.peer.MaxInFlight))
	for cl := c.cl.waiting.head; cl != nil; cl = c.cl.waiting.head {
		if len(c.cl.calls) >= limit || c.queued() >= c.p.cfg.WriteQueueSize {
			return
		}
		if err := c.checkCall(cl); err != nil {
			c.endCall(cl, nil, nil, err)
			continue
		}
		c.cl.waiting.remove(cl)
		id := c.cl.nextID
		c.cl.nextID++
		cl.m = msg{
			id: id, typ: wire.TypeRequest, call: cl,
			ovh:  wire.RequestOverhead(cl.Method, cl.Metadata),
			body: cl.Body, md: cl.Metadata, method: cl.Method, deadline: cl.Deadline,
		}
		cl.st = callQueued
		c.cl.calls[id] = cl
		c.push(now, &cl.m)
	}
}

// Abandon ends a call its owner gives up on (its context ended, or its
// deadline passed) with err: a call not sent yet is simply dropped; a
// call whose REQUEST frame was sent and whose answer is not complete is
// cancelled with CANCEL (protocol.md §9). A call that has ended already is
// left alone.
func (c *Conn) Abandon(now int64, cl *Call, err error) {
	defer c.rest()
	if cl.st == callIdle {
		return
	}
	id, sent := cl.m.id, cl.m.headSent
	c.endCall(cl, nil, nil, err)
	if sent && !c.failed {
		c.addControl(now, func(b []byte) []byte { return wire.AppendCancel(b, id) })
	}
	c.admit(now)
	c.settle(now)
}

// endCall takes cl out of every structure and ends it through the Sink.
func (c *Conn) endCall(cl *Call, body []byte, md wire.Metadata, err error) {
	switch cl.st {
	case callIdle:
		return
	case callWaiting:
		c.cl.waiting.remove(cl)
	default:
		c.unring(&cl.m)
		delete(c.cl.calls, cl.m.id)
	}
	if cl.heapIdx >= 0 {
		c.cl.deadlines.remove(cl)
	}
	cl.st = callIdle
	cl.m = msg{}
	cl.respMD, cl.respMore = nil, false
	if cap(cl.resp) > maxKeptResp {
		cl.resp = nil
	} else {
		cl.resp = cl.resp[:0]
	}
	c.sink.CallDone(cl, body, md, err)
}

// finishCall ends an admitted call with its answer and lets the next
// waiting call in.
func (c *Conn) finishCall(now int64, cl *Call, body []byte, md wire.Metadata, err error) {
	c.endCall(cl, body, md, err)
	c.admit(now)
}

// answered returns the call waiting for the answer with id, nil for an id
// it sent but no longer waits for (abandoned: the frame is dropped), and an
// error for an id it never sent.
func (c *Conn) answered(t wire.Type, id uint64) (*Call, error) {
	cl := c.cl.calls[id]
	if id >= c.cl.nextID || (cl != nil && !cl.m.headSent && cl.st == callQueued) {
		return nil, protoErr("%v for request %d, which was never sent", t, id)
	}
	return cl, nil
}

// clientResponse handles a RESPONSE: a whole answer, or the head of one
// that continues in DATA frames.
func (c *Conn) clientResponse(now int64, f wire.Frame) error {
	md, body, err := wire.ParseResponse(f.Flags, f.Payload)
	if err != nil {
		return err
	}
	cl, err := c.answered(f.Type, f.ID)
	if cl == nil {
		return err
	}
	if cl.respMore {
		return protoErr("second RESPONSE for request %d", f.ID)
	}
	if len(body) > int(c.p.cfg.MaxMessageSize) {
		return protoErr("answer to request %d exceeds MAX_MESSAGE_SIZE %d", f.ID, c.p.cfg.MaxMessageSize)
	}
	if f.More() {
		cl.respMore = true
		cl.resp = append(cl.resp[:0], body...)
		cl.respMD = md.Metadata()
		return nil
	}
	c.finishCall(now, cl, body, md.Metadata(), nil)
	return nil
}

// clientData handles a DATA frame continuing an answer.
func (c *Conn) clientData(now int64, f wire.Frame) error {
	cl, err := c.answered(f.Type, f.ID)
	if cl == nil || !cl.respMore {
		return err // an abandoned call's answer, or nothing in progress: discarded
	}
	if len(cl.resp)+len(f.Payload) > int(c.p.cfg.MaxMessageSize) {
		return protoErr("answer to request %d exceeds MAX_MESSAGE_SIZE %d", f.ID, c.p.cfg.MaxMessageSize)
	}
	cl.resp = append(cl.resp, f.Payload...)
	if !f.More() {
		c.finishCall(now, cl, cl.resp, cl.respMD, nil)
	}
	return nil
}

// clientError handles an ERROR answering a request.
func (c *Conn) clientError(now int64, f wire.Frame) error {
	code, md, msg, err := wire.ParseError(f.ID, f.Flags, f.Payload)
	if err != nil {
		return err
	}
	cl, err := c.answered(f.Type, f.ID)
	if cl == nil {
		return err
	}
	if cl.respMore {
		return protoErr("ERROR for request %d after its RESPONSE began", f.ID)
	}
	c.finishCall(now, cl, nil, nil, &session.Error{Code: code, Message: string(msg), Metadata: md.Metadata()})
	return nil
}

// clientGoAway handles GOAWAY: no new calls; calls above the smallest last
// id received, and calls not admitted, end as not processed.
func (c *Conn) clientGoAway(now int64, f wire.Frame) error {
	lastID, reason, msg, err := wire.ParseGoAway(f.Payload)
	if err != nil {
		return err
	}
	if !c.goingAway || lastID < c.cl.peerLastID {
		c.cl.peerLastID = lastID
	}
	c.goingAway = true
	gerr := session.NotProcessed(fmt.Errorf("%w (%s: %s)", session.ErrGoAway, reason, msg))
	for _, id := range c.callIDs() {
		if id > c.cl.peerLastID {
			c.endCall(c.cl.calls[id], nil, nil, gerr)
		}
	}
	for c.cl.waiting.head != nil {
		c.endCall(c.cl.waiting.head, nil, nil, gerr)
	}
	c.sink.GoAway(c.cl.peerLastID, reason, msg)
	return nil
}

// Drain ends a client connection gracefully from this side (its server
// left the set the client calls): it takes no new call; calls not sent yet
// end as not processed (their callers send them elsewhere); calls sent
// finish; and once none is left the connection closes (FIN), as after the
// server's GOAWAY.
func (c *Conn) Drain(now int64) {
	defer c.rest()
	if c.p.role != Client || c.failed || c.done || c.cl.draining {
		return
	}
	c.cl.draining = true
	err := session.NotProcessed(fmt.Errorf("%w: the server left the client's set", session.ErrGoAway))
	for _, id := range c.callIDs() {
		if cl := c.cl.calls[id]; !cl.m.headSent {
			c.endCall(cl, nil, nil, err)
		}
	}
	for c.cl.waiting.head != nil {
		c.endCall(c.cl.waiting.head, nil, nil, err)
	}
	c.settle(now)
}

// callIDs returns the ids of the admitted calls in increasing order, so
// that calls end in a reproducible order.
func (c *Conn) callIDs() []uint64 { return slices.Sorted(maps.Keys(c.cl.calls)) }

// endAllCalls ends every call with err (calls whose REQUEST was never sent
// with err marked not processed).
func (c *Conn) endAllCalls(err error) {
	np := session.NotProcessed(err)
	for _, id := range c.callIDs() {
		cl := c.cl.calls[id]
		if cl.m.headSent {
			c.endCall(cl, nil, nil, err)
		} else {
			c.endCall(cl, nil, nil, np)
		}
	}
	for c.cl.waiting.head != nil {
		c.endCall(c.cl.waiting.head, nil, nil, np)
	}
}

// callList is a list of waiting calls, oldest first.
type callList struct{ head, tail *Call }

func (l *callList) pushBack(cl *Call) {
	cl.wprev, cl.wnext = l.tail, nil
	if l.tail == nil {
		l.head = cl
	} else {
		l.tail.wnext = cl
	}
	l.tail = cl
}

func (l *callList) remove(cl *Call) {
	if cl.wprev == nil {
		l.head = cl.wnext
	} else {
		cl.wprev.wnext = cl.wnext
	}
	if cl.wnext == nil {
		l.tail = cl.wprev
	} else {
		cl.wnext.wprev = cl.wprev
	}
	cl.wnext, cl.wprev = nil, nil
}

// callHeap orders calls with a deadline, earliest first.
type callHeap []*Call

func (h *callHeap) top() *Call {
	if len(*h) == 0 {
		return nil
	}
	return (*h)[0]
}

func (h *callHeap) push(cl *Call) {
	cl.heapIdx = len(*h)
	*h = append(*h, cl)
	h.up(cl.heapIdx)
}

func (h *callHeap) remove(cl *Call) {
	i, last := cl.heapIdx, len(*h)-1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	cl.heapIdx = -1
	if i != last {
		h.down(i)
		h.up(i)
	}
}

func (h callHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}

func (h callHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].Deadline <= h[i].Deadline {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h callHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].Deadline < h[l].Deadline {
			m = r
		}
		if h[i].Deadline <= h[m].Deadline {
			return
		}
		h.swap(i, m)
		i = m
	}
}
