package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// reject answers a connection with a connection-level ERROR frame (BUSY
// over the cap, SHUTTING_DOWN while offline) instead of HELLO, and closes
// it. The socket is half-closed and drained for RejectLinger so that the
// frame is read before any reset the client's unread HELLO would cause.
// Over TLS the frame goes inside the TLS session, after its handshake.
func (s *Server) reject(nc net.Conn, frame []byte) {
	s.mu.Lock()
	if len(s.rejecting) >= maxLingering || s.shutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.rejecting[nc] = struct{}{}
	s.rejectWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.rejectWG.Done()
		deadline := time.Now().Add(s.cfg.RejectLinger)
		_ = nc.SetDeadline(deadline)
		w := nc
		if s.cfg.TLS != nil {
			tc := tls.Server(nc, s.cfg.TLS)
			if tc.Handshake() != nil {
				s.endReject(nc)
				return
			}
			w = tc
		}
		if _, err := w.Write(frame); err == nil {
			if cw, ok := w.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(w, 64<<10))
		}
		s.endReject(nc)
	}()
}

func (s *Server) endReject(nc net.Conn) {
	nc.Close()
	s.mu.Lock()
	delete(s.rejecting, nc)
	s.mu.Unlock()
}

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
	mu   sync.Mutex
	fd   int
	held bool
}

// open takes the reserve descriptor, if it is not held and one is free.
func (r *reserveFD) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
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

func (r *reserveFD) close() { r.release() }

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
	if s.cfg.TLS == nil {
		_ = nc.SetDeadline(time.Now().Add(rejectAtLimitLinger))
		if _, err := nc.Write(s.fdLimitFrame); err == nil {
			if cw, ok := nc.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(nc, 16<<10))
		}
	}
	nc.Close()
	return true
}

// rejectAtLimitLinger bounds how long the accept loop lingers on a
// connection it refuses at the open-file limit, for the client to read
// BUSY and close first.
const rejectAtLimitLinger = 20 * time.Millisecond
