package server

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// conn is one server-side connection: the session.Handler that turns
// decoded requests into work for the pool.
type conn struct {
	s      *Server
	sc     *session.Conn
	remote net.Addr

	lastMethod atomic.Pointer[string] // the last method name seen

	// Owned by the monitor goroutine (onTick).
	expiry int64 // Unix nanoseconds; 0: no maximum age
	aged   bool
}

// ErrMaxAge is why a connection that outlived MaxConnAge plus its grace
// period was closed.
var ErrMaxAge = fmt.Errorf("%w: maximum connection age reached", session.ErrConnClosed)

func (c *conn) run() { c.sc.Run() }

// ConnClosed is called by the session once the connection has closed.
func (c *conn) ConnClosed(err error) { c.s.removeConn(c, err) }

// HeartbeatRTT is called by the session with each heartbeat round trip.
func (c *conn) HeartbeatRTT(d time.Duration) { c.s.obs.HeartbeatRTT(d) }

func (c *conn) goAway(reason wire.Reason, msg string) {
	if _, first := c.sc.GoAway(reason, msg); first {
		c.s.stats.goAways.Add(1)
		c.s.obs.GoAwaySent(reason)
	}
}

// Tick is called by the monitor: it enforces the maximum connection age.
func (c *conn) Tick(now time.Time) {
	ns := now.UnixNano()
	if c.expiry == 0 || ns < c.expiry {
		return
	}
	if !c.aged {
		c.aged = true
		c.goAway(wire.ReasonMaxAge, "maximum connection age reached")
		return
	}
	if time.Duration(ns-c.expiry) >= c.s.cfg.MaxConnAgeGrace {
		c.sc.Close(ErrMaxAge)
	}
}

// method returns the method name for b, reusing the last one seen on this
// connection so that steady traffic does not allocate a string per request.
// The reader role can pass between goroutines (session hand-offs), hence
// the atomic.
func (c *conn) method(b []byte) string {
	if p := c.lastMethod.Load(); p != nil && *p == string(b) {
		return *p
	}
	p := c.s.internMethod(b)
	c.lastMethod.Store(p)
	return *p
}

type request struct {
	Request
	buf []byte
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// HandleRequest runs on the connection's reader for a request that is not
// the last of its read: it takes a worker or refuses at once, copies the
// body, and starts the handler on its own goroutine.
func (c *conn) HandleRequest(id uint64, timeout time.Duration, method, body []byte) {
	if !c.s.acquireWorker() {
		c.overloaded(id)
		return
	}
	r := requestPool.Get().(*request)
	r.buf = append(r.buf[:0], body...)
	r.Request = Request{ID: id, Method: c.method(method), Body: r.buf, RemoteAddr: c.remote}
	go c.serve(r, timeout)
}

// ServeInline runs the last request of a read on the calling goroutine
// (the reader itself, or a goroutine the session started for the first
// request after an idle spell), with the body still in the read buffer: no
// copy. The session moves reading elsewhere if the handler is slow.
func (c *conn) ServeInline(id uint64, timeout time.Duration, method, body []byte) {
	if !c.s.acquireWorker() {
		c.overloaded(id)
		return
	}
	r := requestPool.Get().(*request)
	r.Request = Request{ID: id, Method: c.method(method), Body: body, RemoteAddr: c.remote}
	c.serve(r, timeout)
}

func (c *conn) overloaded(id uint64) {
	c.s.stats.overloaded.Add(1)
	_ = c.sc.SendError(id, wire.CodeOverloaded, "all workers busy")
	c.sc.RequestDone()
}

// serve runs one request on a worker already taken, answers it, and
// releases the worker.
func (c *conn) serve(r *request, timeout time.Duration) {
	s := c.s
	if ht := s.cfg.HandlerTimeout; ht > 0 && (timeout == 0 || ht < timeout) {
		timeout = ht
	}
	start := time.Now()
	var deadline time.Time
	if timeout > 0 {
		deadline = start.Add(timeout)
	}
	ctx := newReqCtx(c.sc, deadline)
	resp, err := c.call(ctx, &r.Request)
	ctx.finish()
	if err == nil && len(resp) > int(s.cfg.Session.MaxFrameSize) {
		err = Errorf(wire.CodeInternal, "response of %d bytes exceeds the maximum frame size %d", len(resp), s.cfg.Session.MaxFrameSize)
	}
	// The worker is free once the handler returns: a client that gets its
	// answer and calls again at once finds it free.
	s.releaseWorker()
	s.requests.Add(1) // counted before the answer leaves, so a client that has it sees it counted
	var code wire.Code
	if err != nil {
		var msg string
		code, msg = errorFrame(err)
		_ = c.sc.SendError(r.ID, code, msg)
	} else {
		_ = c.sc.SendResponse(r.ID, resp)
	}
	if s.observed {
		s.obs.RequestDone(r.Method, code, time.Since(start))
	}
	c.sc.RequestDone()
	if cap(r.buf) > 64<<10 {
		r.buf = nil
	}
	r.Request = Request{}
	requestPool.Put(r)
}

// call runs the handler, turning a panic into CodeInternal.
func (c *conn) call(ctx *reqCtx, req *Request) (resp []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, c.panicked(req, p)
		}
	}()
	return c.s.handler.ServeTCP(ctx, req)
}

// panicked logs a handler's panic and returns the error answered for it;
// kept out of call's deferred function, which runs after every request.
//
//go:noinline
func (c *conn) panicked(req *Request, p any) error {
	c.s.log.Error("handler panicked", "method", req.Method, "remote", req.RemoteAddr, "panic", p)
	return &Error{Code: wire.CodeInternal, Message: "internal error"}
}

func (c *conn) HandleResponse(uint64, []byte)            {}
func (c *conn) HandleError(uint64, wire.Code, []byte)    {}
func (c *conn) HandleGoAway(uint64, wire.Reason, []byte) {}
