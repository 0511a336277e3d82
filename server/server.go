// Package server is tcppro's server: an accept loop with a connection cap
// and explicit BUSY rejection (even at the open-file limit, on plain
// TCP), a bounded worker pool for handlers, a memory budget, heartbeats
// and deadlines on every connection, maximum connection age, TLS,
// interceptors, and a graceful Shutdown modelled on net/http's.
//
//	srv, err := server.New(server.DefaultConfig(), handler)
//	go srv.ListenAndServe()
//	...
//	srv.Shutdown(ctx) // GOAWAY, finish in-flight work, close
//
// Each connection is driven by the protocol core (internal/core), either
// over its net.Conn with one reading goroutine per connection
// (internal/netconn) or by an event loop (internal/evloop), as
// Config.Transport chooses. Handlers run on a pool of goroutines kept for
// reuse (internal/workpool), at most Config.Workers at once.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/evloop"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/internal/workpool"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
	"golang.org/x/sys/cpu"
)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or
// Close.
var ErrServerClosed = errors.New("server: closed")

// Server serves tcppro connections. Its exported methods are safe for
// concurrent use.
type Server struct {
	cfg     Config
	handler Handler // with the interceptors
	log     *slog.Logger
	obs     Observer
	budget  *budget
	params  *core.Params // every connection's (with budget)
	reserve reserveFD

	hardCtx  context.Context // cancelled by Shutdown and Close: TLS handshakes in progress end
	hardStop context.CancelFunc

	mu        sync.Mutex
	hard      bool // connections are being closed outright (Close)
	listeners map[*net.Listener]struct{}
	listening chan struct{} // closed when Serve first registers a listener
	conns     []*conn       // the open connections, each at its index (conn.idx)
	rejecting map[*rejected]struct{}
	closing   chan struct{} // closed by Shutdown and Close
	gone      chan struct{} // a connection ended (cap 1)

	active   atomic.Int64
	shutdown atomic.Bool
	offline  atomic.Bool
	leaving  atomic.Bool // Shutdown's drain delay: refusing new connections, not yet GOAWAY
	draining atomic.Bool
	closeMu  sync.Once
	// svcMu orders the calls of Config.OnServiceChange with the state
	// changes that cause them.
	svcMu    sync.Mutex
	outOfSvc bool // OnServiceChange(false) was the last call
	final    bool // Shutdown or Close began: no OnServiceChange(true)
	rejectWG sync.WaitGroup
	connWG   sync.WaitGroup
	ageWG    sync.WaitGroup

	// The event loops of the connections they own (Config.Transport),
	// started with the first such connection.
	loops     evloop.Lazy
	loopsWarn sync.Once

	// pool runs the handlers, on goroutines kept for reuse.
	pool *workpool.Pool[job]

	namesMu sync.RWMutex
	names   map[string]*string // interned method names

	stats stats

	// Written by every request from every CPU: on a cache line of their
	// own, so that these writes do not evict the fields around them,
	// which every request reads, from the other CPUs' caches.
	_        cpu.CacheLinePad
	busy     atomic.Int64  // workers in use (the handlers running on pool)
	requests atomic.Uint64 // requests answered (Stats.Requests)
	_        cpu.CacheLinePad
}

// New returns a server that answers requests with h.
func New(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("server: nil handler")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:       cfg,
		handler:   chain(h, cfg.Interceptors),
		log:       cfg.Logger,
		obs:       cfg.Observer,
		listeners: make(map[*net.Listener]struct{}),
		listening: make(chan struct{}),
		rejecting: make(map[*rejected]struct{}),
		names:     make(map[string]*string),
		closing:   make(chan struct{}),
		gone:      make(chan struct{}, 1),
	}
	s.pool = workpool.New(job.run, 0)
	s.hardCtx, s.hardStop = context.WithCancel(context.Background())
	s.budget = &budget{limit: math.MaxInt64} // counted even when not bounded: Stats.MemoryHeld
	if cfg.MemoryBudget > 0 {
		s.budget.limit = cfg.MemoryBudget
	}
	s.params = core.NewParams(core.Server, cfg.Session, core.Options{Budget: s.budget})
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	// The reserve is taken at once: by the time it is needed, the
	// descriptors may all be gone.
	s.reserve.open()
	if cfg.MaxConnAge > 0 {
		s.ageWG.Add(1)
		go s.age()
	}
	return s, nil
}

// Listening returns a channel closed once Serve, typically on a goroutine
// of its own, has registered its first listener: from then on Addrs lists
// it and Ready no longer says "not listening". A caller that says it is
// ready (a load balancer's probe, a handover to a new process) waits for it.
func (s *Server) Listening() <-chan struct{} { return s.listening }

// Addrs returns the addresses the server is listening on now.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, 0, len(s.listeners))
	for ln := range s.listeners {
		addrs = append(addrs, (*ln).Addr())
	}
	return addrs
}

// Config returns the effective configuration (defaults filled in).
func (s *Server) Config() Config { return s.cfg }

// ListenAndServe listens on Config.Addr, applying the port policy and
// SO_REUSEADDR (see netx), and serves until Shutdown or Close.
func (s *Server) ListenAndServe() error {
	if s.shutdown.Load() {
		return ErrServerClosed
	}
	ln, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Listen opens a listener on Config.Addr as ListenAndServe does, applying
// the port policy (a refusal is counted as RejectPortPolicy) and
// SO_REUSEADDR (see netx), without serving it: serve it with Serve. It
// lets a caller hold the listener first, for example to hand it to a
// process that replaces this one.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := netx.ListenConfig{AllowEphemeralPort: s.cfg.AllowEphemeralPort, FS: s.cfg.FS}.Listen(context.Background(), s.cfg.Addr)
	if err != nil {
		if errors.Is(err, netx.ErrEphemeralPort) {
			s.obs.ConnRejected(RejectPortPolicy)
		}
		return nil, err
	}
	return ln, nil
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Serve closes ln. At the open-file limit (EMFILE,
// ENFILE) a descriptor kept in reserve accepts each waiting connection,
// answers it BUSY and closes it (over TLS it only closes it: a handshake
// would hold the reserve too long), so that clients hear BUSY, or at least
// an immediate close, instead of waiting in the accept queue; other temporary accept errors pause the
// loop, doubling from AcceptBackoffMin to AcceptBackoffMax, instead of
// spinning.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	base := context.Background()
	if s.cfg.BaseContext != nil {
		if base = s.cfg.BaseContext(ln); base == nil {
			panic("server: BaseContext returned a nil context")
		}
	}
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			if !temporary(err) {
				return err
			}
			s.stats.acceptErrors.Add(1)
			s.obs.ConnRejected(RejectAcceptError)
			if fdExhausted(err) && s.rejectWithReserve(ln) {
				continue
			}
			delay = min(max(2*delay, s.cfg.AcceptBackoffMin), s.cfg.AcceptBackoffMax)
			s.log.Warn("accept failed; backing off", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.closing:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		s.serveConn(base, nc)
	}
}

// temporary reports accept errors worth retrying after a pause: resource
// exhaustion and connections aborted before accept.
func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
		select {
		case <-s.listening:
		default:
			close(s.listening)
		}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

// serveConn refuses a connection (offline, over the cap) or starts serving
// it on a goroutine of its own.
func (s *Server) serveConn(base context.Context, nc net.Conn) {
	if s.offline.Load() || s.leaving.Load() {
		s.stats.rejectedOffline.Add(1)
		s.obs.ConnRejected(RejectOffline)
		s.reject(nc, wire.CodeShuttingDown, "server offline")
		return
	}
	if s.active.Load() >= int64(s.cfg.MaxConns) {
		s.stats.rejectedBusy.Add(1)
		s.obs.ConnRejected(RejectBusy)
		s.reject(nc, wire.CodeBusy, fmt.Sprintf("server at its connection cap (%d)", s.cfg.MaxConns))
		return
	}
	if err := s.cfg.Socket.Apply(nc); err != nil {
		s.log.Warn("socket options", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.active.Add(1)
	s.connWG.Add(1)
	s.mu.Unlock()
	s.stats.accepted.Add(1)
	s.obs.ConnOpened(nc.RemoteAddr())
	if loops := s.eventLoops(nc); loops != nil {
		s.serveOnLoop(base, loops, nc)
		return
	}
	go s.runConn(base, nc)
}

// runConn is a connection's goroutine (the net.Conn transport): the TLS
// handshake if any, then the connection's reader until it is closed.
func (s *Server) runConn(base context.Context, nc net.Conn) {
	defer s.connWG.Done()
	var tc *netconn.Conn
	c := s.setupConn(base, nc, func(c *conn, nc net.Conn) (transport, error) {
		tc = netconn.New(nc, s.params, c)
		return tc, nil
	})
	if c == nil {
		return
	}
	tc.Run()
	s.endConn(c)
}

// eventLoops returns the server's event loops when nc is to be owned by
// one (see Config.Transport), starting them on first use; nil otherwise,
// and when they cannot start (the connection then gets a goroutine).
func (s *Server) eventLoops(nc net.Conn) *evloop.Loops {
	_, tcp := nc.(*net.TCPConn)
	if !s.cfg.Transport.EventLoop(tcp && s.cfg.TLS == nil) {
		return nil
	}
	loops, err := s.loops.Get()
	if err != nil && !errors.Is(err, evloop.ErrLoopsClosed) {
		s.loopsWarn.Do(func() { s.log.Warn("event loops unavailable; connections get a goroutine each", "err", err) })
	}
	return loops
}

// serveOnLoop hands a plain TCP connection to an event loop: it has no
// goroutine of its own. There is no TLS handshake to wait for; the hooks
// of a new connection (ConnContext, ConnState) run here, on the accepting
// goroutine. A connection the loops cannot take (no descriptor left for
// their copy of it) gets a goroutine, as with TransportNetConn.
func (s *Server) serveOnLoop(base context.Context, loops *evloop.Loops, nc net.Conn) {
	var tc *evloop.Conn
	var ntc *netconn.Conn
	c := s.setupConn(base, nc, func(c *conn, nc net.Conn) (transport, error) {
		var err error
		if tc, err = loops.Adopt(nc, s.params, c); err != nil {
			s.log.Debug("event loop: connection not adopted; it gets a goroutine", "remote", nc.RemoteAddr(), "err", err)
			ntc = netconn.New(nc, s.params, c)
			return ntc, nil
		}
		return tc, nil
	})
	switch {
	case c == nil:
		s.connWG.Done()
	case ntc != nil:
		go func() {
			defer s.connWG.Done()
			ntc.Run()
			s.endConn(c)
		}()
	default:
		// On a goroutine of its own (evloop's promise): endConn runs
		// the ConnState and Observer hooks, which may block.
		tc.Start(c.loopEnded)
	}
}

// loopEnded accounts for a connection an event loop owned, once its socket
// is closed.
func (c *conn) loopEnded() {
	defer c.s.connWG.Done()
	c.s.endConn(c)
}

// setupConn runs the TLS handshake if any, builds the connection over
// its transport (newTransport) and registers it; nil means the connection
// ended already.
func (s *Server) setupConn(base context.Context, nc net.Conn, newTransport func(c *conn, nc net.Conn) (transport, error)) *conn {
	remote := nc.RemoteAddr()
	start := netconn.Now()
	if s.cfg.TLS != nil {
		tc, err := s.handshake(nc)
		if err != nil {
			s.log.Debug("TLS handshake failed", "remote", remote, "err", err)
			s.connEnded(nil, remote, err, start)
			return nil
		}
		nc = tc
	}
	c := &conn{s: s, start: start}
	tc, err := newTransport(c, nc)
	if err != nil {
		s.log.Warn("connection not served", "remote", remote, "err", err)
		nc.Close()
		s.connEnded(nil, remote, err, start)
		return nil
	}
	c.tc = tc
	if s.cfg.ConnState != nil {
		c.report = &stateReport{}
	}
	c.ctx = base
	if s.cfg.ConnContext != nil {
		// On the event loop, hooks and handlers get a net.Conn whose
		// Close closes the connection (see Request.Conn).
		if c.ctx = s.cfg.ConnContext(base, tc.NetConn()); c.ctx == nil {
			panic("server: ConnContext returned a nil context")
		}
	}
	if s.cfg.MaxConnAge > 0 {
		j := 1 + max(s.cfg.MaxConnAgeJitter, 0)*(2*rand.Float64()-1)
		c.expiry = c.tc.Created().Add(time.Duration(float64(s.cfg.MaxConnAge) * j)).UnixNano()
	}
	s.mu.Lock()
	if s.hard {
		s.mu.Unlock()
		c.tc.Close(ErrServerClosed) // its socket: the event loop's copy too
		s.connEnded(nil, remote, ErrServerClosed, start)
		return nil
	}
	c.idx = len(s.conns)
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	c.setState(StateNew)
	if s.shutdown.Load() {
		c.goAway(wire.ReasonShutdown, "server shutting down")
	}
	return c
}

// endConn accounts for a connection whose reader has returned.
func (s *Server) endConn(c *conn) {
	err := c.tc.Err() // what Sink.Closed reported
	c.setState(StateClosed)
	s.connEnded(c, c.tc.NetConn().RemoteAddr(), err, c.start)
}

// handshake runs the TLS handshake, bounded by HandshakeTimeout and cut
// short by Close.
func (s *Server) handshake(nc net.Conn) (*tls.Conn, error) {
	tc := tls.Server(nc, s.cfg.TLS)
	if err := netconn.Handshake(s.hardCtx, tc, s.cfg.Session.HandshakeTimeout); err != nil {
		return nil, err
	}
	return tc, nil
}

// connEnded accounts for a connection that has ended, accepted at start
// (netconn.Now()).
func (s *Server) connEnded(c *conn, remote net.Addr, err error, start int64) {
	s.mu.Lock()
	if c != nil {
		s.forget(c)
		st := c.tc.Stats()
		s.stats.framesIn.Add(st.FramesIn)
		s.stats.bytesIn.Add(st.BytesIn)
		s.stats.framesOut.Add(st.FramesOut)
		s.stats.bytesOut.Add(st.BytesOut)
		s.stats.refusedInFlight.Add(st.RefusedInFlight)
		s.stats.refusedMemory.Add(st.RefusedMemory)
	}
	s.mu.Unlock()
	s.active.Add(-1)
	select {
	case s.gone <- struct{}{}:
	default:
	}
	switch {
	case errors.Is(err, session.ErrPeerDead):
		s.stats.deadPeers.Add(1)
	case errors.Is(err, session.ErrWriteTimeout):
		s.stats.writeTimeouts.Add(1)
	case errors.Is(err, session.ErrControlFlood):
		s.stats.controlFloods.Add(1)
	}
	s.obs.ConnClosed(remote, err, time.Duration(netconn.Now()-start))
}

// forget removes c from the open connections (s.mu held): the last one
// takes its place. A table emptied after a burst of connections gives its
// memory back.
func (s *Server) forget(c *conn) {
	i, last := c.idx, len(s.conns)-1
	s.conns[i] = s.conns[last]
	s.conns[i].idx = i
	s.conns[last] = nil
	s.conns = s.conns[:last]
	if cap(s.conns) > 64 && len(s.conns) < cap(s.conns)/4 {
		s.conns = slices.Clone(s.conns)
	}
}

// maxInterned bounds the method names the server keeps one shared copy
// of; past it (a client inventing names) each new name is its own string.
const maxInterned = 1024

// internMethod returns a shared copy of the method name b, so that
// connections hold a pointer to one string instead of a string each.
func (s *Server) internMethod(b []byte) *string {
	s.namesMu.RLock()
	p, ok := s.names[string(b)]
	s.namesMu.RUnlock()
	if ok {
		return p
	}
	m := string(b)
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if p, ok := s.names[m]; ok {
		return p
	}
	if len(s.names) >= maxInterned {
		return &m
	}
	s.names[m] = &m
	return &m
}

// acquireWorker takes a worker slot if one is free.
func (s *Server) acquireWorker() bool {
	if s.busy.Add(1) > int64(s.cfg.Workers) {
		s.busy.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseWorker() { s.busy.Add(-1) }
