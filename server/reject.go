package server

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/wire"
)

// reject refuses a connection (BUSY over the cap, SHUTTING_DOWN while
// offline) through the protocol core's Refuse: the connection-level ERROR
// instead of HELLO, then FIN, reading and discarding what the client sends
// until its FIN or RejectLinger, so that the ERROR is read before any reset
// the client's unread HELLO would cause. Over TLS the ERROR goes inside the
// TLS session, after its handshake (bounded by RejectLinger too).
func (s *Server) reject(nc net.Conn, code wire.Code, msg string) {
	s.mu.Lock()
	if len(s.rejecting) >= maxLingering || s.shutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	r := &rejected{nc: nc}
	s.rejecting[r] = struct{}{}
	s.rejectWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.rejectWG.Done()
		defer func() {
			s.mu.Lock()
			delete(s.rejecting, r)
			s.mu.Unlock()
		}()
		conn := nc
		if s.cfg.TLS != nil {
			tc := tls.Server(nc, s.cfg.TLS)
			if netconn.Handshake(s.hardCtx, tc, s.cfg.RejectLinger) != nil {
				return
			}
			conn = tc
		}
		s.refuse(r, conn, code, msg, s.cfg.RejectLinger)
	}()
}

// rejected is a connection being refused; Close cuts its lingering short.
type rejected struct {
	nc net.Conn
	mu sync.Mutex
	tc *netconn.Conn
}

func (r *rejected) close() {
	r.mu.Lock()
	tc := r.tc
	r.mu.Unlock()
	if tc != nil {
		tc.Close(ErrServerClosed)
	} else {
		r.nc.Close()
	}
}

// refuse runs the refusal of conn on this goroutine until it ends.
func (s *Server) refuse(r *rejected, conn net.Conn, code wire.Code, msg string, linger time.Duration) {
	cfg := s.cfg.Session
	cfg.LingerTimeout, cfg.HandshakeTimeout = linger, linger
	tc := netconn.New(conn, core.NewParams(core.Server, cfg, core.Options{}), refusal{})
	r.mu.Lock()
	r.tc = tc
	r.mu.Unlock()
	tc.Refuse(code, msg)
	tc.Run()
}

// refusal is the core.Sink of a refused connection: nothing happens on it.
type refusal struct{}

func (refusal) Ready(wire.Hello)                                  {}
func (refusal) Request(core.Incoming) bool                        { return false }
func (refusal) Cancelled(uint64)                                  {}
func (refusal) CallDone(*core.Call, []byte, wire.Metadata, error) {}
func (refusal) GoAway(uint64, wire.Reason, []byte)                {}
func (refusal) Closed(error)                                      {}
func (refusal) HeartbeatRTT(time.Duration)                        {}

// maxLingering bounds the rejected connections kept half-closed at once;
// beyond it they are closed at once.
const maxLingering = 256

// fdExhausted reports an accept error caused by the open-file limit.
func fdExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// reserveFD is a descriptor kept open so that, at the open-file limit, it
// can be given up to accept a waiting connection and tell it BUSY.
type reserveFD struct {
	mu     sync.Mutex
	fd     int
	held   bool
	closed bool // the server has finished: never taken again
}

// open takes the reserve descriptor, if it is not held and one is free.
func (r *reserveFD) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held || r.closed {
		return
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err == nil {
		r.fd, r.held = fd, true
	}
}

// release closes the reserve descriptor, reporting whether there was one.
func (r *reserveFD) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		return false
	}
	syscall.Close(r.fd)
	r.held = false
	return true
}

func (r *reserveFD) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.release()
}

// rejectWithReserve gives up the reserve descriptor to accept one waiting
// connection, answers it BUSY (a plain connection; over TLS it is only
// closed: a handshake would take too long), and takes the reserve back.
// It reports whether a connection was refused so.
func (s *Server) rejectWithReserve(ln net.Listener) bool {
	if !s.reserve.release() {
		s.reserve.open() // lost to another goroutine earlier: take it back if one is free
		return false
	}
	defer s.reserve.open()
	if dl, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		// The connection that met EMFILE may be gone: do not wait for the
		// next one without the reserve.
		_ = dl.SetDeadline(time.Now().Add(rejectAtLimitLinger))
		defer dl.SetDeadline(time.Time{})
	}
	nc, err := ln.Accept()
	if err != nil {
		return false
	}
	s.stats.rejectedBusy.Add(1)
	s.obs.ConnRejected(RejectBusy)
	if s.cfg.TLS != nil {
		nc.Close()
		return true
	}
	s.refuse(&rejected{nc: nc}, nc, wire.CodeBusy, "server at its open-file limit", rejectAtLimitLinger)
	return true
}

// rejectAtLimitLinger bounds how long the accept loop lingers on a
// connection it refuses at the open-file limit, for the client to read
// BUSY and close first.
const rejectAtLimitLinger = 20 * time.Millisecond
