package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// The server's life after Serve: Shutdown, Close, going out of service and
// back, draining, readiness, and the ager of connections.

// Shutdown stops the server gracefully: it tells Config.OnServiceChange
// that the server leaves service (if it was in service), turns not ready
// and, for Config.DrainDelay (default none; none either if SetOffline or
// Drain took the server out of service before), refuses new connections
// with SHUTTING_DOWN while the open ones still serve; then it closes the
// listeners, sends GOAWAY on every connection (announcing the last
// request it will process), lets in-flight requests finish and be
// written, and closes each connection as it empties. It returns when
// every connection is closed, or when ctx ends; then the remaining
// connections are closed at once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	d := s.DrainDelay()
	s.leaveService(true)
	if d > 0 {
		// Out of service first: new connections are refused while
		// balancers and registries catch up; the open ones still serve.
		s.leaving.Store(true)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.closing: // Close
		}
		t.Stop()
	}
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

// DrainDelay is how long Shutdown, called now, would wait before GOAWAY:
// Config.DrainDelay, or none once SetOffline or Drain took the server out
// of service, or once it is shutting down. A caller that gives Shutdown a
// hard deadline for its connections adds it.
func (s *Server) DrainDelay() time.Duration {
	if s.offline.Load() || s.shutdown.Load() {
		return 0
	}
	return s.cfg.DrainDelay
}

// Close tells Config.OnServiceChange that the server leaves service (if
// it was in service), then closes the listeners and every connection at
// once, releasing their descriptors even while handlers are stuck (their
// contexts are cancelled and their answers dropped). Requests in flight fail at the clients with
// a connection error.
func (s *Server) Close() error {
	s.leaveService(true)
	s.beginShutdown()
	s.closeConns()
	s.finish()
	return nil
}

// SetOffline takes the server out of service (true) or puts it back
// (false). Offline, it keeps its listeners but answers every new connection
// with a connection-level ERROR SHUTTING_DOWN and closes it, so clients move
// to other servers at once; open connections are left alone (Drain moves
// them too). Going back online also ends a Drain. Config.OnServiceChange
// is told first when the server goes offline, last when it comes back.
func (s *Server) SetOffline(offline bool) {
	if offline {
		s.svcMu.Lock()
		defer s.svcMu.Unlock()
		s.leaveServiceLocked(false)
		s.offline.Store(true)
		return
	}
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	s.offline.Store(false)
	s.draining.Store(false)
	if s.outOfSvc && !s.final {
		s.outOfSvc = false
		if s.cfg.OnServiceChange != nil {
			s.cfg.OnServiceChange(true)
		}
	}
}

// leaveService tells Config.OnServiceChange that the server leaves
// service, unless it was told already; final (Shutdown, Close) means for
// good.
func (s *Server) leaveService(final bool) {
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	s.leaveServiceLocked(final)
}

func (s *Server) leaveServiceLocked(final bool) {
	s.final = s.final || final
	if s.outOfSvc {
		return
	}
	s.outOfSvc = true
	if s.cfg.OnServiceChange != nil {
		s.cfg.OnServiceChange(false)
	}
}

// Drain is the graceful shutdown sequence without exiting: the server goes
// offline and sends GOAWAY on every open connection; clients move their new
// requests elsewhere while in-flight ones finish. SetOffline(false) puts it
// back in service. Config.OnServiceChange is told first.
func (s *Server) Drain(reason wire.Reason) {
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	s.leaveServiceLocked(false)
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
	return slices.Clone(s.conns)
}

// Ready reports whether the server should receive traffic: it is accepting
// on at least one listener and is neither offline, draining nor shutting
// down. When not ready, reason says why.
func (s *Server) Ready() (ready bool, reason string) {
	s.mu.Lock()
	listening := len(s.listeners) > 0
	s.mu.Unlock()
	switch {
	case s.shutdown.Load() || s.leaving.Load():
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
	rejecting := make([]*rejected, 0, len(s.rejecting))
	for r := range s.rejecting {
		rejecting = append(rejecting, r)
	}
	s.mu.Unlock()
	for _, r := range rejecting {
		r.close() // a refusal's lingering is cut short
	}
	// A connection still in its TLS handshake has no request to finish:
	// neither Shutdown nor Close waits for its HandshakeTimeout.
	s.hardStop()
}

func (s *Server) closeConns() {
	s.mu.Lock()
	s.hard = true
	s.mu.Unlock()
	s.hardStop()
	for _, c := range s.snapshot() {
		c.tc.Close(fmt.Errorf("%w: server closed", session.ErrConnClosed))
	}
}

// finish waits for the connection goroutines and the ager, stops the
// event loops, and ends the handler pool's idle goroutines (those still
// running a handler end after it).
func (s *Server) finish() {
	s.connWG.Wait()
	s.rejectWG.Wait()
	s.ageWG.Wait()
	s.reserve.close()
	s.hardStop()
	s.loops.Close() // none may start from now on
	s.pool.Close()
}

// age is the ager: it enforces every connection's maximum age, checking
// them about every second (a tenth of the grace period if shorter).
func (s *Server) age() {
	defer s.ageWG.Done()
	every := min(time.Second, max(s.cfg.MaxConnAgeGrace/10, 10*time.Millisecond), max(s.cfg.MaxConnAge/10, 10*time.Millisecond))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case now := <-t.C:
			ns := now.UnixNano()
			for _, c := range s.snapshot() {
				c.age(ns)
			}
		}
	}
}
