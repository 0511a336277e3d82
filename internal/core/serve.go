package core

import (
	"fmt"

	"github.com/tcppro/tcppro/wire"
)

// serverRequest handles a REQUEST frame.
func (c *Conn) serverRequest(now int64, f wire.Frame) error {
	timeout, method, md, body, err := wire.ParseRequest(f.Flags, f.Payload)
	if err != nil {
		return err
	}
	if f.ID <= c.highestID {
		return protoErr("request id %d not above %d", f.ID, c.highestID)
	}
	c.highestID = f.ID
	if c.goingAway {
		return nil // above our GOAWAY's last id: never processed; its DATA is discarded
	}
	if len(body) > int(c.p.cfg.MaxMessageSize) {
		return protoErr("request %d exceeds MAX_MESSAGE_SIZE %d", f.ID, c.p.cfg.MaxMessageSize)
	}
	if c.inflight() >= c.p.cfg.MaxInFlight {
		c.rare().refusedInFlight++
		c.refuse(now, f.ID, wire.CodeOverloaded, fmt.Sprintf("%d requests in flight on this connection, its limit (MAX_IN_FLIGHT)", c.inflight()))
		return nil
	}
	// Held: the body (method and metadata are small and bounded by the
	// frame), so that ConnMemory = MaxMessageSize admits a message of the
	// largest size.
	size := len(body)
	if why := c.reserve(size); why != "" {
		c.rare().refusedMemory++
		c.refuse(now, f.ID, wire.CodeOverloaded, why)
		return nil
	}
	if f.More() {
		r := c.newRequest(f.ID, size, reqReceiving)
		x := c.rare()
		if x.receiving == 0 || len(body) > 0 {
			x.lastBodyAt = now
		}
		x.receiving++
		r.asm = &assembly{
			at: now, timeout: timeout,
			method: append([]byte(nil), method...), md: md.Metadata(), body: append([]byte(nil), body...),
		}
		return nil
	}
	c.deliver(now, c.newRequest(f.ID, size, reqHandling), now, timeout, method, md.Metadata(), body)
	return nil
}

// serverData handles a DATA frame continuing a request.
func (c *Conn) serverData(now int64, f wire.Frame) error {
	if f.ID > c.highestID {
		return protoErr("DATA for request %d, above every request received", f.ID)
	}
	r := c.req(f.ID)
	if r == nil || r.st != reqReceiving {
		return nil // refused, cancelled or above our GOAWAY: discarded
	}
	a := r.asm
	if len(a.body)+len(f.Payload) > int(c.p.cfg.MaxMessageSize) {
		return protoErr("request %d exceeds MAX_MESSAGE_SIZE %d", f.ID, c.p.cfg.MaxMessageSize)
	}
	if why := c.reserve(len(f.Payload)); why != "" {
		c.rare().refusedMemory++
		c.dropRequest(r)
		c.refuse(now, f.ID, wire.CodeOverloaded, why)
		return nil
	}
	r.held += uint32(len(f.Payload)) // the body stays within MaxMessageSize (checked above)
	a.body = append(a.body, f.Payload...)
	if len(f.Payload) > 0 {
		c.x.lastBodyAt = now // made with the request's first frame
	}
	if !f.More() {
		c.deliver(now, r, a.at, a.timeout, a.method, a.md, a.body)
	}
	return nil
}

// deliver hands a complete request, whose REQUEST frame arrived at
// arrived, to the Sink, which accepts it or refuses it (no free worker:
// OVERLOADED).
func (c *Conn) deliver(now int64, r *request, arrived int64, timeout uint32, method []byte, md wire.Metadata, body []byte) {
	if r.st == reqReceiving {
		c.x.receiving--
	}
	r.st = reqHandling
	ok := c.sink.Request(Incoming{ID: r.id, Arrived: arrived, TimeoutMillis: timeout, Method: method, Metadata: md, Body: body, Size: int(r.held)})
	r.asm = nil
	if !ok {
		id := r.id // dropRequest clears r
		c.dropRequest(r)
		c.refuse(now, id, wire.CodeOverloaded, "no free worker")
	}
}

// serverCancel handles CANCEL.
func (c *Conn) serverCancel(now int64, f wire.Frame) error {
	r := c.req(f.ID)
	if r == nil {
		return nil
	}
	switch r.st {
	case reqReceiving:
		c.dropRequest(r)
	case reqHandling:
		r.st = reqCancelled
		c.b.inflight--
		c.sink.Cancelled(r.id)
	}
	return nil
}

// refuse answers a request that was not processed, ahead of queued data.
func (c *Conn) refuse(now int64, id uint64, code wire.Code, msg string) {
	c.peerControl(now, func(b []byte) []byte { return wire.AppendError(b, id, code, nil, msg) })
}

// reserve takes n bytes from the connection's and the server's memory
// bounds for a request, or says which is reached.
func (c *Conn) reserve(n int) (refused string) {
	if c.held()+c.queued()+n > c.p.cfg.ConnMemory {
		return "the connection's memory bound is reached"
	}
	if c.p.opts.Budget != nil && !c.p.opts.Budget.Reserve(n, false) {
		return "the server's memory budget is reached"
	}
	c.work().held += n
	return ""
}

// newRequest records a request in flight, in state st.
func (c *Conn) newRequest(id uint64, held int, st reqState) *request {
	b := c.work()
	r := b.reqs.add(id, st)
	r.held = uint32(held) // a body within MaxMessageSize (checked by the caller)
	b.inflight++
	return r
}

// dropRequest forgets a request, releasing what it held.
func (c *Conn) dropRequest(r *request) {
	b := c.b // holds r
	if r.st != reqCancelled {
		b.inflight--
	}
	if r.st == reqReceiving {
		c.x.receiving--
	}
	b.held -= int(r.held)
	if c.p.opts.Budget != nil && r.held > 0 {
		c.p.opts.Budget.Release(int(r.held))
	}
	b.reqs.remove(r)
}

// dropReceiving forgets the requests whose frames were still arriving (the
// connection ended). Requests handed to the Sink keep what they hold until
// answered (the Sink must answer each: Answer then only releases it), so
// that the memory bounds still count the bodies their handlers hold.
func (c *Conn) dropReceiving() {
	if c.receiving() == 0 {
		return
	}
	for _, id := range c.b.reqs.ids() { // receiving requests keep it busy
		if r := c.req(id); r.st == reqReceiving {
			c.dropRequest(r)
		}
	}
}

// Answer answers request id with a RESPONSE carrying md and body. The
// bytes are copied: the caller may reuse them when Answer returns. An
// answer larger than the client accepts becomes ERROR INTERNAL. The answer
// of a cancelled request, or of any request once the connection has ended,
// is dropped.
func (c *Conn) Answer(now int64, id uint64, md wire.Metadata, body []byte) {
	defer c.rest()
	if !c.answering(id) {
		c.settle(now)
		return
	}
	if len(md) > 0 {
		if err := md.Validate(); err != nil {
			c.answerError(now, id, wire.CodeInternal, "invalid answer metadata: "+err.Error(), nil)
			return
		}
	}
	if n := len(body); n > int(c.peer.MaxMessageSize) {
		c.answerError(now, id, wire.CodeInternal, fmt.Sprintf("answer of %d bytes exceeds the client's MAX_MESSAGE_SIZE %d", n, c.peer.MaxMessageSize), nil)
		return
	}
	ovh := wire.ResponseOverhead(md)
	if ovh > int(c.peer.MaxFrameSize)-wire.HeaderLen {
		c.answerError(now, id, wire.CodeInternal, fmt.Sprintf("answer metadata of %d bytes does not fit the client's frames", ovh), nil)
		return
	}
	if ovh+len(body) <= min(int(c.peer.MaxFrameSize), maxChunk) {
		c.queueAnswer(now, func(b []byte) []byte { return wire.AppendResponse(b, id, false, md, body) })
	} else {
		m := &msg{id: id, typ: wire.TypeResponse, ovh: ovh, md: md, body: append([]byte(nil), body...)}
		c.push(now, m)
	}
	c.settle(now)
}

// AnswerError answers request id with an ERROR (code, msg and md). Like
// Answer, it is dropped for a cancelled request or an ended connection.
func (c *Conn) AnswerError(now int64, id uint64, code wire.Code, msg string, md wire.Metadata) {
	defer c.rest()
	if !c.answering(id) {
		c.settle(now)
		return
	}
	if len(md) > 0 && (md.Validate() != nil || wire.ResponseOverhead(md)+2+wire.MaxErrorMessageLen > int(c.peer.MaxFrameSize)) {
		md = nil
	}
	c.answerError(now, id, code, msg, md)
}

func (c *Conn) answerError(now int64, id uint64, code wire.Code, msg string, md wire.Metadata) {
	c.queueAnswer(now, func(b []byte) []byte { return wire.AppendError(b, id, code, md, msg) })
	c.settle(now)
}

// answering ends the request an answer is for and reports whether the
// answer must be sent: not when the request was cancelled or is unknown
// (the connection ended, which forgets every request).
func (c *Conn) answering(id uint64) bool {
	r := c.req(id)
	if r == nil || r.st == reqReceiving {
		return false
	}
	cancelled := r.st == reqCancelled
	c.dropRequest(r)
	return !cancelled && !c.failed
}

// Refuse refuses a new connection before its HELLO exchange (protocol.md
// §4.1, §11.5): instead of HELLO, the server sends a connection-level
// ERROR (BUSY over its connection cap, SHUTTING_DOWN while offline) and
// ends the connection gracefully — its FIN after the ERROR, and what the
// client sends meanwhile read and discarded until the client's FIN or
// LingerTimeout, so that the ERROR is not destroyed by a reset the
// client's unread HELLO would cause. Nothing is processed.
func (c *Conn) Refuse(now int64, code wire.Code, msg string) {
	defer c.rest()
	if c.p.role != Server || c.helloRecv || c.failed || c.refused {
		return
	}
	c.refused = true
	c.addControl(now, func(b []byte) []byte { return wire.AppendError(b, 0, code, nil, msg) })
	c.settle(now)
}

// GoAway sends GOAWAY (protocol.md §10): no request above the highest one
// received so far will be processed. It returns that last id, and whether
// this call sent it (later calls send nothing and return the same id).
// Before the client's HELLO has arrived it refuses the connection instead,
// with ERROR SHUTTING_DOWN, and returns 0.
func (c *Conn) GoAway(now int64, reason wire.Reason, msg string) (lastID uint64, first bool) {
	defer c.rest()
	if c.p.role != Server {
		panic("core: GoAway on a client connection")
	}
	if c.goingAway || c.failed {
		_, last := c.GoingAway()
		return last, false
	}
	c.goingAway = true
	if !c.helloRecv {
		// The client's HELLO has not arrived, so this side's HELLO cannot
		// be sent: refuse the connection as a draining server refuses new
		// ones, with ERROR SHUTTING_DOWN instead of HELLO (protocol.md
		// §4.1, §7). Nothing was processed, and no GOAWAY was sent.
		c.Refuse(now, wire.CodeShuttingDown, msg)
		return 0, false
	}
	last := c.highestID
	c.rare().lastID = last
	c.addControl(now, func(b []byte) []byte { return wire.AppendGoAway(b, last, reason, msg) })
	c.settle(now)
	return last, true
}
