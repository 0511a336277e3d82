// Package client is tcppro's client: calls multiplexed over one connection
// per server, spread over every healthy server given; connects bounded by a
// dial timeout; reconnects with exponential backoff and full jitter; calls
// bounded by their deadline, never hanging; and GOAWAY handled so that no
// call is lost: calls the server announced it would not process are sent
// again on another connection.
//
//	c, err := client.New(client.Config{Addrs: []string{"10.0.0.1:7420", "10.0.0.2:7420"}})
//	resp, err := c.Call(ctx, "echo", []byte("hi"))
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// Addrs are the servers, as host:port. Required. Each gets one
	// connection; calls are spread round-robin over those that are ready.
	Addrs []string

	// DialTimeout bounds each connect (the kernel alone would wait ~127 s
	// for a black hole). Default 3s.
	DialTimeout time.Duration

	// CallTimeout is the deadline of a call whose context has none, so
	// that no call can wait for ever. It is enforced by the connection's
	// monitor, to within one tick (a tenth of the shortest session timer:
	// 200 ms with the defaults). Default 30s.
	CallTimeout time.Duration

	// MaxRetries is how many times a call the server certainly did not
	// process (above a GOAWAY's last id, refused BUSY or OVERLOADED) is
	// sent again, on another connection where there is one. Calls whose
	// fate is unknown are never retried. Default 3; negative disables.
	MaxRetries int

	// Backoff spaces reconnects after failures (see Backoff).
	Backoff Backoff

	// Session holds the per-connection limits and heartbeat timers;
	// MaxInFlight is the number of calls one connection carries at once
	// (more wait for a slot, bounded by their deadline).
	Session session.Config

	// Socket holds socket options; a zero UserTimeout is set to
	// HeartbeatInterval+HeartbeatTimeout.
	Socket netx.Options

	// Logger receives the client's logs. Default slog.Default().
	Logger *slog.Logger

	// Dial, if set, opens connections instead of the default dialer (a
	// netx.Dialer with DialTimeout and Socket): for a network namespace, a
	// proxy, a test. It must honour ctx and return a connection that
	// implements syscall.Conn (a *net.TCPConn). Default nil.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Defaults, as documented on the Config fields.
const (
	DefaultDialTimeout = netx.DefaultDialTimeout
	DefaultCallTimeout = 30 * time.Second
	DefaultMaxRetries  = 3
)

// DefaultConfig returns the configuration with every default filled in
// (Addrs is left empty).
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	defaults.Set(&c.DialTimeout, DefaultDialTimeout)
	defaults.Set(&c.CallTimeout, DefaultCallTimeout)
	defaults.Set(&c.MaxRetries, DefaultMaxRetries)
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	c.Backoff = c.Backoff.withDefaults()
	c.Session = c.Session.WithDefaults()
	defaults.Set(&c.Socket.UserTimeout, c.Session.HeartbeatBound())
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, naming it and its value.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	if len(c.Addrs) == 0 {
		return bad("Addrs", c.Addrs, "at least one server address is required")
	}
	for _, a := range c.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad("Addrs", a, err.Error())
		}
	}
	c = c.withDefaults()
	switch {
	case c.DialTimeout < 0:
		return bad("DialTimeout", c.DialTimeout, "must be positive")
	case c.CallTimeout < 0:
		return bad("CallTimeout", c.CallTimeout, "must be positive")
	case c.Backoff.Base < 0 || c.Backoff.Max < c.Backoff.Base:
		return bad("Backoff.Max", c.Backoff.Max, "must be at least Backoff.Base")
	case c.Backoff.Multiplier < 1:
		return bad("Backoff.Multiplier", c.Backoff.Multiplier, "must be at least 1")
	}
	return c.Session.Validate()
}

// Client calls tcppro servers. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	mon    *session.Monitor
	eps    []*endpoint
	ctx    context.Context // cancelled by Close; bounds dials
	cancel context.CancelFunc

	ready atomic.Pointer[[]*clientConn]
	rr    atomic.Uint64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when an endpoint changes state
	conns   map[*clientConn]struct{}
	closed  bool

	wg    sync.WaitGroup
	stats stats
}

// New starts a client: it begins connecting to every address at once.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		mon:     session.NewMonitor(cfg.Session.TickInterval()),
		changed: make(chan struct{}),
		conns:   make(map[*clientConn]struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ready.Store(&[]*clientConn{})
	for _, a := range cfg.Addrs {
		ep := &endpoint{c: c, addr: a, dial: cfg.Dial}
		if ep.dial == nil {
			ep.dial = netx.Dialer{Timeout: cfg.DialTimeout, Options: cfg.Socket}.DialContext
		}
		c.eps = append(c.eps, ep)
	}
	c.wg.Add(len(c.eps))
	for _, ep := range c.eps {
		go ep.run()
	}
	return c, nil
}

// Close closes every connection; calls in flight fail with ErrClosed's
// connection error, and later calls with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancel()
	for cc := range c.conns {
		cc.sc.Close(fmt.Errorf("%w: %w", session.ErrConnClosed, ErrClosed))
	}
	c.notifyLocked()
	c.mu.Unlock()
	c.wg.Wait()
	c.mon.Close()
	return nil
}

// Call sends a request for method with body and waits for its response.
// It returns by ctx's deadline (or CallTimeout when ctx has none) with a
// response or an error: a *CallError for an ERROR from the server, or one
// matching ErrTimeout, ErrPeerDead, ErrConnClosed, ErrServerBusy,
// ErrUnavailable or ErrClosed. Calls the server certainly did not process
// are retried up to MaxRetries times.
//
// A context cancelled before its deadline ends the call at once when the
// call waits for its answer to be handed over, and within one monitor tick
// (see CallTimeout) when the call is reading the connection itself, which
// is what a call does when it is alone on its connection: watching the
// context there would cost every call a registration on it.
func (c *Client) Call(ctx context.Context, method string, body []byte) ([]byte, error) {
	return c.CallAppend(ctx, method, body, nil)
}

// CallAppend is Call appending the response to dst (which may be nil) and
// returning the extended slice; on error it returns dst unchanged. A
// caller that passes the same buffer back, resp = c.CallAppend(ctx, m, b,
// resp[:0]), makes calls that allocate nothing once the buffer is large
// enough. dst is written only while CallAppend runs.
func (c *Client) CallAppend(ctx context.Context, method string, body, dst []byte) ([]byte, error) {
	if err := wire.ValidMethod(method); err != nil {
		return dst, err
	}
	if size := 5 + len(method) + len(body); size > int(c.cfg.Session.MaxFrameSize) {
		return dst, &wire.FrameTooLargeError{Length: uint32(min(size, math.MaxUint32)), Max: c.cfg.Session.MaxFrameSize}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.cfg.CallTimeout)
	}
	cl := getCall()
	defer putCall(cl)
	cl.deadline, cl.dst = deadline, dst
	var err error
	for attempt := 0; attempt <= c.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			c.stats.retries.Add(1)
		}
		var cc *clientConn
		cc, err = c.pick(ctx, cl)
		if err != nil {
			return dst, err
		}
		var resp []byte
		resp, err = cc.roundTrip(ctx, cl, method, body, deadline)
		if err == nil {
			return resp, nil
		}
		if !retryable(err) {
			return dst, err
		}
	}
	return dst, err
}

// pick returns a ready connection, waiting while some endpoint is still
// connecting; when every endpoint is failing it fails fast with an
// *UnavailableError.
func (c *Client) pick(ctx context.Context, cl *call) (*clientConn, error) {
	for {
		if cc := c.pickReady(); cc != nil {
			return cc, nil
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if cc := c.pickReady(); cc != nil {
			c.mu.Unlock()
			return cc, nil
		}
		failing := true
		errs := make(map[string]error, len(c.eps))
		for _, ep := range c.eps {
			if ep.state != stateFailing {
				failing = false
			}
			errs[ep.addr] = ep.lastErr
		}
		if failing {
			c.mu.Unlock()
			return nil, &UnavailableError{Errs: errs}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		case <-cl.expired():
			return nil, timeoutError{context.DeadlineExceeded}
		}
	}
}

// pickReady returns the next ready connection in round-robin order,
// skipping any that just received GOAWAY or closed, or nil.
func (c *Client) pickReady() *clientConn {
	ready := *c.ready.Load()
	n := uint64(len(ready))
	if n == 0 {
		return nil
	}
	i := c.rr.Add(1)
	for k := uint64(0); k < n; k++ {
		if cc := ready[(i+k)%n]; !cc.unusable.Load() && !cc.sc.Closed() {
			return cc
		}
	}
	return nil
}

// notifyLocked wakes calls waiting for a ready connection and republishes
// the ready list.
func (c *Client) notifyLocked() {
	ready := make([]*clientConn, 0, len(c.eps))
	if !c.closed {
		for _, ep := range c.eps {
			if ep.state == stateReady && ep.cur != nil {
				ready = append(ready, ep.cur)
			}
		}
	}
	c.ready.Store(&ready)
	close(c.changed)
	c.changed = make(chan struct{})
}

type epState int

const (
	stateConnecting epState = iota
	stateReady
	stateFailing
)

// endpoint keeps one connection to one address alive.
type endpoint struct {
	c    *Client
	addr string
	dial func(ctx context.Context, addr string) (net.Conn, error)

	// Under c.mu.
	state   epState
	cur     *clientConn
	lastErr error
}

// detach takes cc out of service at once (it received GOAWAY or closed), so
// that no call picks it while the endpoint's goroutine catches up.
func (ep *endpoint) detach(cc *clientConn, state epState, err error) {
	c := ep.c
	c.mu.Lock()
	if ep.cur == cc {
		ep.state, ep.cur = state, nil
		if err != nil {
			ep.lastErr = err
		}
		c.notifyLocked()
	}
	c.mu.Unlock()
}

func (ep *endpoint) set(state epState, cur *clientConn, err error) {
	c := ep.c
	c.mu.Lock()
	ep.state, ep.cur = state, cur
	if err != nil {
		ep.lastErr = err
	}
	c.notifyLocked()
	c.mu.Unlock()
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
			case <-c.ctx.Done():
				t.Stop()
				return
			}
		}
		c.stats.dials.Add(1)
		nc, err := ep.dial(c.ctx, ep.addr)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.stats.dialFailures.Add(1)
			failures++
			ep.set(stateFailing, nil, err)
			continue
		}
		cc, err := c.newConn(nc, ep)
		if err != nil {
			nc.Close()
			failures++
			ep.set(stateFailing, nil, err)
			continue
		}
		ep.set(stateReady, cc, nil)
		select {
		case <-cc.sc.Done():
			err := connError(cc.sc.Err())
			var refused *CallError // BUSY or SHUTTING_DOWN: back off further
			if cc.sc.Protocol().FramesIn() > 0 && !errors.As(err, &refused) {
				failures = 1 // it worked: retry soon, but jittered
			} else {
				failures++
			}
			c.stats.reconnects.Add(1)
			ep.set(stateFailing, nil, err)
		case <-cc.goAway:
			// The old connection finishes its calls on its own.
			failures = 0
			ep.set(stateConnecting, nil, nil)
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *Client) newConn(nc net.Conn, ep *endpoint) (*clientConn, error) {
	cc := &clientConn{
		ep:     ep,
		goAway: make(chan struct{}),
	}
	cc.slots.init(c.cfg.Session.MaxInFlight)
	sc, err := session.NewConn(nc, session.RoleClient, c.cfg.Session, cc)
	if err != nil {
		return nil, err
	}
	cc.sc = sc
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.conns[cc] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	c.mon.Add(sc)
	sc.Start() // the background reader, until callers read for themselves
	return cc, nil
}

// ConnClosed is called once by whichever goroutine read the connection
// last, when it has closed: it fails what is still pending and takes the
// connection out of service.
func (cc *clientConn) ConnClosed(err error) {
	c := cc.ep.c
	defer c.wg.Done()
	err = connError(err)
	switch {
	case errors.Is(err, session.ErrPeerDead):
		c.stats.deadPeers.Add(1)
	case errors.Is(err, session.ErrWriteTimeout):
		c.stats.writeTimeouts.Add(1)
	}
	cc.unusable.Store(true)
	cc.ep.detach(cc, stateFailing, err)
	cc.failAll(err)
	c.mu.Lock()
	delete(c.conns, cc)
	c.mu.Unlock()
}

// clientConn is one connection's calls: the session.Handler that routes
// responses to waiting callers.
type clientConn struct {
	ep    *endpoint
	sc    *session.Conn
	slots slots // calls in flight

	unusable atomic.Bool // GOAWAY received or closed: pick skips it

	mu         sync.Mutex
	pending    pendingCalls
	closed     bool
	goingAway  bool
	goAway     chan struct{}
	goAwayOnce sync.Once
}

func (cc *clientConn) roundTrip(ctx context.Context, cl *call, method string, body []byte, deadline time.Time) ([]byte, error) {
	if !cc.slots.tryTake() {
		if err := cc.waitSlot(ctx, cl); err != nil {
			return nil, err
		}
	}
	defer cc.slots.give()
	cl.cc, cl.ctx = cc, ctx
	cl.state.Store(callRunning) // an earlier attempt completed it
	l := &cl.lead
	l.Ctx, l.TimeoutMillis, l.Method, l.Body, l.Registrar = ctx, timeoutMillis(deadline), method, body, cl
	l.More = cc.slots.inUse() > 1
	if cc.sc.TryLead() {
		return cc.leadCall(cl, deadline)
	}
	return cc.queuedCall(cl)
}

// timeoutMillis is the timeout a request carries: the time left until
// deadline, rounded up to a millisecond, at least 1.
func timeoutMillis(deadline time.Time) uint32 {
	if left := time.Until(deadline); left > time.Millisecond {
		return uint32(min(math.Ceil(float64(left)/float64(time.Millisecond)), math.MaxUint32))
	}
	return 1
}

// leadCall sends the call's request, then reads the connection on this
// goroutine until the call is answered or its deadline passes: no hand-off
// from another goroutine. The deadline is the socket's; a context
// cancelled earlier is seen by the monitor's next tick (Tick below).
func (cc *clientConn) leadCall(cl *call, deadline time.Time) ([]byte, error) {
	expired := cc.sc.SendAndLead(&cl.lead, cl, deadline)
	id, err := cl.lead.ID, cl.lead.Err
	if id == 0 {
		return nil, sendError(cl.ctx, err)
	}
	if cl.state.Load() != callDone {
		if expired {
			err = timeoutError{context.DeadlineExceeded}
		} else {
			err = ctxError(cl.ctx)
		}
		if cc.forget(id, cl) {
			return nil, err
		}
	}
	cl.wait() // being completed right now, if not yet done
	return cl.resp, cl.err
}

// queuedCall sends the call's request while another goroutine reads the
// connection, and waits for the answer to be handed over. The answer, a
// connection failure, GOAWAY or the deadline completes it. A context with
// a deadline ends the wait exactly; the client's own CallTimeout is
// enforced by the connection's monitor tick (Tick below), so the common
// call arms no timer at all. Kept out of roundTrip (noinline) so that the
// leading call's stack frame stays small.
//
//go:noinline
func (cc *clientConn) queuedCall(cl *call) ([]byte, error) {
	l, ctx := &cl.lead, cl.ctx
	id, err := cc.sc.SendRequest(ctx, l.TimeoutMillis, l.Method, l.Body, cl, l.More)
	if err != nil && id == 0 {
		return nil, sendError(ctx, err)
	}
	done := ctx.Done()
	if done == nil {
		cl.wait()
		return cl.resp, cl.err
	}
	if cl.state.CompareAndSwap(callRunning, callParked) {
		select {
		case <-cl.done:
		case <-done:
			if cc.forget(id, cl) {
				return nil, ctxError(ctx)
			}
			<-cl.done // being completed right now
		}
	}
	return cl.resp, cl.err
}

// waitSlot waits until the call gets a slot (MaxInFlight) on this
// connection, and fails it if its context or deadline ends first or the
// connection becomes unusable. Not inlined, like queuedCall.
//
//go:noinline
func (cc *clientConn) waitSlot(ctx context.Context, cl *call) error {
	return cc.slots.acquire(func(freed <-chan struct{}) error {
		select {
		case <-freed:
			return nil
		case <-ctx.Done():
			return ctxError(ctx)
		case <-cl.expired():
			return timeoutError{context.DeadlineExceeded}
		case <-cc.sc.Done():
			return notProcessed(connError(cc.sc.Err()))
		case <-cc.goAway:
			return session.NotProcessed(session.ErrGoAway)
		}
	})
}

// sendError is the error of a call whose request was not sent.
func sendError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	return notProcessed(connError(err))
}

// Tick is called by the monitor: it fails the calls whose deadline passed
// (those whose context had none and got CallTimeout), and interrupts a
// call reading the connection for itself whose context was cancelled.
func (cc *clientConn) Tick(now time.Time) {
	var expired []*call
	kick := false
	cc.mu.Lock()
	cc.removeWhereLocked(func(_ uint64, cl *call) bool {
		if !now.Before(cl.deadline) {
			expired = append(expired, cl)
			return true
		}
		if cl.ctx != nil && (cl.gaveUp.Load() || cl.ctx.Err() != nil) {
			// Kicked at every tick until the call is gone: a kick can
			// be lost to the reader setting its deadline at that moment.
			cl.gaveUp.Store(true)
			kick = true
		}
		return false
	})
	done := len(expired) > 0 && cc.drainedLocked()
	cc.mu.Unlock()
	if done {
		cc.closeDrained()
	}
	for _, cl := range expired {
		cl.complete(nil, timeoutError{context.DeadlineExceeded})
	}
	if kick || len(expired) > 0 {
		cc.sc.Kick() // the call reading for itself may be one of them
	}
}

// forget removes a call that timed out; false means it is being completed.
func (cc *clientConn) forget(id uint64, cl *call) bool {
	cc.mu.Lock()
	if cc.pending.get(id) != cl {
		cc.mu.Unlock()
		return false
	}
	cc.removePendingLocked(id)
	done := cc.drainedLocked()
	cc.mu.Unlock()
	if done {
		cc.closeDrained()
	}
	return true
}

func (cc *clientConn) take(id uint64) *call {
	cc.mu.Lock()
	cl := cc.removePendingLocked(id)
	done := cc.drainedLocked()
	cc.mu.Unlock()
	if done {
		cc.closeDrained()
	}
	return cl
}

// addPendingLocked, removePendingLocked and removeWhereLocked change the
// calls awaiting an answer, keeping the session's count of them
// (SetAwaited) in step: a connection with answers awaited always has a
// reader.
func (cc *clientConn) addPendingLocked(id uint64, cl *call) {
	cc.pending.add(id, cl)
	cc.sc.SetAwaited(cc.pending.len())
}

func (cc *clientConn) removePendingLocked(id uint64) *call {
	cl := cc.pending.remove(id)
	cc.sc.SetAwaited(cc.pending.len())
	return cl
}

// removeWhereLocked removes the calls for which f returns true.
func (cc *clientConn) removeWhereLocked(f func(id uint64, cl *call) bool) {
	cc.pending.each(f)
	cc.sc.SetAwaited(cc.pending.len())
}

// drainedLocked reports whether the connection received GOAWAY and has no
// call left: the client then closes it (protocol.md §8).
func (cc *clientConn) drainedLocked() bool {
	return cc.goingAway && cc.pending.len() == 0
}

func (cc *clientConn) closeDrained() { cc.sc.Finish() }

func (cc *clientConn) HandleResponse(id uint64, body []byte) {
	if cl := cc.take(id); cl != nil {
		cl.complete(append(cl.dst, body...), nil)
	}
}

func (cc *clientConn) HandleError(id uint64, code wire.Code, msg []byte) {
	if cl := cc.take(id); cl != nil {
		cl.complete(nil, &CallError{Code: code, Message: string(msg)})
	}
}

// HandleGoAway fails the calls above lastID as not processed (Call sends
// them again elsewhere) and has the endpoint open a fresh connection.
func (cc *clientConn) HandleGoAway(lastID uint64, reason wire.Reason, msg []byte) {
	cc.unusable.Store(true)
	cc.ep.detach(cc, stateConnecting, nil)
	cc.mu.Lock()
	cc.goingAway = true
	var retry []*call
	cc.removeWhereLocked(func(id uint64, cl *call) bool {
		if id > lastID {
			retry = append(retry, cl)
			return true
		}
		return false
	})
	done := cc.drainedLocked()
	cc.mu.Unlock()
	err := session.NotProcessed(fmt.Errorf("%w (%s: %s)", session.ErrGoAway, reason, msg))
	for _, cl := range retry {
		cl.complete(nil, err)
	}
	cc.ep.c.stats.goAways.Add(1)
	cc.goAwayOnce.Do(func() { close(cc.goAway) })
	if done {
		cc.closeDrained()
	}
}

func (cc *clientConn) HandleRequest(uint64, time.Duration, []byte, []byte) {}

// failAll fails every pending call with the connection's error.
func (cc *clientConn) failAll(err error) {
	cc.unusable.Store(true)
	cc.mu.Lock()
	cc.closed = true
	calls := make([]*call, 0, cc.pending.len())
	cc.removeWhereLocked(func(_ uint64, cl *call) bool {
		calls = append(calls, cl)
		return true
	})
	cc.mu.Unlock()
	for _, cl := range calls {
		cl.complete(nil, err)
	}
}

// call is one call in flight; pooled.
type call struct {
	cc       *clientConn
	state    atomic.Uint32 // callRunning, callParked or callDone
	done     chan struct{} // capacity 1: completes a parked call
	ctx      context.Context
	gaveUp   atomic.Bool // its context ended while it read the connection (see Tick)
	resp     []byte
	err      error
	deadline time.Time
	dst      []byte      // the response is appended to it (CallAppend)
	timer    *time.Timer // armed only while waiting outside a connection
	armed    bool
	lead     session.Lead // the request, when the call reads for itself
}

var callPool = sync.Pool{New: func() any {
	return &call{done: make(chan struct{}, 1)}
}}

func getCall() *call { return callPool.Get().(*call) }

func putCall(cl *call) {
	if cl.armed {
		cl.timer.Stop()
		cl.armed = false
	}
	cl.cc, cl.ctx, cl.resp, cl.err, cl.dst = nil, nil, nil, nil, nil
	cl.lead = session.Lead{}
	cl.gaveUp.Store(false)
	cl.state.Store(callRunning)
	callPool.Put(cl)
}

// A call's state: complete makes it callDone, and wakes its caller only
// if the caller parked (callParked) to wait for that. A call answered on
// its caller's own goroutine (see Lead) thus costs no channel operation.
const (
	callRunning uint32 = iota
	callParked
	callDone
)

// wait returns once the call is complete.
func (cl *call) wait() {
	if cl.state.CompareAndSwap(callRunning, callParked) {
		<-cl.done
	}
}

// Answered implements session.Waiter: the call's reading ends when it is
// answered or its context was cancelled.
func (cl *call) Answered() bool { return cl.state.Load() == callDone || cl.gaveUp.Load() }

// expired returns a channel that fires at the call's deadline, arming a
// timer the first time: only calls that wait for a connection or a slot
// need one.
func (cl *call) expired() <-chan time.Time {
	if !cl.armed {
		if cl.timer == nil {
			cl.timer = time.NewTimer(time.Until(cl.deadline))
		} else {
			cl.timer.Reset(time.Until(cl.deadline))
		}
		cl.armed = true
	}
	return cl.timer.C
}

// Register records the call under the id the connection assigned, unless
// the connection is going away or closed.
func (cl *call) Register(id uint64) bool {
	cc := cl.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goingAway || cc.closed {
		return false
	}
	cc.addPendingLocked(id, cl)
	return true
}

func (cl *call) complete(resp []byte, err error) {
	cl.resp, cl.err = resp, err
	if cl.state.Swap(callDone) == callParked {
		cl.done <- struct{}{}
	}
}

type stats struct {
	dials, dialFailures, reconnects, goAways, retries atomic.Uint64
	deadPeers, writeTimeouts                          atomic.Uint64
	backoffWaits, backoffNanos                        atomic.Uint64
}

// Stats is a snapshot of the client's counters.
type Stats struct {
	Dials         uint64        // connection attempts
	DialFailures  uint64        // attempts that failed
	Reconnects    uint64        // connections lost and re-established
	GoAways       uint64        // GOAWAY frames received
	Retries       uint64        // calls sent again because they were not processed
	DeadPeers     uint64        // connections closed by the heartbeat (ErrPeerDead)
	WriteTimeouts uint64        // connections cut because the server stopped reading
	BackoffWaits  uint64        // reconnect delays taken
	BackoffTime   time.Duration // their total
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Dials:         c.stats.dials.Load(),
		DialFailures:  c.stats.dialFailures.Load(),
		Reconnects:    c.stats.reconnects.Load(),
		GoAways:       c.stats.goAways.Load(),
		Retries:       c.stats.retries.Load(),
		DeadPeers:     c.stats.deadPeers.Load(),
		WriteTimeouts: c.stats.writeTimeouts.Load(),
		BackoffWaits:  c.stats.backoffWaits.Load(),
		BackoffTime:   time.Duration(c.stats.backoffNanos.Load()),
	}
}
