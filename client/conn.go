package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/evloop"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// transport moves a connection's bytes: a goroutine per connection
// (internal/netconn) or an event loop (internal/evloop). Both drive the
// same protocol core.
type transport interface {
	Call(cl *core.Call) error
	Abandon(cl *core.Call, err error)
	Drain()
	Close(err error)
	Done() <-chan struct{}
	Err() error
	Stats() core.Stats
	Usable() bool
	Created() time.Time
}

// clientConn is one connection to a server: the core.Sink that ends calls
// and reports the connection's readiness, GOAWAY and end to its endpoint.
type clientConn struct {
	ep *endpoint
	tc transport

	ready    chan struct{} // closed by the server's HELLO
	goAway   chan struct{} // closed by the server's GOAWAY
	unusable atomic.Bool   // GOAWAY received or closed: pick skips it
	answered atomic.Int64  // calls answered on it (a RESPONSE or an ERROR)
}

// wentAway reports whether the server sent GOAWAY on the connection.
func (cc *clientConn) wentAway() bool {
	select {
	case <-cc.goAway:
		return true
	default:
		return false
	}
}

// newConn starts a connection over nc: on an event loop when nc is plain
// TCP and Config.Transport says so, else on a goroutine of its own.
func (c *Client) newConn(nc net.Conn, ep *endpoint) (*clientConn, error) {
	cc := &clientConn{ep: ep, ready: make(chan struct{}), goAway: make(chan struct{})}
	var ltc *evloop.Conn
	var ntc *netconn.Conn
	if loops := c.eventLoops(nc); loops != nil {
		var err error
		if ltc, err = loops.Adopt(nc, c.params, cc); err != nil {
			// No descriptor left for the loop's copy: a goroutine, as
			// with TransportNetConn.
			c.log.Debug("event loop: connection not adopted; it gets a goroutine", "addr", ep.addr, "err", err)
		} else {
			cc.tc = ltc
		}
	}
	if ltc == nil {
		ntc = netconn.New(nc, c.params, cc)
		cc.tc = ntc
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cc.tc.Close(ErrClosed)
		return nil, ErrClosed
	}
	c.conns[cc] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	ended := func() {
		c.mu.Lock()
		delete(c.conns, cc)
		c.mu.Unlock()
		c.wg.Done()
	}
	if ltc != nil {
		ltc.Start(ended)
		return cc, nil
	}
	go func() {
		ntc.Run()
		ended()
	}()
	return cc, nil
}

// eventLoops returns the client's event loops when nc is to be owned by
// one (see Config.Transport), starting them on first use; nil otherwise,
// and when they cannot start (the connection then gets a goroutine).
func (c *Client) eventLoops(nc net.Conn) *evloop.Loops {
	_, tcp := nc.(*net.TCPConn)
	if !c.cfg.Transport.EventLoop(tcp && c.cfg.TLS == nil) {
		return nil
	}
	loops, err := c.loops.Get()
	if err != nil && !errors.Is(err, evloop.ErrLoopsClosed) {
		c.loopsWarn.Do(func() { c.log.Warn("event loops unavailable; connections get a goroutine each", "err", err) })
	}
	return loops
}

func (cc *clientConn) usable() bool { return !cc.unusable.Load() }

// roundTrip sends the call on this connection and waits until the core
// ends it: with its answer, an error, or at its deadline (the core's
// timer). A context cancelled first abandons the call (CANCEL if it was
// sent).
func (cc *clientConn) roundTrip(ctx context.Context, cl *call, dst []byte) ([]byte, wire.Metadata, error) {
	cl.dst = dst
	if err := cc.tc.Call(&cl.core); err != nil {
		return dst, nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		// At the context's deadline, which is the call's, the core ends
		// the call itself, saying whether it was sent (DeadlineError.Sent).
		if _, ok := ctx.Deadline(); !ok || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cc.tc.Abandon(&cl.core, ctxError(ctx))
		}
		<-cl.done
	}
	if cl.err != nil {
		return dst, cl.md, cl.err
	}
	return cl.resp, cl.md, nil
}

// Ready implements core.Sink: the server's HELLO arrived.
func (cc *clientConn) Ready(wire.Hello) { close(cc.ready) }

// CallDone implements core.Sink: the core ended a call.
func (cc *clientConn) CallDone(c *core.Call, body []byte, md wire.Metadata, err error) {
	if err == nil || isAnswer(err) {
		cc.answered.Add(1)
	}
	c.Owner.(*call).ended(body, md, err)
}

// isAnswer reports whether err is the server's ERROR answer to a call
// (rather than a connection's end); kept apart so that a successful call
// does not pay for the errors.As.
func isAnswer(err error) bool {
	var e *session.Error
	return errors.As(err, &e) && !e.Conn
}

// GoAway implements core.Sink: no new calls go to this connection; the
// endpoint opens a fresh one.
func (cc *clientConn) GoAway(uint64, wire.Reason, []byte) {
	cc.unusable.Store(true)
	cc.ep.c.stats.goAways.Add(1)
	close(cc.goAway)
}

// Closed implements core.Sink.
func (cc *clientConn) Closed(err error) {
	cc.unusable.Store(true)
	s := &cc.ep.c.stats
	switch {
	case errors.Is(err, session.ErrPeerDead):
		s.deadPeers.Add(1)
	case errors.Is(err, session.ErrWriteTimeout):
		s.writeTimeouts.Add(1)
	}
}

// HeartbeatRTT implements core.Sink.
func (cc *clientConn) HeartbeatRTT(time.Duration) {}

// Request and Cancelled implement core.Sink; a client serves no requests.
func (cc *clientConn) Request(core.Incoming) bool { return false }
func (cc *clientConn) Cancelled(uint64)           {}
