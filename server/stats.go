package server

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// Rejection reasons reported to an Observer.
const (
	RejectBusy        = "busy"         // over MaxConns: BUSY
	RejectOffline     = "offline"      // offline or draining: SHUTTING_DOWN
	RejectAcceptError = "accept_error" // a temporary accept error (EMFILE...)
	RejectPortPolicy  = "port_policy"  // ListenAndServe refused its port
)

// Observer is told about connection and request events, for metrics. Its
// methods are called on the server's hot paths and must be fast and safe
// for concurrent use.
type Observer interface {
	ConnOpened(remote net.Addr)
	// ConnClosed reports why a connection ended (session.ErrPeerDead,
	// session.ErrWriteTimeout, ...) and its age.
	ConnClosed(remote net.Addr, err error, age time.Duration)
	ConnRejected(reason string)
	// RequestDone reports a finished request; code is 0 for success.
	RequestDone(method string, code wire.Code, d time.Duration)
	GoAwaySent(reason wire.Reason)
	// HeartbeatRTT reports a heartbeat round trip.
	HeartbeatRTT(d time.Duration)
}

type nopObserver struct{}

func (nopObserver) ConnOpened(net.Addr)                          {}
func (nopObserver) ConnClosed(net.Addr, error, time.Duration)    {}
func (nopObserver) ConnRejected(string)                          {}
func (nopObserver) RequestDone(string, wire.Code, time.Duration) {}
func (nopObserver) GoAwaySent(wire.Reason)                       {}
func (nopObserver) HeartbeatRTT(time.Duration)                   {}

type stats struct {
	accepted, rejectedBusy, acceptErrors atomic.Uint64
	deadPeers, writeTimeouts, goAways    atomic.Uint64
	overloaded                           atomic.Uint64
	rejectedOffline                      atomic.Uint64
	// Traffic of closed connections; live ones are summed on demand.
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Active          int64  // connections open now
	Accepted        uint64 // connections accepted
	RejectedBusy    uint64 // connections refused with BUSY over MaxConns
	RejectedOffline uint64 // connections refused while offline or draining
	AcceptErrors    uint64 // temporary accept errors (each paused the loop)
	DeadPeers       uint64 // connections closed by the heartbeat (ErrPeerDead)
	WriteTimeouts   uint64 // connections cut because the peer stopped reading
	GoAways         uint64 // GOAWAY frames sent
	Requests        uint64 // requests answered
	Overloaded      uint64 // requests refused because every worker was busy
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
		GoAways:         s.stats.goAways.Load(),
		Requests:        s.requests.Load(),
		Overloaded:      s.stats.overloaded.Load(),
		WorkersBusy:     s.busy.Load(),
		Workers:         s.cfg.Workers,
		FramesIn:        s.stats.framesIn.Load(),
		FramesOut:       s.stats.framesOut.Load(),
		BytesIn:         s.stats.bytesIn.Load(),
		BytesOut:        s.stats.bytesOut.Load(),
	}
	s.mu.Lock()
	for c := range s.conns {
		p := c.sc.Protocol()
		st.InFlight += int64(p.InFlight())
		st.FramesIn += p.FramesIn()
		st.BytesIn += p.BytesIn()
		st.FramesOut += c.sc.FramesOut()
		st.BytesOut += c.sc.BytesOut()
	}
	s.mu.Unlock()
	return st
}
