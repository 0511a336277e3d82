package core

import (
	"fmt"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

func dur(d time.Duration) int64 { return int64(d) }

// reading reports whether the liveness rules apply: the peer's bytes are
// being read (not after its FIN, nor while reading is paused).
func (c *Conn) reading() bool { return !c.eof && !c.paused }

// Next returns the time at which Tick must be called next, or 0 if no
// timer is running. Any other call into the Conn may make it earlier.
func (c *Conn) Next() int64 {
	if c.done {
		return 0
	}
	var d int64
	at := func(t int64) {
		if d == 0 || t < d {
			d = t
		}
	}
	cfg := &c.p.cfg
	if c.failed {
		at(c.x.endAt + dur(cfg.LingerTimeout))
		return d
	}
	if !c.helloRecv && !c.refused {
		at(c.lastPingAt + dur(cfg.HandshakeTimeout)) // when it started: see Conn
	}
	if c.reading() {
		if c.helloRecv && cfg.Heartbeats() {
			at(c.lastRecv + dur(cfg.HeartbeatTimeout))
			at(c.pingAt())
		}
		if c.partial {
			at(c.lastRecv + dur(cfg.FrameReadTimeout))
		}
		if c.receiving() > 0 {
			at(c.x.lastBodyAt + dur(cfg.FrameReadTimeout))
		}
	}
	if c.pending() > 0 {
		at(c.b.out.waitStart + dur(cfg.WriteTimeout))
	}
	if c.cl != nil {
		if top := c.cl.deadlines.top(); top != nil {
			at(top.Deadline)
		}
	}
	if c.eof && c.p.role == Server && c.inflight() > 0 {
		at(c.x.endAt + dur(cfg.WriteTimeout))
	}
	if c.finSent {
		at(c.x.endAt + dur(cfg.LingerTimeout))
	}
	return d
}

// Tick fires the timers due at now: the handshake timeout, heartbeats
// (PING after HeartbeatInterval of silence, on the ping grid; ErrPeerDead
// after HeartbeatTimeout), the frame progress timeout, the write progress
// timeout, call deadlines, and the lingering of a closing connection.
func (c *Conn) Tick(now int64) {
	defer c.rest()
	if c.done {
		return
	}
	cfg := &c.p.cfg
	if c.failed {
		if now >= c.x.endAt+dur(cfg.LingerTimeout) {
			c.finish()
		}
		return
	}
	silent := c.silence(now)
	if silent == session.ErrHandshakeTimeout {
		c.fail(now, silent, nil)
		return
	}
	if c.pending() > 0 && now >= c.b.out.waitStart+dur(cfg.WriteTimeout) {
		c.fail(now, session.ErrWriteTimeout, nil)
		return
	}
	if c.eof && c.p.role == Server && c.inflight() > 0 && now >= c.x.endAt+dur(cfg.WriteTimeout) {
		c.fail(now, connClosed("the peer closed its side and requests in flight outlived WriteTimeout", nil), nil)
		return
	}
	if c.finSent && now >= c.x.endAt+dur(cfg.LingerTimeout) {
		c.finish()
		return
	}
	if silent != nil {
		c.fail(now, silent, nil)
		return
	}
	if c.reading() && c.helloRecv && cfg.Heartbeats() && now >= c.pingAt() {
		c.ping(now)
	}
	if c.cl != nil {
		for top := c.cl.deadlines.top(); top != nil && now >= top.Deadline; top = c.cl.deadlines.top() {
			c.Abandon(now, top, &session.DeadlineError{Sent: top.m.headSent})
		}
	}
	c.settle(now)
}

// errBodyStopped is why a request's body that stopped arriving ends the
// connection.
var errBodyStopped = fmt.Errorf("%w: a request's body stopped arriving", session.ErrFrameTimeout)

// silence is the error a Tick at now ends the connection with for want of
// the peer's bytes — its HELLO within HandshakeTimeout, anything within
// HeartbeatTimeout, the rest of a frame or of a request's body within
// FrameReadTimeout — or nil.
func (c *Conn) silence(now int64) error {
	cfg := &c.p.cfg
	// A refused connection waits for no HELLO: its ERROR, then its FIN
	// and LingerTimeout end it (a handshake timeout would drop the ERROR
	// if the writer had not run yet).
	if !c.helloRecv && !c.refused && now >= c.lastPingAt+dur(cfg.HandshakeTimeout) { // lastPingAt: when it started, until the HELLO
		return session.ErrHandshakeTimeout
	}
	if !c.reading() {
		return nil
	}
	switch {
	case c.helloRecv && cfg.Heartbeats() && now >= c.lastRecv+dur(cfg.HeartbeatTimeout):
		return session.ErrPeerDead
	case c.partial && now >= c.lastRecv+dur(cfg.FrameReadTimeout):
		return session.ErrFrameTimeout
	case c.receiving() > 0 && now >= c.x.lastBodyAt+dur(cfg.FrameReadTimeout):
		return errBodyStopped
	}
	return nil
}

// Silent reports whether a Tick at now would end the connection for the
// peer's silence (see silence). Bytes the transport has received and not
// handed over prove the peer alive: a transport that can tell hands them
// to Receive before it ticks a silent connection. After a stall of its
// own process (stopped, starved of CPU, a long pause) every deadline has
// passed while the peers' bytes wait in the sockets.
func (c *Conn) Silent(now int64) bool {
	return !c.done && !c.failed && c.silence(now) != nil
}

// pingAt is when a PING is sent unless bytes arrive first: a heartbeat
// interval after the last bytes received or the last PING sent, rounded up
// to the first step of the ping grid at or after it (see
// session.Config.PingGrid). Times are positive (see the package comment),
// so the rounding never makes 0, which Next keeps for "no timer".
func (c *Conn) pingAt() int64 {
	due := max(c.lastRecv, c.lastPingAt) + dur(c.p.cfg.HeartbeatInterval)
	if r := due % c.p.pingStep; r != 0 {
		due += c.p.pingStep - r
	}
	return due
}

// ping sends a PING; its PONG gives the round trip.
func (c *Conn) ping(now int64) {
	c.pingSeq++
	data := c.pingSeq
	c.pingOut, c.lastPingAt = true, now
	c.addControl(now, func(b []byte) []byte { return wire.AppendPing(b, data) })
}
