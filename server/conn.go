package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// ConnState is a server connection's state, reported to Config.ConnState.
type ConnState int

// Connection states, in the order a connection goes through them: New,
// then Active and Idle in turns, then Closed (as net/http's).
const (
	// StateNew: accepted (after the TLS handshake, if any); no request
	// handled yet.
	StateNew ConnState = iota
	// StateActive: at least one request is being handled.
	StateActive
	// StateIdle: open, its requests handled, none being handled now.
	StateIdle
	// StateClosed: closed, for whatever reason. Final.
	StateClosed
)

func (s ConnState) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateActive:
		return "active"
	case StateIdle:
		return "idle"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// ErrMaxAge is why a connection that outlived MaxConnAge plus its grace
// period was closed.
var ErrMaxAge = fmt.Errorf("%w: maximum connection age reached", session.ErrConnClosed)

// transport moves a connection's bytes: a goroutine per connection
// (internal/netconn) or an event loop (internal/evloop). Both drive the
// same protocol core.
type transport interface {
	Answer(id uint64, md wire.Metadata, body []byte)
	AnswerError(id uint64, code wire.Code, msg string, md wire.Metadata)
	GoAway(reason wire.Reason, msg string) (lastID uint64, first bool)
	Close(err error)
	Post(f func())
	Stats() core.Stats
	Created() time.Time
	// NetConn is the connection served (a *tls.Conn over TLS), or, on the
	// event loop, the net.Conn that stands for it. Its RemoteAddr is the
	// same at every call (the connection keeps no copy).
	NetConn() net.Conn
	// Err is why the connection failed, or nil (open, or ended
	// gracefully): once it has ended, what Sink.Closed reported.
	Err() error
}

// conn is one server connection: the core.Sink that turns requests into
// work for the pool, and the handlers running for it. It holds what every
// connection needs and no more: an idle connection costs what its fields
// cost (state only some connections need is made on use).
type conn struct {
	s     *Server
	tc    transport
	ctx   context.Context // the connection's context (BaseContext, ConnContext)
	start int64           // netconn.Now() when accepted (before the TLS handshake)

	lastMethod atomic.Pointer[string] // the last method name seen

	mu      sync.Mutex // taken inside the transport's mutex (Sink methods): no hook under it
	running running    // requests being handled, for cancellation
	ended   bool       // the connection ended: every context was cancelled

	// Owned by the ager (Server.age).
	aged   bool
	expiry int64 // Unix nanoseconds; 0: no maximum age

	idx int // in Server.conns, under Server.mu

	report *stateReport // with Config.ConnState only
}

// stateReport is a connection's ConnState reporting, under mu, which is
// never taken with the transport's mutex or conn.mu held, so that a hook
// may call the Server.
type stateReport struct {
	mu      sync.Mutex
	handled int       // handlers running
	state   ConnState // last reported
}

// running is the requests being handled on a connection, by id: the
// first inline, the others, while several run at once, in a map taken
// from runningMaps and given back once it empties, so that an idle
// connection holds no table and a burst does not make one.
type running struct {
	one  *reqCtx
	more map[uint64]*reqCtx
}

func (r *running) add(ctx *reqCtx) {
	if r.one == nil {
		r.one = ctx
		return
	}
	if r.more == nil {
		r.more = runningMaps.Get().(map[uint64]*reqCtx)
	}
	r.more[ctx.id] = ctx
}

// runningMaps holds the empty maps of running.
var runningMaps = sync.Pool{New: func() any { return make(map[uint64]*reqCtx) }}

func (r *running) get(id uint64) *reqCtx {
	if r.one != nil && r.one.id == id {
		return r.one
	}
	return r.more[id]
}

func (r *running) remove(id uint64) {
	if r.one != nil && r.one.id == id {
		r.one = nil
		return
	}
	delete(r.more, id)
	if len(r.more) == 0 && r.more != nil {
		runningMaps.Put(r.more)
		r.more = nil
	}
}

// all returns every request being handled.
func (r *running) all() []*reqCtx {
	ctxs := make([]*reqCtx, 0, len(r.more)+1)
	if r.one != nil {
		ctxs = append(ctxs, r.one)
	}
	for _, ctx := range r.more {
		ctxs = append(ctxs, ctx)
	}
	return ctxs
}

// handling reports a handler starting (+1) or ending (-1) to
// Config.ConnState as Active and Idle, in order, from the handler's own
// goroutine (outside every lock of the connection).
func (c *conn) handling(delta int) {
	r := c.report
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled += delta
	switch {
	case r.state == StateClosed:
	case r.handled > 0 && r.state != StateActive:
		c.setStateLocked(StateActive)
	case r.handled == 0 && r.state == StateActive:
		c.setStateLocked(StateIdle)
	}
}

// setState reports a state change to Config.ConnState.
func (c *conn) setState(st ConnState) {
	r := c.report
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c.setStateLocked(st)
}

func (c *conn) setStateLocked(st ConnState) {
	c.report.state = st
	c.s.cfg.ConnState(c.tc.NetConn(), st)
}

// Ready implements core.Sink: the client's HELLO arrived.
func (c *conn) Ready(wire.Hello) {}

// Request implements core.Sink: it takes a worker, or refuses the request
// (OVERLOADED), and hands the handler to the server's pool of goroutines
// (an idle one, or a new one if every one is busy).
func (c *conn) Request(in core.Incoming) bool {
	s := c.s
	if !s.acquireWorker() {
		s.stats.overloaded.Add(1)
		return false
	}
	r := requestPool.Get().(*request)
	r.buf = append(r.buf[:0], in.Body...)
	nc := c.tc.NetConn()
	r.Request = Request{
		ID: in.ID, Method: c.method(in.Method), Body: r.buf, Metadata: in.Metadata,
		RemoteAddr: nc.RemoteAddr(), Conn: nc,
	}
	// The request's timeout counts from its REQUEST frame's arrival
	// (protocol.md §5.1), not from the end of a chunked body.
	timeout := time.Duration(in.TimeoutMillis) * time.Millisecond
	if ht := s.cfg.HandlerTimeout; ht > 0 && (timeout == 0 || ht < timeout) {
		timeout = ht
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = netconn.Wall(in.Arrived).Add(timeout)
	}
	ctx := newReqCtx(in.ID, c.ctx, deadline)
	c.mu.Lock()
	if c.ended {
		ctx.cancel(context.Canceled)
	}
	c.running.add(ctx)
	c.mu.Unlock()
	s.pool.Go(job{c, r, ctx})
	return true
}

// job is one request for the server's pool of handler goroutines.
type job struct {
	c   *conn
	r   *request
	ctx *reqCtx
}

func (j job) run() { j.c.serve(j.r, j.ctx) }

// Cancelled implements core.Sink: the client cancelled a request.
func (c *conn) Cancelled(id uint64) {
	c.mu.Lock()
	ctx := c.running.get(id)
	c.mu.Unlock()
	if ctx != nil {
		ctx.cancel(context.Canceled)
	}
}

// Closed implements core.Sink: the connection ended; every handler still
// running is cancelled (its answer will be dropped).
func (c *conn) Closed(error) {
	c.mu.Lock()
	c.ended = true
	ctxs := c.running.all()
	c.mu.Unlock()
	for _, ctx := range ctxs {
		ctx.cancel(context.Canceled)
	}
}

// HeartbeatRTT implements core.Sink. The Observer hears of it once the
// transport's mutex is released: it may call the Server.
func (c *conn) HeartbeatRTT(d time.Duration) {
	if _, none := c.s.obs.(nopObserver); none {
		return
	}
	c.tc.Post(func() { c.s.obs.HeartbeatRTT(d) })
}

// CallDone and GoAway implement core.Sink; a server makes no calls.
func (c *conn) CallDone(*core.Call, []byte, wire.Metadata, error) {}
func (c *conn) GoAway(uint64, wire.Reason, []byte)                {}

func (c *conn) goAway(reason wire.Reason, msg string) {
	if _, first := c.tc.GoAway(reason, msg); first {
		c.s.stats.goAways.Add(1)
		c.s.obs.GoAwaySent(reason)
	}
}

// age enforces the maximum connection age: GOAWAY at the expiry, close
// after the grace period. Called by the server's ager.
func (c *conn) age(now int64) {
	if c.expiry == 0 || now < c.expiry {
		return
	}
	if !c.aged {
		c.aged = true
		c.goAway(wire.ReasonMaxAge, "maximum connection age reached")
		return
	}
	if time.Duration(now-c.expiry) >= c.s.cfg.MaxConnAgeGrace {
		c.tc.Close(ErrMaxAge)
	}
}

// method returns the method name for b, reusing the last one seen on this
// connection so that steady traffic does not allocate a string per request.
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

// serve runs one request on a worker already taken, answers it, and
// releases the worker.
func (c *conn) serve(r *request, ctx *reqCtx) {
	s := c.s
	c.handling(+1)
	resp, err := c.call(ctx, &r.Request)
	ctx.finish()
	// The worker is free once the handler returns: a client that gets its
	// answer and calls again at once finds it free.
	s.releaseWorker()
	s.requests.Add(1) // counted before the answer leaves, so a client that has it sees it counted
	id, md := r.ID, r.ResponseMetadata
	if cap(r.buf) > 64<<10 {
		// The answer's write may block on a peer that does not read:
		// a large body must not be kept meanwhile. resp, which may alias
		// it, is not used once the core has copied the answer.
		r.buf, r.Body = nil, nil
	}
	if err != nil {
		code, msg := errorFrame(err)
		c.tc.AnswerError(id, code, msg, md)
	} else {
		c.tc.Answer(id, md, resp)
	}
	c.mu.Lock()
	c.running.remove(id)
	c.mu.Unlock()
	c.handling(-1)
	r.Request = Request{}
	requestPool.Put(r)
}

// call runs the interceptors and the handler, turning a panic into
// CodeInternal.
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
