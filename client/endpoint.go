package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
)

type epState int

const (
	stateConnecting epState = iota
	stateReady
	stateFailing
)

func (s epState) String() string {
	switch s {
	case stateConnecting:
		return "connecting"
	case stateReady:
		return "ready"
	}
	return "failing"
}

// endpoint keeps one connection to one address alive, until the address
// leaves the client's set (retire) or the client closes.
type endpoint struct {
	c      *Client
	addr   string
	dial   func(ctx context.Context, addr string) (net.Conn, error)
	ctx    context.Context // cancelled by retire and by Close
	cancel context.CancelFunc

	be   *balancer.Endpoint[*endpoint]
	conn atomic.Pointer[clientConn] // cur while ready, for pick

	// Under c.mu.
	state   epState
	cur     *clientConn
	lastErr error
}

func (c *Client) newEndpoint(addr string) *endpoint {
	ep := &endpoint{c: c, addr: addr, dial: c.cfg.Dial}
	if ep.dial == nil {
		ep.dial = netx.Dialer{Timeout: c.cfg.DialTimeout, Options: c.cfg.Socket}.DialContext
	}
	ep.ctx, ep.cancel = context.WithCancel(c.ctx)
	ep.be = c.bal.Add(addr, ep)
	return ep
}

// retire stops the endpoint of an address that left the set: no new
// connection, and its connection drains (no new calls; calls in flight
// finish). c.mu is held.
func (ep *endpoint) retire() {
	ep.cancel()
	ep.c.bal.Remove(ep.be)
	if ep.cur != nil {
		ep.cur.unusable.Store(true)
		ep.cur.tc.Drain() // its Sink takes no lock of the client
	}
}

// pick returns a ready connection (another endpoint's than avoid when there
// is one), waiting while some endpoint is still connecting; when every
// endpoint is failing it fails fast with an *UnavailableError.
func (c *Client) pick(ctx context.Context, cl *call, deadline time.Time, avoid *endpoint) (*clientConn, error) {
	for {
		if cc := c.pickReady(avoid); cc != nil {
			return cc, nil
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if cc := c.pickReady(avoid); cc != nil {
			c.mu.Unlock()
			return cc, nil
		}
		// Unavailable: a set has come and none of its servers is
		// connecting or ready (also when the set is empty).
		failing := c.resolved
		errs := make(map[string]error, len(c.eps))
		for _, ep := range c.eps {
			if ep.state != stateFailing {
				failing = false
			}
			errs[ep.addr] = ep.lastErr
		}
		if failing {
			err := &UnavailableError{Errs: errs, Resolve: c.set.Err}
			c.mu.Unlock()
			return nil, err
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-cl.expired(deadline):
			return nil, fmt.Errorf("client: call timed out waiting for a connection: %w", &session.DeadlineError{})
		}
	}
}

// pickReady returns a ready connection chosen by the balancer (another
// endpoint's than avoid unless it is the only one), skipping any that is
// no longer usable; nil if none is ready.
func (c *Client) pickReady(avoid *endpoint) *clientConn {
	var skip *balancer.Endpoint[*endpoint]
	if avoid != nil {
		skip = avoid.be
	}
	for range 3 { // a picked connection may go away before it is loaded
		e := c.bal.Pick(skip, usableEndpoint)
		if e == nil {
			return nil
		}
		if cc := e.Value.conn.Load(); cc != nil && cc.usable() {
			return cc
		}
	}
	return nil
}

func usableEndpoint(ep *endpoint) bool {
	cc := ep.conn.Load()
	return cc != nil && cc.usable()
}

// notifyLocked wakes calls waiting for a ready connection.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// set changes the endpoint's state (only if cur is still its connection,
// when from is not nil).
// It reports false, changing nothing, once the endpoint is retired.
func (ep *endpoint) set(from *clientConn, state epState, cur *clientConn, err error) bool {
	c := ep.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if ep.ctx.Err() != nil {
		return false // retired (under c.mu) or the client closed
	}
	if from == nil || ep.cur == from {
		ep.state, ep.cur = state, cur
		if err != nil {
			ep.lastErr = err
		}
		ready := state == stateReady && cur != nil
		if ready {
			ep.conn.Store(cur)
		} else {
			ep.conn.Store(nil)
		}
		c.bal.SetReady(ep.be, ready)
		c.notifyLocked()
	}
	return true
}

// run connects, watches the connection, and reconnects: at once after a
// GOAWAY, after a backoff delay after a failure.
func (ep *endpoint) run() {
	c := ep.c
	defer c.wg.Done()
	failures := 0
	for {
		if failures > 0 {
			d := c.cfg.Backoff.Delay(failures - 1)
			c.stats.backoffWaits.Add(1)
			c.stats.backoffNanos.Add(uint64(d))
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ep.ctx.Done():
				t.Stop()
				return
			}
		}
		cc, err := ep.connect()
		if err != nil {
			if ep.ctx.Err() != nil {
				return
			}
			failures++
			if !refused(err) { // a BUSY or SHUTTING_DOWN server is not broken
				c.bal.Failed(ep.be)
			}
			ep.set(nil, stateFailing, nil, err)
			c.res.ResolveNow() // the server may have moved
			continue
		}
		if !ep.set(nil, stateReady, cc, nil) {
			cc.tc.Drain() // retired meanwhile
			return
		}
		select {
		case <-cc.tc.Done():
		case <-cc.goAway:
		case <-ep.ctx.Done():
			return // retired (its connection drains) or the client closed
		}
		away := cc.wentAway()
		switch {
		case cc.answered.Load() == 0:
			// Told to go away, or closed, before a single answer: back off
			// as after a failure, or a server that sends GOAWAY on every
			// new connection would be redialled in a tight loop.
			failures++
		case away:
			failures = 0 // the old connection finishes its calls on its own
		default:
			failures = 1 // it worked: retry soon, but jittered
		}
		if away {
			// Calls wait for the next connection rather than fail.
			ep.set(cc, stateConnecting, nil, nil)
			continue
		}
		c.stats.reconnects.Add(1)
		c.res.ResolveNow() // the server may have moved
		err = cc.tc.Err()
		if err == nil {
			err = fmt.Errorf("%w: the server ended the connection", session.ErrConnClosed)
		}
		if !refused(err) && !errors.Is(err, ErrClosed) {
			c.bal.Failed(ep.be) // ended without GOAWAY: dead, reset, cut
		}
		ep.set(cc, stateFailing, nil, err)
	}
}

// connect dials, runs the TLS handshake if configured, and waits for the
// server's HELLO. A server that refuses the connection (BUSY, SHUTTING_DOWN)
// is an error here, and the endpoint backs off.
func (ep *endpoint) connect() (*clientConn, error) {
	c := ep.c
	c.stats.dials.Add(1)
	// DialTimeout bounds every connect, through a Dial hook too.
	dctx, cancel := context.WithTimeout(ep.ctx, c.cfg.DialTimeout)
	nc, err := ep.dial(dctx, ep.addr)
	timedOut := dctx.Err() == context.DeadlineExceeded
	cancel()
	if err != nil {
		c.stats.dialFailures.Add(1)
		var de *netx.DialError
		if timedOut && !errors.As(err, &de) {
			err = &netx.DialError{Addr: ep.addr, Timeout: true, Err: err}
		}
		return nil, err
	}
	if c.cfg.TLS != nil {
		if nc, err = ep.handshake(nc); err != nil {
			c.stats.dialFailures.Add(1)
			return nil, err
		}
	}
	cc, err := c.newConn(nc, ep)
	if err != nil {
		nc.Close()
		return nil, err
	}
	select {
	case <-cc.ready:
		return cc, nil
	case <-cc.tc.Done():
		c.stats.dialFailures.Add(1)
		err := cc.tc.Err()
		if err == nil {
			err = session.ErrConnClosed
		}
		return nil, err
	case <-ep.ctx.Done():
		cc.tc.Close(ErrClosed) // retired before it was ready, or the client closed
		return nil, ErrClosed
	}
}

// handshake runs the client's TLS handshake, bounded by HandshakeTimeout.
func (ep *endpoint) handshake(nc net.Conn) (net.Conn, error) {
	c := ep.c
	cfg := c.cfg.TLS
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		if host, _, err := net.SplitHostPort(ep.addr); err == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(nc, cfg)
	if err := netconn.Handshake(ep.ctx, tc, c.cfg.Session.HandshakeTimeout); err != nil {
		return nil, err
	}
	return tc, nil
}
