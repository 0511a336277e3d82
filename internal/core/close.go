package core

import (
	"fmt"

	"github.com/tcppro/tcppro/session"
)

// A connection ends in one of two ways.
//
// Gracefully: once it has nothing left to do — a server that sent GOAWAY,
// or read the peer's FIN, with no request in flight; a client that
// received GOAWAY with no call left — it wants to send its FIN after its
// last bytes (WantFin); then it is done when the peer's FIN arrives, or
// after LingerTimeout.
//
// By failure (fail): a protocol error, a dead peer, a timeout, the peer's
// connection-level ERROR, a write error, or Close. Every call ends at
// once, every request is forgotten, queued data is dropped; a final ERROR
// frame, if any, is sent, and the connection is done once it has left, or
// after LingerTimeout.

// Close ends the connection at once with err (a local decision: the
// server or the client is closing). Every call ends with err; the
// transport must close the socket (Done).
func (c *Conn) Close(now int64, err error) {
	defer c.rest()
	if err == nil {
		err = session.ErrConnClosed
	}
	c.fail(now, err, nil)
	c.finish()
}

// ReceiveEOF reports the peer's FIN. A client fails what it has in flight
// and is done (gracefully if it had nothing left to do); a server stops
// reading, drops requests whose frames were still arriving, and finishes
// those in flight before its own FIN (protocol.md §12).
func (c *Conn) ReceiveEOF(now int64) {
	defer c.rest()
	if c.failed || c.eof || c.done {
		return
	}
	c.eof, c.rare().endAt = true, now
	switch {
	case c.finSent, c.p.role == Client && c.finWanted:
		// This side had nothing left to do either (a client with no
		// call left wants to FIN only once its last bytes are out): the
		// connection ends gracefully.
		c.finish()
	case c.refused:
		c.settle(now) // the FIN follows the ERROR, then the connection is done
	case c.p.role == Client || !c.helloRecv:
		c.fail(now, connClosed("the peer closed the connection", nil), nil)
	default:
		c.dropReceiving()
		c.settle(now)
	}
}

// FinSent reports that the transport half-closed the socket after WantFin
// (halfClosed), or, when it cannot half-close, that it closed it.
func (c *Conn) FinSent(now int64, halfClosed bool) {
	defer c.rest()
	c.finSent, c.rare().endAt = true, now
	if !halfClosed || c.eof {
		c.finish()
	}
}

// fail ends the connection with err, queueing final (an encoder of a last
// control frame) if not nil.
func (c *Conn) fail(now int64, err error, final func([]byte) []byte) {
	if c.failed || c.done {
		return
	}
	x := c.rare()
	c.failed, x.err, x.endAt = true, err, now
	if b := c.b; b != nil {
		o := &b.out
		for o.ring != nil {
			c.unring(o.ring)
		}
		c.addQueued(-o.fifo.len())
		o.fifo.reset()
		o.ctrl.reset()
		o.peerN = 0
	}
	if c.p.role == Client {
		c.endAllCalls(err)
	} else {
		c.dropReceiving()
	}
	c.sink.Closed(err)
	if final == nil {
		// Nothing left to say: done at once, even with bytes in transit
		// (a write blocked on a peer that does not read is cut short).
		c.finish()
		return
	}
	c.addControl(now, final)
	c.settle(now)
}

// finish makes the connection done, telling the Sink of a graceful end.
func (c *Conn) finish() {
	if c.done {
		return
	}
	c.done = true
	if c.p.role == Server {
		c.dropReceiving()
	}
	if !c.failed {
		c.sink.Closed(nil)
	}
}

// settle moves the connection along after any change: a failed connection
// is done once its final frame has left; one with nothing left to do wants
// its FIN.
func (c *Conn) settle(now int64) {
	switch {
	case c.done:
	case c.failed:
		if c.pending() == 0 {
			c.finish()
		}
	case !c.finWanted && c.drained():
		c.finWanted = true
	}
}

// drained reports whether a connection that is ending gracefully has
// nothing left to do.
func (c *Conn) drained() bool {
	if c.refused {
		return true
	}
	if c.p.role == Client {
		return (c.goingAway || c.cl.draining) && len(c.cl.calls) == 0 && c.cl.waiting.head == nil
	}
	return (c.goingAway || c.eof) && c.inflight() == 0
}

// connClosed is ErrConnClosed with what happened.
func connClosed(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%w: %s", session.ErrConnClosed, what)
	}
	return fmt.Errorf("%w: %s: %w", session.ErrConnClosed, what, err)
}
