// Package server is tcppro's server: an accept loop with a connection cap
// and explicit BUSY rejection, a bounded worker pool for handlers,
// heartbeats and deadlines on every connection (package session), maximum
// connection age, and a graceful Shutdown modelled on net/http's.
//
//	srv, err := server.New(server.DefaultConfig(), handler)
//	go srv.ListenAndServe()
//	...
//	srv.Shutdown(ctx) // GOAWAY, finish in-flight work, close
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	cfg      Config
	handler  Handler
	log      *slog.Logger
	obs      Observer
	observed bool // an Observer was configured: requests are timed for it
	mon      *session.Monitor

	busyFrame    []byte
	offlineFrame []byte

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	rejecting map[net.Conn]struct{}
	closing   chan struct{} // closed by Shutdown and Close
	gone      chan struct{} // a connection ended (cap 1)

	active   atomic.Int64
	shutdown atomic.Bool
	offline  atomic.Bool
	draining atomic.Bool
	closeMu  sync.Once
	rejectWG sync.WaitGroup
	connWG   sync.WaitGroup

	namesMu sync.RWMutex
	names   map[string]*string // interned method names

	stats stats

	// Written by every request from every CPU: on a cache line of their
	// own, so that these writes do not evict the fields around them,
	// which every request reads, from the other CPUs' caches.
	_        cpu.CacheLinePad
	busy     atomic.Int64  // workers in use
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
		cfg:          cfg,
		handler:      h,
		log:          cfg.Logger,
		obs:          cfg.Observer,
		mon:          session.NewMonitor(cfg.Session.TickInterval()),
		listeners:    make(map[*net.Listener]struct{}),
		conns:        make(map[*conn]struct{}),
		rejecting:    make(map[net.Conn]struct{}),
		names:        make(map[string]*string),
		closing:      make(chan struct{}),
		gone:         make(chan struct{}, 1),
		busyFrame:    wire.AppendError(nil, 0, wire.CodeBusy, fmt.Sprintf("server at its connection cap (%d)", cfg.MaxConns)),
		offlineFrame: wire.AppendError(nil, 0, wire.CodeShuttingDown, "server offline"),
	}
	s.observed = s.obs != nil
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	return s, nil
}

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
	ln, err := netx.ListenConfig{AllowEphemeralPort: s.cfg.AllowEphemeralPort, FS: s.cfg.FS}.Listen(context.Background(), s.cfg.Addr)
	if err != nil {
		if errors.Is(err, netx.ErrEphemeralPort) {
			s.obs.ConnRejected(RejectPortPolicy)
		}
		return err
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Serve closes ln. Temporary accept errors (such as
// EMFILE) pause the loop, doubling from AcceptBackoffMin to
// AcceptBackoffMax, instead of spinning.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)
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
			delay = min(max(2*delay, s.cfg.AcceptBackoffMin), s.cfg.AcceptBackoffMax)
			s.stats.acceptErrors.Add(1)
			s.obs.ConnRejected(RejectAcceptError)
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
		s.serveConn(nc)
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
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) serveConn(nc net.Conn) {
	if s.offline.Load() {
		s.stats.rejectedOffline.Add(1)
		s.obs.ConnRejected(RejectOffline)
		s.reject(nc, s.offlineFrame)
		return
	}
	if s.active.Load() >= int64(s.cfg.MaxConns) {
		s.stats.rejectedBusy.Add(1)
		s.obs.ConnRejected(RejectBusy)
		s.reject(nc, s.busyFrame)
		return
	}
	if err := s.cfg.Socket.Apply(nc); err != nil {
		s.log.Warn("socket options", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	c := &conn{s: s, remote: nc.RemoteAddr()}
	sc, err := session.NewConn(nc, session.RoleServer, s.cfg.Session, c)
	if err != nil {
		s.log.Warn("connection setup", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	c.sc = sc
	if s.cfg.MaxConnAge > 0 {
		j := 1 + s.cfg.MaxConnAgeJitter*(2*rand.Float64()-1)
		c.expiry = sc.Created().Add(time.Duration(float64(s.cfg.MaxConnAge) * j)).UnixNano()
	}
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.active.Add(1)
	s.connWG.Add(1)
	s.mu.Unlock()
	s.stats.accepted.Add(1)
	s.obs.ConnOpened(c.remote)
	s.mon.Add(sc)
	go c.run()
}

// reject answers a connection with a connection-level ERROR frame (BUSY
// over the cap, SHUTTING_DOWN while offline) and closes it. The socket is
// half-closed and drained for RejectLinger so that the frame is read before
// any reset the client's unread request would cause.
func (s *Server) reject(nc net.Conn, frame []byte) {
	_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := nc.Write(frame); err != nil {
		nc.Close()
		return
	}
	tc, ok := nc.(*net.TCPConn)
	s.mu.Lock()
	if !ok || len(s.rejecting) >= maxLingering || s.shutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.rejecting[nc] = struct{}{}
	s.rejectWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.rejectWG.Done()
		_ = tc.CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(s.cfg.RejectLinger))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
		nc.Close()
		s.mu.Lock()
		delete(s.rejecting, nc)
		s.mu.Unlock()
	}()
}

// maxLingering bounds the rejected connections kept half-closed at once;
// beyond it they are closed at once.
const maxLingering = 256

// Shutdown stops the server gracefully: it closes the listeners, sends
// GOAWAY on every connection (announcing the last request it will
// process), lets in-flight requests finish and be written, and closes each
// connection as it empties. It returns when every connection is closed, or
// when ctx ends; then the remaining connections are closed at once and
// ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	for _, c := range s.snapshot() {
		c.goAway(wire.ReasonShutdown, "server shutting down")
	}
	for s.active.Load() > 0 {
		select {
		case <-s.gone:
		case <-ctx.Done():
			s.closeConns()
			s.finish()
			return ctx.Err()
		}
	}
	s.finish()
	return nil
}

// Close closes the listeners and every connection at once. Requests in
// flight fail at the clients with a connection error.
func (s *Server) Close() error {
	s.beginShutdown()
	s.closeConns()
	s.finish()
	return nil
}

// SetOffline takes the server out of service (true) or puts it back
// (false). Offline, it keeps its listeners but answers every new connection
// with a connection-level ERROR SHUTTING_DOWN and closes it, so clients move
// to other servers at once; open connections are left alone (Drain moves
// them too). Going back online also ends a Drain.
func (s *Server) SetOffline(offline bool) {
	s.offline.Store(offline)
	if !offline {
		s.draining.Store(false)
	}
}

// Drain is the graceful shutdown sequence without exiting: the server goes
// offline and sends GOAWAY on every open connection; clients move their new
// requests elsewhere while in-flight ones finish. SetOffline(false) puts it
// back in service.
func (s *Server) Drain(reason wire.Reason) {
	s.offline.Store(true)
	s.draining.Store(true)
	for _, c := range s.snapshot() {
		c.goAway(reason, "server draining")
	}
}

// snapshot returns the open connections, so that they can be acted on
// without holding s.mu (an Observer called meanwhile may call Stats).
func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Ready reports whether the server should receive traffic: it is accepting
// on at least one listener and is neither offline, draining nor shutting
// down. When not ready, reason says why.
func (s *Server) Ready() (ready bool, reason string) {
	s.mu.Lock()
	listening := len(s.listeners) > 0
	s.mu.Unlock()
	switch {
	case s.shutdown.Load():
		return false, "shutting down"
	case s.draining.Load():
		return false, "draining"
	case s.offline.Load():
		return false, "offline"
	case !listening:
		return false, "not listening"
	}
	return true, ""
}

func (s *Server) beginShutdown() {
	s.mu.Lock()
	s.shutdown.Store(true)
	s.closeMu.Do(func() { close(s.closing) })
	for ln := range s.listeners {
		(*ln).Close()
	}
	for nc := range s.rejecting {
		_ = nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
}

func (s *Server) closeConns() {
	for _, c := range s.snapshot() {
		c.sc.Close(fmt.Errorf("%w: server closed", session.ErrConnClosed))
	}
}

// finish waits for the connection goroutines and stops the monitor.
func (s *Server) finish() {
	s.connWG.Wait()
	s.rejectWG.Wait()
	s.mon.Close()
}

func (s *Server) removeConn(c *conn, err error) {
	s.mu.Lock()
	delete(s.conns, c)
	p := c.sc.Protocol()
	s.stats.framesIn.Add(p.FramesIn())
	s.stats.bytesIn.Add(p.BytesIn())
	s.stats.framesOut.Add(c.sc.FramesOut())
	s.stats.bytesOut.Add(c.sc.BytesOut())
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
	}
	s.obs.ConnClosed(c.remote, err, time.Since(c.sc.Created()))
	s.connWG.Done()
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
