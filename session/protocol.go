package session

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// Role says which side of the connection a Protocol plays. Servers receive
// requests and send responses; clients the reverse.
type Role uint8

const (
	RoleClient Role = iota + 1
	RoleServer
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Handler receives what a Protocol decodes. Its methods are called on the
// goroutine that feeds bytes in and must not block: a server hands requests
// to its worker pool, a client hands responses to the waiting caller. Byte
// slices alias the receive buffer and are valid only during the call.
type Handler interface {
	// HandleRequest is called for each REQUEST a server accepts for
	// processing. The server must call Protocol.Done exactly once for it.
	HandleRequest(id uint64, timeout time.Duration, method, body []byte)
	// HandleResponse is called on a client for each RESPONSE.
	HandleResponse(id uint64, body []byte)
	// HandleError is called on a client for each ERROR about a request.
	HandleError(id uint64, code wire.Code, msg []byte)
	// HandleGoAway is called when the peer announces that it will process
	// no request above lastID.
	HandleGoAway(lastID uint64, reason wire.Reason, msg []byte)
}

// InlineHandler is implemented by a server Handler that can run a request
// on the goroutine that calls it, with the body left in the read buffer.
// The transport uses it for the last request of a read (the common case of
// one request per read): on the connection's reader, saving a goroutine
// hand-off, or, for the first request after an idle spell, on a goroutine
// of its own. body aliases a buffer that stays valid until ServeInline
// returns. The handler must answer the request and call Done
// before returning. A slow request is safe: the transport moves reading to
// another goroutine after a short budget.
type InlineHandler interface {
	ServeInline(id uint64, timeout time.Duration, method, body []byte)
}

// inlineRequest is a request Feed left for the transport to run inline:
// where its method and body sit in the buffer Feed was given.
type inlineRequest struct {
	id                   uint64
	timeoutMillis        uint32
	pending              bool
	methodOff, methodLen uint32
	bodyOff, bodyLen     uint32
}

// TickHandler is implemented by a Handler that wants the monitor's ticks
// (servers use it for the maximum connection age).
type TickHandler interface {
	Tick(now time.Time)
}

// RTTHandler is implemented by a Handler that wants each heartbeat round
// trip measured.
type RTTHandler interface {
	HeartbeatRTT(d time.Duration)
}

// CloseHandler is implemented by a Handler that wants to know when the
// connection has closed and its reader stopped.
type CloseHandler interface {
	ConnClosed(err error)
}

// Protocol is the connection logic with no I/O: received bytes and clock
// ticks go in; decoded requests and responses come out through a Handler,
// and frames to send (PONG, PING, GOAWAY) come out through the send
// function. It tracks liveness, in-flight requests and GOAWAY state. The
// goroutine-per-connection transport (Conn) drives it today; an event loop
// can drive the same logic tomorrow.
//
// Feed is called from one goroutine (the reader), Tick from one goroutine
// (the monitor); GoAway, Done and the accessors are safe from any goroutine.
type Protocol struct {
	role     Role
	pingOut  bool // Tick's own
	inlineOK bool // Feed may leave the last request of its input in inl for the transport to run
	// Under mu: goAway says we sent GOAWAY, peerGoAway that the peer did.
	goAway     bool
	peerGoAway bool
	dec        wire.Decoder
	cfg        *Config
	h          Handler
	send       func([]byte)

	// Liveness. received is set by Feed and consumed by Tick; the rest is
	// Tick's own.
	received atomic.Bool
	// inflight is the number of requests being processed (server) or of
	// answers awaited (client, see Conn.SetAwaited).
	inflight atomic.Int32
	lastRecv atomic.Int64 // clock time of the last bytes received
	pingSent int64
	clock    func() int64 // monotonic nanoseconds: Mono, or a test's fake
	rtt      atomic.Int64 // last heartbeat round trip, nanoseconds

	// partialSince is the monotonic time (see Mono) when the frame now
	// pending started arriving, or 0.
	partialSince atomic.Int64

	mu         sync.Mutex
	highestID  uint64 // server: highest request id received
	lastID     uint64 // the last id in our GOAWAY
	peerLastID uint64

	framesIn atomic.Uint64
	bytesIn  atomic.Uint64

	inl inlineRequest

	// answers counts the RESPONSE, ERROR and GOAWAY frames fed to a
	// client; Feed's goroutine owns it.
	answers uint64
}

// NewProtocol returns the logic for one connection. send is called with
// each control frame to write; it must copy the bytes before returning.
// clock is a monotonic clock in nanoseconds (nil: Mono); tests pass a fake.
func NewProtocol(role Role, cfg Config, h Handler, send func([]byte), clock func() int64) *Protocol {
	p := new(Protocol)
	p.init(role, &sharedFor(cfg).cfg, h, send, clock)
	return p
}

func (p *Protocol) init(role Role, cfg *Config, h Handler, send func([]byte), clock func() int64) {
	if clock == nil {
		clock = Mono
	}
	p.clock = clock
	p.role = role
	p.cfg = cfg
	p.h = h
	p.send = send
	p.dec = wire.Decoder{MaxFrameSize: cfg.MaxFrameSize}
	p.lastRecv.Store(clock())
}

// Arrived records that n bytes arrived from the peer now: any byte proves
// the peer alive. The transport calls it for every read, before Feed.
func (p *Protocol) Arrived(n int) {
	p.received.Store(true)
	p.lastRecv.Store(p.clock())
	p.bytesIn.Add(uint64(n))
}

// Feed decodes every complete frame at the start of b and returns how many
// bytes it consumed. It stops early, leaving bytes unconsumed, before a REQUEST
// when a server connection is at MaxInFlight (Blocked then reports true). A non-nil error
// is fatal to the connection: a *wire.FrameTooLargeError, a
// *wire.ProtocolError, or a *RemoteError for a connection-level ERROR from
// the peer.
func (p *Protocol) Feed(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	consumed := 0
	for consumed < len(b) {
		if p.role == RoleServer && int(p.inflight.Load()) >= p.cfg.MaxInFlight {
			// At the in-flight limit only requests wait: PINGs, PONGs and
			// the rest still flow, so the limit never starves liveness.
			if rest := b[consumed:]; len(rest) < wire.HeaderLen || wire.Type(rest[4]) == wire.TypeRequest {
				break
			}
		}
		f, n, err := p.dec.Next(b[consumed:])
		if err != nil {
			return consumed, err
		}
		if n == 0 {
			break
		}
		consumed += n
		p.framesIn.Add(1)
		if err := p.handle(f, consumed == len(b), b); err != nil {
			return consumed, err
		}
	}
	return consumed, nil
}

// Need reports how many bytes the frame at the start of b needs in total,
// or wire.HeaderLen while its header is incomplete.
func (p *Protocol) Need(b []byte) int {
	if len(b) < wire.HeaderLen {
		return wire.HeaderLen
	}
	h, err := wire.ParseHeader(b)
	if err != nil {
		return wire.HeaderLen
	}
	return wire.HeaderLen + int(h.Length)
}

func protoErr(format string, args ...any) error {
	return &wire.ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// idNotAbove is the error for a request id that does not increase; kept
// out of handleRequest so that formatting it costs the common request no
// stack.
//
//go:noinline
func idNotAbove(id, highest uint64) error {
	return protoErr("request id %d not above %d", id, highest)
}

func (p *Protocol) handle(f wire.Frame, last bool, in []byte) error {
	// One small function per type keeps each path's stack frame small: the
	// reader's stack must not grow on the way to a request.
	switch f.Type {
	case wire.TypeRequest:
		return p.handleRequest(f, last, in)
	case wire.TypeResponse:
		if p.role != RoleClient {
			return protoErr("RESPONSE sent to a server")
		}
		p.answers++
		p.h.HandleResponse(f.ID, f.Payload)
		return nil
	case wire.TypePing:
		return p.handlePing(f)
	case wire.TypePong:
		return p.handlePong(f)
	case wire.TypeError:
		return p.handleError(f)
	case wire.TypeGoAway:
		return p.handleGoAway(f)
	}
	return protoErr("unknown frame type %d", f.Type)
}

func (p *Protocol) handleRequest(f wire.Frame, last bool, in []byte) error {
	if p.role != RoleServer {
		return protoErr("REQUEST sent to a client")
	}
	timeout, method, body, err := wire.ParseRequest(f.Payload)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if f.ID <= p.highestID {
		p.mu.Unlock()
		return idNotAbove(f.ID, p.highestID)
	}
	p.highestID = f.ID
	if p.goAway {
		// Above the id in our GOAWAY: never processed; the peer retries
		// it elsewhere.
		p.mu.Unlock()
		return nil
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	if last && p.inlineOK {
		// The last frame of the read owns the whole buffer: the transport
		// runs it without copying its body.
		p.inl = inlineRequest{
			id: f.ID, timeoutMillis: timeout, pending: true,
			methodOff: uint32(len(in) - len(f.Payload) + 5), methodLen: uint32(len(method)),
			bodyOff: uint32(len(in) - len(body)), bodyLen: uint32(len(body)),
		}
		return nil
	}
	p.h.HandleRequest(f.ID, time.Duration(timeout)*time.Millisecond, method, body)
	return nil
}

// takeInline returns the request Feed left pending and clears it.
func (p *Protocol) takeInline() inlineRequest {
	r := p.inl
	p.inl = inlineRequest{}
	return r
}

// in returns the request's fields in b, the buffer Feed was given.
func (r *inlineRequest) in(b []byte) (id uint64, timeout time.Duration, method, body []byte) {
	return r.id, time.Duration(r.timeoutMillis) * time.Millisecond,
		b[r.methodOff : r.methodOff+r.methodLen], b[r.bodyOff : r.bodyOff+r.bodyLen]
}

func (p *Protocol) handlePing(f wire.Frame) error {
	data, err := wire.ParsePing(f.Payload)
	if err != nil {
		return err
	}
	var b [wire.HeaderLen + 8]byte
	p.send(wire.AppendPong(b[:0], data))
	return nil
}

func (p *Protocol) handlePong(f wire.Frame) error {
	data, err := wire.ParsePing(f.Payload)
	if err != nil {
		return err
	}
	if rtt := p.clock() - int64(data); rtt >= 0 {
		p.rtt.Store(rtt)
		if r, ok := p.h.(RTTHandler); ok {
			r.HeartbeatRTT(time.Duration(rtt))
		}
	}
	return nil
}

func (p *Protocol) handleError(f wire.Frame) error {
	code, msg, err := wire.ParseError(f.Payload)
	if err != nil {
		return err
	}
	if f.ID == 0 {
		return &RemoteError{Code: code, Message: string(msg)}
	}
	if p.role != RoleClient {
		return protoErr("ERROR for a request sent to a server")
	}
	p.answers++
	p.h.HandleError(f.ID, code, msg)
	return nil
}

func (p *Protocol) handleGoAway(f wire.Frame) error {
	if p.role != RoleClient {
		return protoErr("GOAWAY sent to a server")
	}
	lastID, reason, msg, err := wire.ParseGoAway(f.Payload)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.peerGoAway = true
	p.peerLastID = lastID
	p.mu.Unlock()
	p.answers++
	p.h.HandleGoAway(lastID, reason, msg)
	return nil
}

// Tick advances the protocol's clock: it sends a PING when nothing was
// received for HeartbeatInterval and reports ErrPeerDead when nothing
// answered it within HeartbeatTimeout, or ErrFrameTimeout when a frame has
// been arriving for longer than FrameReadTimeout. Received bytes are timed
// as they arrive, so a silent peer is declared dead at most one tick after
// HeartbeatInterval+HeartbeatTimeout (or one tick after the PING, if that
// went out late).
func (p *Protocol) Tick() error {
	now := p.clock()
	if since := p.partialSince.Load(); since != 0 && time.Duration(now-since) >= p.cfg.FrameReadTimeout {
		return ErrFrameTimeout
	}
	if !p.cfg.heartbeats() {
		return nil
	}
	last := p.lastRecv.Load()
	if p.pingOut && last > p.pingSent {
		p.pingOut = false // something arrived after the PING: alive
	}
	if p.pingOut {
		if time.Duration(now-p.pingSent) >= p.cfg.HeartbeatTimeout {
			return ErrPeerDead
		}
		return nil
	}
	if time.Duration(now-last) >= p.cfg.HeartbeatInterval {
		p.pingOut = true
		p.pingSent = now
		var b [wire.HeaderLen + 8]byte
		p.send(wire.AppendPing(b[:0], uint64(now)))
	}
	return nil
}

// Idle reports, and resets, whether nothing was received since the last
// call: the transport asks once per tick.
func (p *Protocol) Idle() bool { return !p.received.Swap(false) }

// MarkPartial records that a frame has started arriving and is incomplete;
// fresh says it is a new frame rather than the one already pending.
func (p *Protocol) MarkPartial(fresh bool) {
	if fresh || p.partialSince.Load() == 0 {
		p.partialSince.Store(p.clock())
	}
}

// ClearPartial records that no frame is pending.
func (p *Protocol) ClearPartial() {
	if p.partialSince.Load() != 0 {
		p.partialSince.Store(0)
	}
}

// GoAway announces that no request above the highest one received so far
// will be processed and returns that id. Later calls return the same id
// without sending anything again.
func (p *Protocol) GoAway(reason wire.Reason, msg string) (lastID uint64, first bool) {
	p.mu.Lock()
	if p.goAway {
		lastID = p.lastID
		p.mu.Unlock()
		return lastID, false
	}
	p.goAway = true
	p.lastID = p.highestID
	lastID = p.lastID
	p.mu.Unlock()
	p.send(wire.AppendGoAway(nil, lastID, reason, msg))
	return lastID, true
}

// Done records that a request handed to HandleRequest has been answered and
// returns the number still in flight.
func (p *Protocol) Done() int { return int(p.inflight.Add(-1)) }

// InFlight is the number of requests being processed (server side), or of
// answers awaited (client side, as the client reports them).
func (p *Protocol) InFlight() int { return int(p.inflight.Load()) }

// Blocked reports whether a server connection is at MaxInFlight, so its
// reader must wait for Done before feeding more.
func (p *Protocol) Blocked() bool {
	return p.role == RoleServer && int(p.inflight.Load()) >= p.cfg.MaxInFlight
}

// GoingAway reports whether we sent GOAWAY, and the last id it carried.
func (p *Protocol) GoingAway() (bool, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.goAway, p.lastID
}

// PeerGoingAway reports whether the peer sent GOAWAY, and its last id.
func (p *Protocol) PeerGoingAway() (bool, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peerGoAway, p.peerLastID
}

// SinceReceived is how long ago bytes last arrived.
func (p *Protocol) SinceReceived() time.Duration {
	return time.Duration(p.clock() - p.lastRecv.Load())
}

// RTT is the round trip of the last answered heartbeat, or 0.
func (p *Protocol) RTT() time.Duration { return time.Duration(p.rtt.Load()) }

// FramesIn and BytesIn count what was received.
func (p *Protocol) FramesIn() uint64 { return p.framesIn.Load() }
func (p *Protocol) BytesIn() uint64  { return p.bytesIn.Load() }

// Role is the side this protocol plays.
func (p *Protocol) Role() Role { return p.role }

var monoBase = time.Now()

// Mono is a monotonic clock in nanoseconds, for heartbeat payloads and
// stall timers.
func Mono() int64 { return int64(time.Since(monoBase)) }

// monoOf returns t on Mono's scale, at least 1, or 0 for the zero time.
func monoOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(monoBase)), 1)
}
