package server

import (
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// Rejection reasons reported to an Observer.
const (
	RejectBusy        = "busy"         // over MaxConns (or at the open-file limit): BUSY
	RejectOffline     = "offline"      // offline or draining: SHUTTING_DOWN
	RejectAcceptError = "accept_error" // a temporary accept error (EMFILE...)
	RejectPortPolicy  = "port_policy"  // ListenAndServe refused its port
)

// Observer is told about connection events, for metrics (requests are
// observed with an Interceptor). Its methods are called on the server's
// hot paths and must be fast and safe for concurrent use.
type Observer interface {
	ConnOpened(remote net.Addr)
	// ConnClosed reports why a connection ended (session.ErrPeerDead,
	// session.ErrWriteTimeout, session.ErrControlFlood, ...; nil after a
	// graceful end) and its age.
	ConnClosed(remote net.Addr, err error, age time.Duration)
	ConnRejected(reason string)
	GoAwaySent(reason wire.Reason)
	// HeartbeatRTT reports a heartbeat round trip.
	HeartbeatRTT(d time.Duration)
}

type nopObserver struct{}

func (nopObserver) ConnOpened(net.Addr)                       {}
func (nopObserver) ConnClosed(net.Addr, error, time.Duration) {}
func (nopObserver) ConnRejected(string)                       {}
func (nopObserver) GoAwaySent(wire.Reason)                    {}
func (nopObserver) HeartbeatRTT(time.Duration)                {}

type stats struct {
	accepted, rejectedBusy, acceptErrors atomic.Uint64
	deadPeers, writeTimeouts, goAways    atomic.Uint64
	controlFloods                        atomic.Uint64
	overloaded                           atomic.Uint64
	rejectedOffline                      atomic.Uint64
	// Of closed connections; live ones are summed on demand.
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	refusedInFlight, refusedMemory         atomic.Uint64
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Active          int64  // connections open now
	Accepted        uint64 // connections accepted
	RejectedBusy    uint64 // connections refused with BUSY over MaxConns or at the open-file limit
	RejectedOffline uint64 // connections refused while offline or draining
	AcceptErrors    uint64 // temporary accept errors
	DeadPeers       uint64 // connections closed by the heartbeat (ErrPeerDead)
	WriteTimeouts   uint64 // connections cut because the peer stopped reading
	ControlFloods   uint64 // connections closed for flooding control frames (ErrControlFlood)
	GoAways         uint64 // GOAWAY frames sent
	Requests        uint64 // requests answered
	Overloaded      uint64 // requests refused because every worker was busy
	RefusedInFlight uint64 // requests refused beyond a connection's MaxInFlight
	RefusedMemory   uint64 // requests refused at the memory budget (connection or server)
	MemoryHeld      int64  // bytes held for all connections now (requests and answers)
	WorkersBusy     int64  // handlers running now
	Workers         int    // the worker pool's size
	InFlight        int64  // requests being processed, all connections
	FramesIn        uint64 // frames received, all connections
	FramesOut       uint64 // frames sent
	BytesIn         uint64 // bytes received
	BytesOut        uint64 // bytes sent
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Active:          s.active.Load(),
		Accepted:        s.stats.accepted.Load(),
		RejectedBusy:    s.stats.rejectedBusy.Load(),
		RejectedOffline: s.stats.rejectedOffline.Load(),
		AcceptErrors:    s.stats.acceptErrors.Load(),
		DeadPeers:       s.stats.deadPeers.Load(),
		WriteTimeouts:   s.stats.writeTimeouts.Load(),
		ControlFloods:   s.stats.controlFloods.Load(),
		GoAways:         s.stats.goAways.Load(),
		Requests:        s.requests.Load(),
		Overloaded:      s.stats.overloaded.Load(),
		MemoryHeld:      s.budget.Used(),
		WorkersBusy:     s.busy.Load(),
		Workers:         s.cfg.Workers,
	}
	s.mu.Lock()
	st.FramesIn = s.stats.framesIn.Load()
	st.FramesOut = s.stats.framesOut.Load()
	st.BytesIn = s.stats.bytesIn.Load()
	st.BytesOut = s.stats.bytesOut.Load()
	st.RefusedInFlight = s.stats.refusedInFlight.Load()
	st.RefusedMemory = s.stats.refusedMemory.Load()
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	for _, c := range conns {
		cs := c.tc.Stats()
		st.InFlight += int64(cs.InFlight)
		st.FramesIn += cs.FramesIn
		st.BytesIn += cs.BytesIn
		st.FramesOut += cs.FramesOut
		st.BytesOut += cs.BytesOut
		st.RefusedInFlight += cs.RefusedInFlight
		st.RefusedMemory += cs.RefusedMemory
	}
	return st
}
