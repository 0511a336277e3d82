// Package core is tcppro's protocol core: every rule of docs/protocol.md for
// one connection, as a single-owner state machine with no I/O.
//
// A Conn holds all the protocol state of one connection: the HELLO exchange,
// request ids, calls and requests in flight, message assembly and chunking,
// heartbeats and liveness, the write queue and its bounds, the memory held
// for the peer, GOAWAY and last ids, cancellation, and closing. It has no
// goroutines, no locks, no sockets and never reads a clock. Its inputs are
// bytes received (Receive, ReceiveEOF), the time (every method takes the
// current time; Tick fires the timers) and commands (Call, Abandon, Answer,
// AnswerError, GoAway, Close). Its outputs are bytes to send (Transmit,
// into the caller's buffer, with Written reporting what left), events
// (through the Sink, synchronously, while the caller drives the Conn) and
// the next time it must be called (Next).
//
// A Conn is not safe for concurrent use: a transport serialises every call
// into it (a mutex in the goroutine-per-connection transport, the loop
// itself in an event loop). The transport decides nothing about the
// protocol: it moves bytes and time, and closes the socket when Done says
// so.
//
// An idle connection holds only its Conn: connections share their Params,
// and take what they need while they have work (output, requests in
// flight) from a pool, giving it back once done (see busy).
//
// Times are positive monotonic nanoseconds on any scale the transport
// chooses (0 is never a valid deadline: deadlines of 0 mean none).
package core

import (
	"sync"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Role says which side of the connection a Conn plays.
type Role uint8

// Roles.
const (
	Client Role = iota + 1 // opened the connection; sends requests
	Server                 // answers requests
)

func (r Role) String() string {
	switch r {
	case Client:
		return "client"
	case Server:
		return "server"
	}
	return "role?"
}

// Budget is memory shared by the connections of one server: a Conn reserves
// what it holds for its peer (request bodies, answers not yet written) and
// releases it when done. Implementations must be safe for concurrent use
// (connections reserve from many goroutines); Reserve with force set must
// succeed, even past the budget (answers are never refused).
type Budget interface {
	Reserve(n int, force bool) bool
	Release(n int)
}

// Sink receives a Conn's events. Its methods are called synchronously from
// inside the Conn's methods, in protocol order, and must neither block nor
// call back into the Conn (the transport holds it). Byte slices alias the
// Conn's or the transport's buffers and are valid only during the call.
type Sink interface {
	// Ready reports the peer's HELLO: the connection is open, with the
	// peer's limits.
	Ready(peer wire.Hello)
	// Request hands a server a complete request. Returning false refuses
	// it with OVERLOADED (not processed); returning true obliges the
	// owner to end it with Answer or AnswerError, exactly once, even
	// after Cancelled or the connection's end.
	Request(r Incoming) bool
	// Cancelled tells a server that the peer cancelled a request it
	// accepted: its answer will be dropped.
	Cancelled(id uint64)
	// CallDone ends a client call, exactly once: with the answer's body and
	// metadata, or with an error. The Conn no longer refers to the Call.
	CallDone(c *Call, body []byte, md wire.Metadata, err error)
	// GoAway tells a client that the peer sent GOAWAY: the connection takes
	// no new calls. Calls above lastID have already been ended with an
	// error that session.RetrySafe accepts.
	GoAway(lastID uint64, reason wire.Reason, msg []byte)
	// Closed reports that the connection failed or ended: err says why
	// (nil after a graceful end). Every call has been ended before; a
	// server's accepted requests will have their answers dropped. Called
	// once.
	Closed(err error)
	// HeartbeatRTT reports the round trip of a PING answered by its PONG.
	HeartbeatRTT(d time.Duration)
}

// Incoming is a complete request handed to a server's Sink.
type Incoming struct {
	ID            uint64
	Arrived       int64  // when its REQUEST frame arrived: its timeout counts from then
	TimeoutMillis uint32 // the client's remaining deadline; 0: none
	Method        []byte
	Metadata      wire.Metadata
	Body          []byte
	// Size is the bytes the request holds against the connection's memory
	// bound until it is answered.
	Size int
}

// Options are a Conn's collaborators beyond its configuration.
type Options struct {
	// Budget is the server's memory shared by all its connections; nil
	// means none (only session.Config.ConnMemory bounds a connection).
	Budget Budget
}

// Stats is a snapshot of a Conn's counters, for connection tables.
type Stats struct {
	FramesIn, FramesOut uint64
	BytesIn, BytesOut   uint64
	InFlight            int   // requests in flight (server) or calls admitted (client)
	LastReceived        int64 // time of the last bytes received
	RTT                 time.Duration
	GoingAway           bool // GOAWAY sent (server) or received (client)
	Held                int  // server: bytes held for the peer
	Queued              int  // bytes waiting to be transmitted
	// Server: requests refused OVERLOADED by the protocol's own bounds
	// (MAX_IN_FLIGHT, memory), as opposed to the Sink's refusals.
	RefusedInFlight, RefusedMemory uint64
}

// Params are what the connections of one endpoint share: their role, their
// configuration (defaults filled in), their collaborators and the HELLO
// this side sends. They are immutable: a server or a client makes them
// once and hands the same Params to every connection it opens, so that no
// connection carries a copy.
type Params struct {
	role  Role
	cfg   session.Config
	opts  Options
	hello wire.Hello
	// pingStep is the step of the grid PINGs are sent on (see pingAt and
	// session.Config.PingGrid), in nanoseconds; 1 when heartbeats are off.
	pingStep int64
}

// NewParams returns the Params of connections playing role with cfg
// (defaults filled in) and opts.
func NewParams(role Role, cfg session.Config, opts Options) *Params {
	p := &Params{role: role, cfg: cfg.WithDefaults(), opts: opts}
	p.hello = wire.Hello{
		Version:        wire.Version,
		MaxFrameSize:   p.cfg.MaxFrameSize,
		MaxMessageSize: p.cfg.MaxMessageSize,
	}
	if role == Server {
		p.hello.MaxInFlight = uint32(p.cfg.MaxInFlight)
	}
	p.pingStep = 1
	if p.cfg.Heartbeats() {
		p.hello.HeartbeatInterval = uint64(p.cfg.HeartbeatInterval / time.Millisecond)
		p.pingStep = int64(p.cfg.PingGrid())
	}
	return p
}

// Conn is one connection's protocol state. See the package comment.
//
// An idle connection holds this struct and nothing else: what it needs
// while it has work (output, requests in flight) is made when work comes
// and given back when it is done (see busy), a client's state is apart,
// so that a server's connections do not carry it, and so is what few
// connections need (see rare).
type Conn struct {
	p    *Params
	sink Sink
	peer wire.Hello // the peer's HELLO, or the protocol's defaults before it

	// Liveness. lastPingAt is, before the peer's HELLO, when the
	// connection started (the handshake timeout counts from then; no PING
	// is sent before the HELLO), and after it, when the last PING was sent.
	lastRecv   int64 // last bytes received, or the end of a read pause
	lastPingAt int64
	pingSeq    uint64 // the last PING's payload (the outstanding one's, if pingOut)
	rtt        time.Duration

	b  *busy        // while the connection has work: see busy
	cl *clientState // client only
	x  *rare        // made on first need: see rare

	highestID uint64 // server: the highest request id received

	framesIn, bytesIn   uint64
	framesOut, bytesOut uint64

	helloRecv bool
	pingOut   bool // a PING awaits its PONG
	partial   bool // a frame has started arriving and is incomplete
	refused   bool // server: the connection was refused (Refuse): input is discarded
	goingAway bool // GOAWAY sent (server) or received (client)
	eof       bool // the peer's FIN was read
	finWanted bool // nothing left to do: send FIN once the output is out
	finSent   bool
	failed    bool // the connection failed or was closed; err says why
	done      bool // the transport must close the socket now
	fifoTurn  bool // the fifo's turn comes before the ring's next chunk (see Transmit)
	paused    bool // server: reading paused (see WantRead)
}

// busy is what a connection holds while it has work: output queued or in
// transit, requests in flight. It is taken from a pool when work comes
// and given back, once the connection has none left, at the end of the
// method that finished it (rest), so that an idle connection holds none
// and a busy one does not allocate it for each request.
type busy struct {
	// Output: control frames first, then data in turns.
	out outQueue

	// Server.
	reqs     reqTable
	inflight int // requests receiving or handled, not cancelled
	held     int // bytes reserved for the peer (Budget and ConnMemory)
}

var busyPool = sync.Pool{New: func() any { return new(busy) }}

// work returns the connection's busy state, taking one if it has none.
func (c *Conn) work() *busy {
	if c.b == nil {
		c.b = busyPool.Get().(*busy)
	}
	return c.b
}

// idle reports whether b holds nothing: no output, nothing in transit, no
// request. (Its waitStart is then of no use: the next output sets it.)
func (b *busy) idle() bool {
	o := &b.out
	return o.ctrl.len() == 0 && o.fifo.len() == 0 && o.ring == nil && o.peerN == 0 &&
		o.queued == 0 && o.inTransit == 0 &&
		b.reqs.len() == 0 && b.inflight == 0 && b.held == 0
}

// rest gives the connection's busy state back, with its emptied buffers
// and request table (unless the table grew past maxKeptReqs), once it
// holds nothing. The exported methods that change the connection
// defer it, so that no pointer into the state outlives their call.
func (c *Conn) rest() {
	if b := c.b; b != nil && b.idle() {
		c.b = nil
		ctrl, fifo, more := b.out.ctrl.buf, b.out.fifo.buf, b.reqs.more
		if more != nil && more.peak > maxKeptReqs {
			more = nil
		}
		*b = busy{}
		b.out.ctrl.buf, b.out.fifo.buf, b.reqs.more = ctrl[:0], fifo[:0], more
		busyPool.Put(b)
	}
}

// pending is the number of bytes waiting to leave (see outQueue.pending).
func (c *Conn) pending() int {
	if c.b == nil {
		return 0
	}
	return c.b.out.pending()
}

// queued is the number of data bytes queued and not yet transmitted.
func (c *Conn) queued() int {
	if c.b == nil {
		return 0
	}
	return c.b.out.queued
}

// inflight is the number of a server's requests receiving or handled, not
// cancelled.
func (c *Conn) inflight() int {
	if c.b == nil {
		return 0
	}
	return c.b.inflight
}

// held is the number of bytes a server reserved for the peer's requests.
func (c *Conn) held() int {
	if c.b == nil {
		return 0
	}
	return c.b.held
}

// req returns a server's request with id, or nil.
func (c *Conn) req(id uint64) *request {
	if c.b == nil {
		return nil
	}
	return c.b.reqs.get(id)
}

// rare is what few connections need, held apart so that the others do not
// carry it. It is made (rare) by the first of: GOAWAY, the peer's FIN,
// this side's FIN, a failure, a request refused by the protocol's bounds,
// a request in several frames; what reads a field below under one of
// those conditions finds it made.
type rare struct {
	// endAt is when the connection's ending took its latest step: the
	// peer's FIN (eof), this side's FIN (finSent), or the failure
	// (failed). Only the latest is ever needed: a failure ends the
	// others' timers, and eof and finSent together make the connection
	// done.
	endAt int64
	err   error // why the connection failed or was closed, if failed

	lastID uint64 // server: the last id of our GOAWAY, if goingAway

	receiving  int   // server: requests whose frames are still arriving
	lastBodyAt int64 // when body bytes of such a request last arrived

	refusedInFlight, refusedMemory uint64
}

// rare returns the connection's rare state, made on first use.
func (c *Conn) rare() *rare {
	if c.x == nil {
		c.x = new(rare)
	}
	return c.x
}

// receiving is the number of requests whose frames are still arriving.
func (c *Conn) receiving() int {
	if c.x == nil {
		return 0
	}
	return c.x.receiving
}

// clientState is what only a client connection holds.
type clientState struct {
	nextID     uint64
	calls      map[uint64]*Call // admitted, not ended
	waiting    callList         // not admitted yet, oldest first
	deadlines  callHeap
	peerLastID uint64 // smallest GOAWAY last id received, if goingAway
	draining   bool   // Drain: no new calls; close when the last one ends
}

// New returns the protocol state of a new connection with its own Params
// (see Params.New, for connections that share theirs).
func New(role Role, cfg session.Config, opts Options, sink Sink, now int64) *Conn {
	return NewParams(role, cfg, opts).New(sink, now)
}

// New returns the protocol state of a new connection, created at now. A
// client's HELLO is queued at once; a server waits for the client's.
func (p *Params) New(sink Sink, now int64) *Conn {
	c := &Conn{
		p:          p,
		sink:       sink,
		lastRecv:   now,
		lastPingAt: now,
		peer:       defaultHello(),
	}
	if p.role == Client {
		c.cl = &clientState{nextID: 1, calls: make(map[uint64]*Call)}
		h := p.hello
		c.addControl(now, func(b []byte) []byte { return wire.AppendHello(b, h) })
	}
	return c
}

// defaultHello is what a peer's limits are taken to be until its HELLO.
func defaultHello() wire.Hello {
	return wire.Hello{
		Version:        wire.Version,
		MaxFrameSize:   wire.DefaultMaxFrameSize,
		MaxMessageSize: wire.DefaultMaxMessageSize,
		MaxInFlight:    wire.DefaultMaxInFlight,
	}
}

// Role is the side this Conn plays.
func (c *Conn) Role() Role { return c.p.role }

// Config is the effective configuration (defaults filled in).
func (c *Conn) Config() session.Config { return c.p.cfg }

// Peer is the peer's HELLO, or the protocol's defaults before it arrived.
func (c *Conn) Peer() wire.Hello { return c.peer }

// Ready reports whether the peer's HELLO has arrived.
func (c *Conn) Ready() bool { return c.helloRecv }

// Err is why the connection failed or was closed, or nil.
func (c *Conn) Err() error {
	if c.x == nil {
		return nil
	}
	return c.x.err
}

// Failed reports whether the connection failed or was closed: it takes no
// more commands and its calls have ended.
func (c *Conn) Failed() bool { return c.failed }

// Done reports whether the transport must close the socket now.
func (c *Conn) Done() bool { return c.done }

// GoingAway reports whether GOAWAY was sent (server) or received (client),
// and its last id.
func (c *Conn) GoingAway() (bool, uint64) {
	if c.p.role == Server {
		if c.x == nil {
			return c.goingAway, 0
		}
		return c.goingAway, c.x.lastID
	}
	return c.goingAway, c.cl.peerLastID
}

// Usable reports whether a client connection takes new calls now.
func (c *Conn) Usable() bool {
	return c.p.role == Client && c.helloRecv && !c.goingAway && !c.cl.draining && !c.failed && !c.finWanted
}

// WantRead reports whether the transport should read from the peer: not
// after the peer's FIN, nor once the connection failed, nor while a server
// holds at least WriteQueueSize bytes for a peer that does not read them
// (protocol.md §11.4).
func (c *Conn) WantRead() bool {
	return !c.eof && !c.failed && !c.done && !c.paused
}

// InFlight is the number of requests in flight (server) or of calls
// admitted and not ended (client).
func (c *Conn) InFlight() int {
	if c.p.role == Client {
		return len(c.cl.calls)
	}
	return c.inflight()
}

// Stats returns the Conn's counters.
func (c *Conn) Stats() Stats {
	var refusedInFlight, refusedMemory uint64
	if c.x != nil {
		refusedInFlight, refusedMemory = c.x.refusedInFlight, c.x.refusedMemory
	}
	return Stats{
		FramesIn:     c.framesIn,
		FramesOut:    c.framesOut,
		BytesIn:      c.bytesIn,
		BytesOut:     c.bytesOut,
		InFlight:     c.InFlight(),
		LastReceived: c.lastRecv,
		RTT:          c.rtt,
		GoingAway:    c.goingAway,
		Held:         c.held(),
		Queued:       c.queued(),

		RefusedInFlight: refusedInFlight,
		RefusedMemory:   refusedMemory,
	}
}
