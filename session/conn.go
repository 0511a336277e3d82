package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/wire"
)

// ErrNotSyscallConn is returned by NewConn for a net.Conn that exposes no
// file descriptor (the transport reads and writes the socket directly).
var ErrNotSyscallConn = errors.New("session: connection does not implement syscall.Conn")

// Conn moves bytes between a socket and a Protocol: the goroutine-per-
// connection transport. Run is the connection's one goroutine (its reader);
// writes are made by whichever goroutine sends, coalesced with whatever
// else is queued, without a writer goroutine: a sender that finds nobody
// writing writes the whole queue itself, non-blocking; only when the socket
// buffer is full does a goroutine wait for it, under WriteTimeout.
//
// The reader waits for readability without holding a buffer and borrows a
// pooled one only while bytes are arriving, so an idle connection costs one
// parked goroutine and a few hundred bytes. Timers (heartbeats, frame read
// timeout, write stall, linger) are driven by a Monitor's ticks, never by
// per-read deadlines.
type Conn struct {
	nc      net.Conn
	raw     syscall.RawConn
	proto   Protocol
	sh      *shared // configuration, buffer pools: one per configuration
	created int64   // Unix nanoseconds

	// The reader role: one goroutine at a time reads the socket. A server
	// connection's reader holds it for the connection's life (passing it
	// on to a fresh goroutine now and then); on a client connection the
	// role passes between callers (see TryLead) and a background reader.
	// Odd values mean held, even ones vacant; every take and release adds
	// one, so the monitor can tell a role left vacant for a whole tick.
	// (A client's count of answers awaited is its Protocol's in-flight
	// count: see SetAwaited.)
	role     atomic.Uint32
	roleSeen uint32 // the monitor's last look at role

	// Reader state, owned by the reader role.
	rb      *buffer // holds the read's result too (n, err)
	rlen    int
	readFn  func(uintptr) bool
	lead    *Lead                         // a request the read callback sends first (SendAndLead)
	rdl     int64                         // a client's read deadline as last set, as Mono (0: none); a Kick moves it unseen
	unblock atomic.Pointer[chan struct{}] // made when the reader first waits at MaxInFlight

	// A second descriptor for the same socket, made the first time a slow
	// inline request keeps a server's reader busy: the reader that takes
	// over waits on it, since the busy one still holds the first one's
	// read lock. Readers alternate between the two (useAlt).
	alt atomic.Pointer[altFD]

	peerFIN atomic.Bool
	useAlt  atomic.Bool
	// Inline requests: the reader runs the last request of a read itself.
	inlineRan   atomic.Bool // an inline request ran since the reader was last refreshed
	refresh     atomic.Bool // the monitor asked the reader to restart on a fresh stack
	warm        atomic.Bool // a request arrived within the last tick: run the next inline
	draining    atomic.Bool // end the connection when no request is in flight
	isClosed    atomic.Bool
	handoffs    atomic.Uint32 // slow inline requests that moved reading elsewhere
	inlineSince atomic.Int64  // Mono when the running inline request started; 0 when none
	stuck       atomic.Int32  // readers whose inline request outlived their turn (see detachInline)
	leading     atomic.Uint32 // leadNone, leadReading or leadKicked: a client's caller holds the reader role (SendAndLead)
	eofAt       atomic.Int64  // Mono when the peer's FIN arrived with requests in flight

	// Write queue, under wmu.
	wmu        sync.Mutex
	flushing   bool
	finPending bool    // send FIN once the queue is empty
	wfin       bool    // FIN sent: nothing more can be written
	wblock     bool    // the flusher's: waiting for the socket
	active     bool    // the monitor's: bytes arrived during the last tick
	discard    bool    // the reader's: after a fatal protocol error, drop until the peer's FIN
	chClosed   bool    // closedCh is closed, under errMu
	wb         *buffer // queued bytes
	spare      *buffer
	inWrite    int // bytes of the batch being written
	wwait      chan struct{}
	nextID     uint64
	framesOut  uint64
	stalled    atomic.Int64 // Mono of the last progress of a blocked write, 0 when not blocked
	halfClosed atomic.Int64 // Mono when our FIN went out, 0 before

	// The flusher's own state (only one goroutine flushes at a time): the
	// batch being written, which also holds the progress (n, err).
	wcur    *buffer
	writeFn func(uintptr) bool

	bytesOut atomic.Uint64
	writes   atomic.Uint64 // write system calls that moved bytes

	errMu    sync.Mutex
	err      error
	closedCh chan struct{}           // made on first use of Done, under errMu
	hooks    map[*CloseHook]struct{} // under errMu
	mon      atomic.Pointer[Monitor]
}

// shared is what every connection with the same configuration shares.
type shared struct {
	cfg          Config
	rpool, wpool bufPool
	inlineBudget time.Duration
}

var sharedByConfig sync.Map // Config → *shared

func sharedFor(cfg Config) *shared {
	cfg = cfg.WithDefaults()
	if v, ok := sharedByConfig.Load(cfg); ok {
		return v.(*shared)
	}
	v, _ := sharedByConfig.LoadOrStore(cfg, &shared{
		cfg:          cfg,
		rpool:        newBufPool(cfg.ReadBufferSize),
		wpool:        newBufPool(4 << 10),
		inlineBudget: cfg.TickInterval(),
	})
	return v.(*shared)
}

// NewConn wraps nc, which must be a *net.TCPConn or another connection
// implementing syscall.Conn, in a transport driving a Protocol of the given
// role. Frames decoded from nc go to h. The caller runs Run and usually adds
// the Conn to a Monitor.
func NewConn(nc net.Conn, role Role, cfg Config, h Handler) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, ErrNotSyscallConn
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	sh := sharedFor(cfg)
	now := time.Now()
	c := &Conn{
		nc:      nc,
		raw:     raw,
		sh:      sh,
		created: now.UnixNano(),
	}
	if role == RoleClient {
		c.readFn = c.onReadable
	}
	c.writeFn = c.onWritable
	c.proto.init(role, &sh.cfg, h, c.sendControl, Mono)
	if _, ok := h.(InlineHandler); ok && role == RoleServer {
		c.proto.inlineOK = true
	}
	return c, nil
}

// Protocol returns the connection's protocol state.
func (c *Conn) Protocol() *Protocol { return &c.proto }

// Context is cancelled when the connection closes. It costs nothing: it is
// the connection itself seen as a context.
func (c *Conn) Context() context.Context { return (*connContext)(c) }

// connContext is a Conn seen as a context.Context: Done when it closes.
type connContext Conn

func (c *connContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *connContext) Done() <-chan struct{}       { return (*Conn)(c).Done() }
func (c *connContext) Value(any) any               { return nil }
func (c *connContext) Err() error {
	if c.isClosed.Load() {
		return context.Canceled
	}
	return nil
}

// CloseHook is a function run once when the connection closes; see
// AddCloseHook.
type CloseHook struct{ Fn func() }

// AddCloseHook arranges for h.Fn to run when the connection closes. It
// returns false, and does not run h.Fn, if the connection is already closed.
func (c *Conn) AddCloseHook(h *CloseHook) bool {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.isClosed.Load() {
		return false
	}
	if c.hooks == nil {
		c.hooks = make(map[*CloseHook]struct{})
	}
	c.hooks[h] = struct{}{}
	return true
}

// RemoveCloseHook cancels AddCloseHook; it reports whether h was still
// registered (and so will not run).
func (c *Conn) RemoveCloseHook(h *CloseHook) bool {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	_, ok := c.hooks[h]
	delete(c.hooks, h)
	return ok
}

// Done is closed when the connection has closed. The channel is made on
// first use, so connections nobody waits on do not carry one.
func (c *Conn) Done() <-chan struct{} {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.closedCh == nil {
		c.closedCh = make(chan struct{})
		if c.isClosed.Load() {
			close(c.closedCh)
			c.chClosed = true
		}
	}
	return c.closedCh
}

// Err is the reason the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Closed reports whether the connection has closed.
func (c *Conn) Closed() bool { return c.isClosed.Load() }

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Created is when the connection was wrapped.
func (c *Conn) Created() time.Time { return time.Unix(0, c.created) }

// BytesOut counts bytes written to the socket.
func (c *Conn) BytesOut() uint64 { return c.bytesOut.Load() }

// Writes counts the write system calls that moved bytes; FramesOut/Writes
// is the coalescing ratio.
func (c *Conn) Writes() uint64 { return c.writes.Load() }

// FramesOut counts frames queued for writing.
func (c *Conn) FramesOut() uint64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.framesOut
}

// Run reads and dispatches frames until the connection ends, and returns
// why it ended (never nil). It is the connection's own goroutine. If a
// request run on the reader (see InlineHandler) outlasts its budget,
// another goroutine takes over reading and this Run returns
// ErrReaderHandedOff as soon as the request is done. On a client
// connection Run also returns ErrReaderHandedOff when its callers read for
// themselves (see Lead), or at once if another goroutine is reading. The
// OnClose callback, not Run's return, is the reliable end-of-connection
// signal.
func (c *Conn) Run() error {
	if !c.takeRole() {
		return ErrReaderHandedOff
	}
	return c.run()
}

// Start takes the reader role, if it is vacant, and runs the reader on a
// goroutine of its own. Unlike starting Run on one, it leaves no moment in which a client's
// caller can take the role first (TryLead) and miss frames the peer sent
// at once, such as a BUSY refusal.
func (c *Conn) Start() {
	if c.takeRole() {
		go c.run()
	}
}

// run is Run for a goroutine that already holds the reader role.
func (c *Conn) run() error {
	if !c.readLoop() {
		return ErrReaderHandedOff
	}
	return c.endReader()
}

// endReader is the last act of the reader role once the connection has
// ended: the role stays held for ever, so this runs once.
func (c *Conn) endReader() error {
	<-c.Done()
	err := c.Err()
	if h, ok := c.proto.h.(CloseHandler); ok {
		h.ConnClosed(err)
	}
	return err
}

// ErrReaderHandedOff is returned by a Run whose reader role passed to
// another goroutine (after a slow inline request, or to restart an idle
// reader on a fresh stack, or to a client's callers). A Handler
// implementing CloseHandler learns the end of the connection reliably.
var ErrReaderHandedOff = errors.New("session: reader handed off to another goroutine")

// takeRole takes the reader role if it is vacant.
func (c *Conn) takeRole() bool {
	v := c.role.Load()
	return v&1 == 0 && c.role.CompareAndSwap(v, v+1)
}

// releaseRole leaves the reader role vacant; only its holder calls it.
func (c *Conn) releaseRole() {
	c.returnEmptyReadBuffer()
	c.role.Add(1)
}

// needsReader reports whether a client connection with a vacant reader
// role must get a reader now rather than at the next tick: answers are
// awaited, or the connection is ending (the peer's FIN must be read).
func (c *Conn) needsReader() bool {
	return c.proto.inflight.Load() > 0 || c.halfClosed.Load() != 0 || c.isClosed.Load()
}

// Waiter is a request's caller as Lead sees it.
type Waiter interface {
	// Answered reports whether the caller may stop reading: its request
	// was answered or failed, or the caller gave up on it.
	Answered() bool
}

// TryLead lets a client's caller read the connection itself while it
// waits for its answer, instead of waiting for another goroutine to hand
// the answer over: one call at a time then costs less than a hand-written
// blocking round trip. It takes the reader role and returns true if nobody
// holds it; the caller must then call SendAndLead. It returns
// false if another goroutine is reading (the caller then waits for the
// answer to be handed over).
func (c *Conn) TryLead() bool {
	return c.proto.role == RoleClient && c.takeRole()
}

// leadFrom is SendAndLead's read loop, from the outcome st of a first read.
func (c *Conn) leadFrom(st step, w Waiter, deadline time.Time) (expired bool) {
	for {
		if st == stepEnded {
			c.endReader()
			return false
		}
		if w.Answered() {
			break
		}
		if st == stepDeadline {
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				expired = true
				break
			}
			// A deadline set for an earlier caller, or a kick: read on.
			c.setDeadline(deadline)
		}
		st = c.readOnce()
	}
	// The deadline stays set: the next reader sets its own.
	c.leaveLead()
	return expired
}

// A client's caller reading for itself is kicked once by the monitor
// (see Tick): leading goes from leadReading to leadKicked.
const (
	leadNone uint32 = iota
	leadReading
	leadKicked
)

// leaveLead leaves the reader role a caller took with TryLead.
func (c *Conn) leaveLead() {
	c.leading.Store(leadNone)
	c.releaseRole()
	if c.needsReader() {
		c.Start()
	}
}

// armDeadline sets a client's read deadline to d, unless the one set ends
// no later and has not passed: a deadline left by an earlier call then
// serves (a read that outlives it just sets d and reads on).
func (c *Conn) armDeadline(d time.Time) {
	m := monoOf(d)
	if c.rdl == 0 {
		if m == 0 {
			return
		}
	} else if (m == 0 || c.rdl <= m) && c.rdl > Mono() {
		return
	}
	c.setDeadline(d)
}

// setDeadline sets a client's read deadline.
func (c *Conn) setDeadline(d time.Time) {
	_ = c.nc.SetReadDeadline(d)
	c.rdl = monoOf(d)
}

// Lead is a request whose caller sends it and reads its answer itself
// (SendAndLead). The caller fills in the request; SendAndLead sets ID and
// Err as SendRequest would return them.
type Lead struct {
	Ctx           context.Context
	TimeoutMillis uint32
	Method        string
	Body          []byte
	Registrar     Registrar
	More          bool // as SendRequest's more

	ID  uint64
	Err error
}

// SendAndLead sends a request for a caller that took the reader role with
// TryLead, then reads on the calling goroutine, dispatching every frame to
// the Handler as the background reader would, until w.Answered reports
// true or the deadline (zero: none) passes; then it leaves the role and
// reports whether the deadline passed first. The deadline is the socket's
// read deadline, so it costs no timer of its own. Frames for other
// requests go to their callers as usual; when answers are still awaited, a
// background reader takes over. A caller that gives up early makes
// Answered true and calls Kick.
//
// This costs one system call fewer than SendRequest followed by reading:
// the request is sent from inside the read call, once the read is
// registered with the poller, so the read then waits for the answer's
// arrival directly instead of first trying a read that could only find
// the socket empty.
//
// Entering a read forgets readiness signalled before it. The answer
// arrives after the request leaves, so its arrival is always seen, and
// bytes that arrived earlier are read with it. When other answers are
// awaited too, the callback reads at once, since one of them may have
// arrived unseen. A frame that arrived unseen and makes the answer never
// come (GOAWAY) is read at the monitor's next tick or the one after: a
// caller that has read nothing for a whole tick is kicked once (see Tick)
// and reads the socket. (Should that kick be lost to the caller setting
// its read deadline at that very moment, the frame is read with the next
// bytes to arrive, a heartbeat's at the latest.) If the request cannot be
// sent (l.ID is 0), SendAndLead leaves the reader role at once.
//
// The read deadline is left set from one call to the next and set again
// only when the caller's deadline is earlier or it has passed, so the
// common call arms no timer.
func (c *Conn) SendAndLead(l *Lead, w Waiter, deadline time.Time) (expired bool) {
	c.leading.Store(leadReading)
	c.armDeadline(deadline)
	l.ID, l.Err = 0, nil
	c.lead = l
	err := c.raw.Read(c.readFn)
	sentInRead := c.lead == nil
	if !sentInRead {
		// The read ended before its callback ran (the connection is
		// closing, or the deadline has passed): send and read as usual.
		c.sendLead(l)
	}
	if l.ID == 0 {
		c.leaveLead()
		return false
	}
	st := stepRead
	if sentInRead {
		st = c.afterRead(err)
	}
	return c.leadFrom(st, w, deadline)
}

// sendLead sends the leading caller's request from the read callback. It
// returns false, to wait for readability with no read first, once the
// request is queued, and true (nothing read) if it was not.
func (c *Conn) sendLead(l *Lead) bool {
	c.lead = nil
	l.ID, l.Err = c.SendRequest(l.Ctx, l.TimeoutMillis, l.Method, l.Body, l.Registrar, l.More)
	return l.ID == 0
}

// Kick interrupts the goroutine reading a client connection (see Lead) so
// that it checks whether its caller is answered.
func (c *Conn) Kick() { _ = c.nc.SetReadDeadline(time.Unix(1, 0)) }

// SetAwaited tells a client connection how many requests sent on it await
// their answer; the client updates it whenever that number changes. A
// connection with answers awaited always has a reader.
func (c *Conn) SetAwaited(n int) { c.proto.inflight.Store(int32(n)) }

// giveUp leaves the reader role of a client connection whose answers have
// all arrived, so that the next caller reads for itself (Lead). It
// returns false, keeping the role, when a reader is still needed.
func (c *Conn) giveUp() bool {
	if c.needsReader() {
		return false
	}
	c.releaseRole()
	return !c.needsReader() || !c.takeRole()
}

// readLoop is the reader role; the caller holds it. It returns false if
// the role passed to another goroutine or was left vacant (the caller must
// then touch no reader state), true when the connection ended. A client
// connection's background reader leaves the role when no answer is
// awaited after it delivered some.
func (c *Conn) readLoop() bool {
	if c.proto.role == RoleServer {
		return c.serveLoop()
	}
	if c.rdl != 0 {
		c.setDeadline(time.Time{}) // a caller's, left behind
	}
	for {
		switch c.readOnce() {
		case stepEnded:
			return true
		case stepDeadline:
			c.setDeadline(time.Time{}) // a kick meant for a caller
		case stepAnswered:
			if c.giveUp() {
				return false
			}
		}
	}
}

type step uint8

const (
	stepRead step = iota
	stepAnswered
	stepDeadline
	stepProcess
	stepEnded
	stepHandedOff
)

// readOnce waits for one read from a client connection's socket and
// processes it.
func (c *Conn) readOnce() step { return c.afterRead(c.raw.Read(c.readFn)) }

// afterRead processes what a client connection's read callback read; err
// is what RawRead returned.
func (c *Conn) afterRead(err error) step {
	var n int
	if c.rb != nil {
		n = c.rb.n
		if err == nil {
			err = c.rb.err
		}
		c.rb.n, c.rb.err = 0, nil
	}
	if n > 0 {
		if c.discard {
			return stepRead
		}
		c.rlen += n
		c.proto.Arrived(n)
		answers := c.proto.answers
		if c.process() == failed { // a client runs nothing inline: never handedOff
			c.discard = true
		}
		if c.proto.answers != answers {
			return stepAnswered
		}
		return stepRead
	}
	if err == nil { // the peer's FIN
		c.onPeerFIN()
		c.dropReadBuffer()
		return stepEnded
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return stepDeadline // a caller's deadline, or a kick
	}
	c.Close(fmt.Errorf("%w: read: %w", ErrConnClosed, err))
	c.dropReadBuffer()
	return stepEnded
}

// borrowReadBuffer makes sure the reader has a buffer to read into.
func (c *Conn) borrowReadBuffer() {
	if c.rb == nil {
		c.rb = c.sh.rpool.get()
		c.rb.b = c.rb.b[:cap(c.rb.b)]
	}
}

// returnEmptyReadBuffer gives the read buffer back to the pool unless it
// holds the start of a frame: a waiting reader holds no buffer.
func (c *Conn) returnEmptyReadBuffer() {
	if c.rb != nil && c.rlen == 0 {
		c.sh.rpool.put(c.rb)
		c.rb = nil
	}
}

func (c *Conn) dropReadBuffer() {
	if c.rb != nil {
		c.sh.rpool.put(c.rb)
		c.rb = nil
	}
}

// altFD is a duplicate descriptor of a server connection's socket with its
// own poller registration.
type altFD struct {
	f   *os.File
	raw syscall.RawConn
}

// source returns the descriptor the server's reader uses now, and the
// function that sets its read deadline.
func (c *Conn) source() (syscall.RawConn, func(time.Time) error) {
	if c.useAlt.Load() {
		if a := c.alt.Load(); a != nil {
			return a.raw, a.f.SetReadDeadline
		}
	}
	return c.raw, c.nc.SetReadDeadline
}

// switchSource points the next server reader at the descriptor the current
// one is not holding, making the duplicate on first use. Without a
// duplicate (the descriptor limit), the next reader waits for the current
// one's lock: reading pauses until the slow request returns.
func (c *Conn) switchSource() {
	if c.useAlt.Load() {
		c.useAlt.Store(false)
		return
	}
	if c.alt.Load() == nil {
		a, err := c.dupFD()
		if err != nil {
			return
		}
		c.alt.Store(a)
		if c.isClosed.Load() {
			_ = a.f.Close()
			return
		}
	}
	c.useAlt.Store(true)
}

func (c *Conn) dupFD() (*altFD, error) {
	var nfd int
	var derr error
	if err := c.raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	// The descriptor shares the socket's O_NONBLOCK, so os.NewFile
	// registers it with the poller.
	f := os.NewFile(uintptr(nfd), "tcppro-reader")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &altFD{f: f, raw: raw}, nil
}

// serveLoop is a server connection's reader. It stays inside one RawRead
// and does its work in the read callback: after a short read (the socket
// drained) it waits for the poller's next readiness edge directly, without
// the read that would only report EAGAIN — one system call per request
// fewer than a read loop that leaves RawRead after each read, since
// entering RawRead forgets any readiness already signalled.
func (c *Conn) serveLoop() bool {
	// The step is the reader's own: a reader that took over after a slow
	// inline request runs while this one is still inside its callback.
	r := &serverReader{c: c}
	read := r.onReadable
	for {
		raw, setDeadline := c.source()
		r.step = stepRead
		err := raw.Read(read)
		switch r.step {
		case stepHandedOff:
			return false
		case stepEnded:
			return true
		case stepProcess:
			switch c.process() {
			case handedOff:
				return false
			case failed:
				c.discard = true
			}
			continue
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A kick to restart an idle reader (we set no other deadline).
			_ = setDeadline(time.Time{})
			if !c.refresh.CompareAndSwap(true, false) {
				continue
			}
			// Restart on a fresh goroutine: handlers run inline grew this
			// one's stack, and an idle connection should not keep it.
			c.returnEmptyReadBuffer()
			go c.run()
			return false
		}
		c.Close(fmt.Errorf("%w: read: %w", ErrConnClosed, err))
		c.dropReadBuffer()
		return true
	}
}

// serverReader is one goroutine's turn as a server connection's reader.
type serverReader struct {
	c    *Conn
	step step // how the read callback ended
}

// oneWarmRequest reports whether the read buffer holds exactly one whole
// REQUEST on a warm connection: the request/response fast path, run inside
// the read callback.
func (c *Conn) oneWarmRequest() bool {
	b := c.rb.b[:c.rlen]
	if !c.warm.Load() || c.stuck.Load() != 0 || len(b) < wire.HeaderLen || wire.Type(b[4]) != wire.TypeRequest {
		return false
	}
	h, err := wire.ParseHeader(b)
	return err == nil && wire.HeaderLen+int(h.Length) == len(b)
}

// onReadable is the server's read callback: it reads and processes until
// the socket is drained (a read shorter than the room offered) and then
// returns false to wait for readability. It returns true, with r.step
// saying why, when the connection ended or the reader role moved on.
func (r *serverReader) onReadable(fd uintptr) bool {
	c := r.c
	for {
		if c.isClosed.Load() {
			c.dropReadBuffer()
			r.step = stepEnded
			return true
		}
		c.borrowReadBuffer()
		room := len(c.rb.b) - c.rlen
		n, err := unix.Read(int(fd), c.rb.b[c.rlen:])
		if err != nil {
			switch err {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				c.returnEmptyReadBuffer()
				return false
			}
			c.Close(fmt.Errorf("%w: read: %w", ErrConnClosed, err))
			c.dropReadBuffer()
			r.step = stepEnded
			return true
		}
		if n == 0 { // the peer's FIN
			c.onPeerFIN()
			c.dropReadBuffer()
			r.step = stepEnded
			return true
		}
		if !c.discard {
			c.rlen += n
			c.proto.Arrived(n)
			if !c.oneWarmRequest() {
				// Anything but the fast path is processed after RawRead
				// returns, on a shallower stack: an idle connection's
				// reader must keep its first small stack.
				r.step = stepProcess
				return true
			}
			switch c.process() {
			case handedOff:
				r.step = stepHandedOff
				return true
			case failed:
				c.discard = true
			}
		}
		if n < room {
			c.returnEmptyReadBuffer()
			return false
		}
	}
}

// onReadable is the raw read callback: it borrows a buffer only when the
// socket has bytes for it.
func (c *Conn) onReadable(fd uintptr) bool {
	if l := c.lead; l != nil {
		if c.sendLead(l) {
			return true // not sent
		}
		if c.proto.inflight.Load() <= 1 {
			return false // only this answer is awaited: wait for it
		}
		// Another answer may have arrived before this read began, its
		// readiness forgotten: read now.
	}
	c.borrowReadBuffer()
	for {
		n, err := unix.Read(int(fd), c.rb.b[c.rlen:])
		switch err {
		case nil:
			c.rb.n = n
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.returnEmptyReadBuffer()
			return false
		default:
			c.rb.err = err
			return true
		}
	}
}

type outcome int

const (
	ok outcome = iota
	failed
	handedOff
)

// process feeds the buffered bytes to the protocol and runs an inline
// request if the protocol left one.
func (c *Conn) process() outcome {
	consumedAny := false
	for {
		n, err := c.proto.Feed(c.rb.b[:c.rlen])
		if n > 0 {
			consumedAny = true
			c.rlen = copy(c.rb.b, c.rb.b[n:c.rlen])
		}
		if err != nil {
			c.fatal(err)
			return failed
		}
		if c.proto.inl.pending {
			// The last frame of the read: it owns the whole buffer.
			return c.runInline()
		}
		if !c.proto.Blocked() || c.rlen == 0 {
			break
		}
		// At MaxInFlight with a request waiting: stop reading until one
		// completes. The waiting request is not slow-loris: its frame
		// timer restarts when feeding resumes.
		c.proto.ClearPartial()
		ch := c.unblock.Load()
		if ch == nil {
			nc := make(chan struct{}, 1)
			c.unblock.Store(&nc)
			ch = &nc
			if !c.proto.Blocked() { // a request completed before the channel existed
				continue
			}
		}
		select {
		case <-*ch:
		case <-c.Done():
			return failed
		}
	}
	if c.rlen == 0 {
		c.proto.ClearPartial()
		if cap(c.rb.b) != c.sh.rpool.size {
			c.rb = nil // drop a buffer grown for one large frame
		}
		return ok
	}
	c.proto.MarkPartial(consumedAny)
	if need := c.proto.Need(c.rb.b[:c.rlen]); need > len(c.rb.b) {
		// Grow in steps as bytes arrive, not to the declared length at
		// once: a 16-byte header must not make us allocate 4 MiB.
		size := min(need, max(2*len(c.rb.b), c.rlen+c.sh.cfg.ReadBufferSize))
		nb := &buffer{b: make([]byte, size)}
		copy(nb.b, c.rb.b[:c.rlen])
		c.sh.rpool.put(c.rb)
		c.rb = nb
	}
	return ok
}

// runInline runs the request the protocol left pending, the last of its
// read, which owns the read buffer (its body is not copied). A warm reader
// — one that has served a request since it started — runs it itself, with
// no hand-off to another goroutine: the common case of one request per read
// on a busy connection then costs what a hand-written echo loop costs. The
// monitor watches the time it takes; past the inline budget it starts
// another reader, and this goroutine gives the reader role up when the
// request is done. A cold reader (the first request after it started, or
// after an idle period) hands the request, with the read buffer it sits
// in, to a new goroutine instead, before any work that could grow the
// reader's stack: an idle reader's stack stays at its first 2 KiB, which a
// request served on it would double.
func (c *Conn) runInline() outcome {
	buf := c.rb
	c.rb = nil
	buf.inl = c.proto.takeInline()
	c.proto.ClearPartial()
	if !c.warm.Load() || c.stuck.Load() != 0 {
		// Cold, or a slow inline request still holds a descriptor's read
		// lock: the request goes to a goroutine of its own with the read
		// buffer, before any work that would deepen the reader's stack or
		// hold this reader.
		c.warm.Store(true)
		go c.serveCold(buf)
		return ok
	}
	since := Mono()
	c.inlineSince.Store(since)
	c.proto.h.(InlineHandler).ServeInline(buf.inl.in(buf.b))
	c.inlineRan.Store(true)
	c.sh.rpool.put(buf)
	if !c.inlineSince.CompareAndSwap(since, 0) {
		c.stuck.Add(-1) // detached meanwhile: reading moved on
		return handedOff
	}
	return ok
}

// serveCold runs a cold reader's request on a goroutine of its own, which
// owns the read buffer the request sits in until the handler returns.
func (c *Conn) serveCold(buf *buffer) {
	c.proto.h.(InlineHandler).ServeInline(buf.inl.in(buf.b))
	c.sh.rpool.put(buf)
}

// takeOverReader starts another reader when the running inline request
// has held the reader for the inline budget: one monitor tick, so a PING
// waits at most about two ticks (a fifth of the shortest timer) for its
// PONG.
func (c *Conn) takeOverReader(mono int64) {
	s := c.inlineSince.Load()
	if s == 0 || time.Duration(mono-s) < c.sh.inlineBudget {
		return
	}
	if c.detachInline(s) {
		c.handoffs.Add(1)
		c.switchSource()
		go c.run()
	}
}

// detachInline takes the reader role away from the inline request that
// started at s, if it still runs: its reader gives the role up when the
// request returns. Until then that reader holds its descriptor's read
// lock, so no request runs inline: with two descriptors, a second stuck
// request would leave the next reader waiting for a lock, and the
// connection unread.
func (c *Conn) detachInline(s int64) bool {
	if s == 0 || !c.inlineSince.CompareAndSwap(s, 0) {
		return false
	}
	c.stuck.Add(1)
	return true
}

// refreshIdleReader cools a connection idle for a whole tick (its next
// request goes to a goroutine of its own) and restarts its reader if it
// ran requests inline. Those requests ran on the reader's stack
// and grew it (to 4 KiB or more), and the runtime never shrinks the stack
// of a parked reader that still uses over a quarter of it; a fresh reader
// starts small again. It costs one wake-up and one goroutine per idle
// period, never per request.
func (c *Conn) refreshIdleReader(idle bool) {
	if !idle || c.inlineSince.Load() != 0 {
		return // not idle for a whole tick
	}
	c.warm.Store(false)
	if !c.inlineRan.Load() {
		return
	}
	c.inlineRan.Store(false)
	c.refresh.Store(true)
	_, setDeadline := c.source()
	_ = setDeadline(time.Unix(1, 0)) // wakes the reader
}

// checkFIN looks, once per quiet spell, for a FIN the server's reader may
// not have seen. The reader waits for the poller's next edge after a short
// read (see serveLoop); when the peer's FIN arrives together with its last
// bytes, the poller may report both as one edge, the read returns the
// bytes, and nothing signals the FIN again. So on the first tick with
// nothing received after some activity, the monitor peeks at the socket,
// and if the FIN (or any byte) is waiting it wakes the reader, which reads
// it. A FIN is thus seen within two ticks, at one peek per connection per
// quiet spell.
func (c *Conn) checkFIN(idle bool) {
	if !idle {
		c.active = true
		return
	}
	if !c.active {
		return
	}
	c.active = false
	pending := false
	_ = c.raw.Control(func(fd uintptr) {
		pending = peekable(fd)
	})
	if pending {
		_, setDeadline := c.source()
		_ = setDeadline(time.Unix(1, 0)) // the reader reads again
	}
}

// peekable reports whether a read from fd would return at once: a byte or
// the peer's FIN is waiting. It calls recvfrom directly because
// unix.Recvfrom allocates the sender's address, and the monitor peeks at
// every connection that goes quiet.
func peekable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return errno == 0
}

// Handoffs counts the times a slow inline request made another goroutine
// take over reading.
func (c *Conn) Handoffs() uint64 { return uint64(c.handoffs.Load()) }

// fatal ends the connection after a decoding error: it tells the peer why
// (where the protocol has a code for it), stops processing, and closes once
// the ERROR is written.
func (c *Conn) fatal(err error) {
	var tooLarge *wire.FrameTooLargeError
	var remote *RemoteError
	switch {
	case errors.As(err, &tooLarge):
		c.setErr(err)
		_ = c.SendError(0, wire.CodeFrameTooLarge, err.Error())
		c.requestFIN()
	case errors.Is(err, wire.ErrProtocol):
		c.setErr(err)
		_ = c.SendError(0, wire.CodeProtocol, err.Error())
		c.requestFIN()
	case errors.As(err, &remote):
		c.Close(err)
	default:
		c.Close(err)
	}
}

func (c *Conn) onPeerFIN() {
	c.peerFIN.Store(true)
	if c.proto.Role() == RoleClient {
		c.Close(fmt.Errorf("%w: by the peer", ErrConnClosed))
		return
	}
	// A server finishes what is in flight, answers, and closes.
	c.wmu.Lock()
	fin := c.wfin
	c.wmu.Unlock()
	if fin {
		c.Close(errClosedByPeer)
		return
	}
	c.draining.Store(true)
	if c.proto.InFlight() == 0 {
		c.requestFIN()
	} else {
		c.eofAt.Store(Mono())
	}
}

// RequestDone records that a request handed to the server's Handler has
// been answered. It wakes a reader held at MaxInFlight and ends a draining
// connection once nothing is in flight.
func (c *Conn) RequestDone() {
	n := c.proto.Done()
	if n == c.sh.cfg.MaxInFlight-1 {
		if ch := c.unblock.Load(); ch != nil {
			select {
			case *ch <- struct{}{}:
			default:
			}
		}
	}
	if n == 0 && c.draining.Load() {
		c.requestFIN()
	}
}

// GoAway tells the peer that no request above the last one received will be
// processed; the connection then finishes the requests in flight, sends
// its FIN and closes. It returns the last id announced, and whether this
// call sent the GOAWAY (false: it had been sent before).
func (c *Conn) GoAway(reason wire.Reason, msg string) (lastID uint64, first bool) {
	lastID, first = c.proto.GoAway(reason, msg)
	c.draining.Store(true)
	if c.proto.InFlight() == 0 {
		c.requestFIN()
	}
	return lastID, first
}

var errClosedByPeer = fmt.Errorf("%w: by the peer", ErrConnClosed)

// Close closes the connection at once; requests in flight fail with err
// (ErrConnClosed when nil, or the reason recorded earlier).
func (c *Conn) Close(err error) {
	c.setErr(err)
	c.setErr(ErrConnClosed)
	if !c.isClosed.CompareAndSwap(false, true) {
		return
	}
	c.closeSocket()
	// A reader busy with an inline request would end the connection only
	// when that request returns, and the monitor no longer ticks a closed
	// connection: start the reader that ends it now (its read fails at
	// once: both descriptors are closed).
	if c.detachInline(c.inlineSince.Load()) {
		go c.run()
	}
	if c.proto.role == RoleClient {
		c.Start() // a vacant role: nobody would see the close
	}
	c.errMu.Lock()
	if c.closedCh != nil && !c.chClosed {
		close(c.closedCh)
		c.chClosed = true
	}
	hooks := c.hooks
	c.hooks = nil
	c.errMu.Unlock()
	for h := range hooks {
		h.Fn()
	}
	c.wmu.Lock()
	c.wakeLocked()
	c.wmu.Unlock()
	if m := c.mon.Load(); m != nil {
		m.remove(c)
	}
}

// closeSocket ends the connection's socket without waiting. A server's
// reader runs requests inside its read callback, and a client's caller
// sends its request from there (SendAndLead), holding a reference to the
// descriptor that makes net.Conn.Close wait until the callback returns —
// for ever if Close is called from the callback itself. So the socket is
// shut down at once (the peer sees the end now, and a reader waiting for
// readability wakes up), and the descriptors are released by a goroutine
// that waits for the callback to return.
func (c *Conn) closeSocket() {
	_ = c.raw.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	go func() {
		_ = c.nc.Close()
		if a := c.alt.Load(); a != nil {
			_ = a.f.Close()
		}
	}()
}

// setErr records the first reason the connection ends.
func (c *Conn) setErr(err error) {
	if err == nil {
		return
	}
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
}

// Tick drives the connection's timers; a Monitor calls it.
func (c *Conn) Tick(now time.Time) {
	if c.isClosed.Load() {
		return
	}
	if c.proto.role == RoleClient {
		c.tickReader()
	}
	mono := Mono()
	if s := c.stalled.Load(); s != 0 && time.Duration(mono-s) >= c.sh.cfg.WriteTimeout {
		c.Close(ErrWriteTimeout)
		return
	}
	if h := c.halfClosed.Load(); h != 0 {
		if time.Duration(mono-h) >= c.sh.cfg.LingerTimeout {
			c.Close(nil)
		}
		return
	}
	if e := c.eofAt.Load(); e != 0 && time.Duration(mono-e) >= c.sh.cfg.WriteTimeout {
		c.Close(fmt.Errorf("%w: requests in flight did not finish after the peer's FIN", ErrConnClosed))
		return
	}
	idle := c.proto.Idle()
	if c.proto.role == RoleServer {
		c.checkFIN(idle)
	} else if idle && c.leading.CompareAndSwap(leadReading, leadKicked) {
		// A caller reading for itself has read nothing for a tick: a
		// frame may have arrived unseen before its read began (see
		// SendAndLead). One kick makes it read the socket; anything that
		// arrives later wakes it anyway, so a long call is kicked once.
		c.Kick()
	}
	if c.proto.inlineOK {
		c.takeOverReader(mono)
		c.refreshIdleReader(idle)
	}
	if err := c.proto.Tick(); err != nil {
		c.Close(err)
		return
	}
	if th, ok := c.proto.h.(TickHandler); ok {
		th.Tick(now)
	}
}

// tickReader starts a background reader on a client connection whose
// reader role stayed vacant for a whole tick, so that an idle connection
// still reads PINGs, GOAWAY and the peer's FIN.
func (c *Conn) tickReader() {
	v := c.role.Load()
	if v&1 == 0 && v == c.roleSeen && c.role.CompareAndSwap(v, v+1) {
		go c.run()
		v++
	}
	c.roleSeen = v
}

// sendControl queues a control frame from the protocol. Control frames are
// never held back by the write queue bound.
func (c *Conn) sendControl(frame []byte) {
	c.wmu.Lock()
	if c.wfin || c.isClosed.Load() {
		c.wmu.Unlock()
		return
	}
	c.ensureLocked()
	c.wb.b = append(c.wb.b, frame...)
	c.framesOut++
	c.flushLocked(false)
}

// SendResponse queues a RESPONSE.
func (c *Conn) SendResponse(id uint64, body []byte) error {
	c.wmu.Lock()
	if err := c.reserveLocked(nil, wire.HeaderLen+len(body)); err != nil {
		c.wmu.Unlock()
		return err
	}
	c.wb.b = wire.AppendResponse(c.wb.b, id, body)
	c.framesOut++
	return c.flushLocked(c.proto.InFlight() > 1)
}

// SendError queues an ERROR (id 0: about the whole connection).
func (c *Conn) SendError(id uint64, code wire.Code, msg string) error {
	c.wmu.Lock()
	if err := c.reserveLocked(nil, wire.HeaderLen+2+len(msg)); err != nil {
		c.wmu.Unlock()
		return err
	}
	c.wb.b = wire.AppendError(c.wb.b, id, code, msg)
	c.framesOut++
	return c.flushLocked(c.proto.InFlight() > 1)
}

// Registrar learns the id of a request just before it is queued, so that
// ids are assigned in the order they go on the wire. Returning false
// abandons the request (it is not sent and SendRequest reports ErrGoAway).
type Registrar interface {
	Register(id uint64) bool
}

// SendRequest assigns the next request id, tells r, and queues the REQUEST.
// It waits for room in the write queue until ctx ends. more says other
// requests are likely to be sent at once (calls already in flight): the
// write then yields once so that they join the same write call.
func (c *Conn) SendRequest(ctx context.Context, timeoutMillis uint32, method string, body []byte, r Registrar, more bool) (uint64, error) {
	c.wmu.Lock()
	if err := c.reserveLocked(ctx, wire.HeaderLen+5+len(method)+len(body)); err != nil {
		c.wmu.Unlock()
		return 0, err
	}
	id := c.nextID + 1
	if !r.Register(id) {
		c.releaseIfIdleLocked()
		c.wmu.Unlock()
		return 0, NotProcessed(ErrGoAway)
	}
	c.nextID = id
	c.wb.b = wire.AppendRequest(c.wb.b, id, timeoutMillis, method, body)
	c.framesOut++
	return id, c.flushLocked(more)
}

// ensureLocked makes sure a queue buffer is there to append to.
func (c *Conn) ensureLocked() {
	if c.wb == nil {
		c.wb = c.sh.wpool.get()
	}
}

// reserveLocked waits until n more bytes fit in the write queue (a frame
// alone in an empty queue always fits), the connection closes, or ctx ends.
func (c *Conn) reserveLocked(ctx context.Context, n int) error {
	for {
		if c.isClosed.Load() {
			return c.Err()
		}
		if c.wfin || c.finPending {
			return fmt.Errorf("%w: already sent FIN", ErrConnClosed)
		}
		queued := c.inWrite
		if c.wb != nil {
			queued += len(c.wb.b)
		}
		if queued == 0 || queued+n <= c.sh.cfg.WriteQueueSize {
			c.ensureLocked()
			return nil
		}
		if c.wwait == nil {
			c.wwait = make(chan struct{})
		}
		ch := c.wwait
		c.wmu.Unlock()
		var done <-chan struct{}
		if ctx != nil {
			done = ctx.Done()
		}
		select {
		case <-ch:
		case <-c.Done():
		case <-done:
			c.wmu.Lock()
			return ctx.Err()
		}
		c.wmu.Lock()
	}
}

// wakeLocked wakes senders waiting for room.
func (c *Conn) wakeLocked() {
	if c.wwait != nil {
		close(c.wwait)
		c.wwait = nil
	}
}

// flushLocked writes the queue unless another goroutine is already doing
// so; it unlocks wmu. With yield, the new flusher first lets runnable
// goroutines run, so that frames they are about to queue (other responses
// of a pipelined batch, other calls) go out in the same write call.
func (c *Conn) flushLocked(yield bool) error {
	if c.flushing {
		c.wmu.Unlock()
		return nil
	}
	c.flushing = true
	if yield {
		c.wmu.Unlock()
		runtime.Gosched()
		c.wmu.Lock()
	}
	for c.wb != nil && len(c.wb.b) > 0 {
		batch := c.takeBatchLocked()
		c.wmu.Unlock()
		n, err := c.write(batch, false)
		c.wmu.Lock()
		c.inWrite = 0
		if err != nil {
			c.sh.wpool.put(batch)
			c.failFlushLocked(err)
			return c.Err()
		}
		if n < len(batch.b) {
			// The socket buffer is full: the rest goes first, and a
			// goroutine waits for the socket while the sender returns.
			batch.b = batch.b[:copy(batch.b, batch.b[n:])]
			if c.wb != nil {
				batch.b = append(batch.b, c.wb.b...)
				c.sh.wpool.put(c.wb)
			}
			c.wb = batch
			c.stalled.Store(Mono())
			go c.flushBlocking()
			c.wmu.Unlock()
			return nil
		}
		batch.b = batch.b[:0]
		if c.wb == nil {
			c.wb = batch
		} else {
			c.spare = batch
		}
		c.wakeLocked()
	}
	c.endFlushLocked()
	return nil
}

// takeBatchLocked takes the queued bytes for writing; senders queue into
// the spare buffer meanwhile.
func (c *Conn) takeBatchLocked() *buffer {
	batch := c.wb
	c.wb, c.spare = c.spare, nil
	c.inWrite = len(batch.b)
	return batch
}

// endFlushLocked gives up the flusher role once the queue is empty, sends
// a pending FIN, and unlocks wmu.
func (c *Conn) endFlushLocked() {
	c.stalled.Store(0)
	c.flushing = false
	fin := c.idleLocked()
	c.wmu.Unlock()
	if fin {
		c.sendFIN()
	}
}

// failFlushLocked gives up the flusher role after a write error, unlocks
// wmu and closes the connection.
func (c *Conn) failFlushLocked(err error) {
	c.stalled.Store(0)
	c.flushing = false
	c.wmu.Unlock()
	c.Close(fmt.Errorf("%w: write: %w", ErrConnClosed, err))
}

// flushBlocking writes the queue, waiting for the socket, until it is
// empty. The monitor cuts the connection if no byte moves for WriteTimeout.
func (c *Conn) flushBlocking() {
	c.wmu.Lock()
	for c.wb != nil && len(c.wb.b) > 0 {
		batch := c.takeBatchLocked()
		c.wmu.Unlock()
		_, err := c.write(batch, true)
		c.wmu.Lock()
		c.inWrite = 0
		batch.b = batch.b[:0]
		c.spare = batch
		if err != nil {
			c.failFlushLocked(err)
			return
		}
		c.wakeLocked()
	}
	c.endFlushLocked()
}

// idleLocked returns the queue's buffers to the pool once nothing is queued
// and reports whether a FIN is due.
func (c *Conn) idleLocked() (fin bool) {
	c.releaseIfIdleLocked()
	if c.finPending && !c.flushing && (c.wb == nil || len(c.wb.b) == 0) {
		c.finPending = false
		c.wfin = true
		return true
	}
	return false
}

func (c *Conn) releaseIfIdleLocked() {
	if c.flushing || (c.wb != nil && len(c.wb.b) > 0) {
		return
	}
	c.sh.wpool.put(c.wb)
	c.sh.wpool.put(c.spare)
	c.wb, c.spare = nil, nil
}

// Finish closes the connection gracefully: it sends our FIN once
// everything queued is written, and closes when the peer's FIN arrives (or
// after LingerTimeout). Nothing more can be sent.
func (c *Conn) Finish() { c.requestFIN() }

// requestFIN sends our FIN once everything queued is written.
func (c *Conn) requestFIN() {
	c.wmu.Lock()
	if c.wfin || c.finPending {
		c.wmu.Unlock()
		return
	}
	c.finPending = true
	fin := c.idleLocked()
	c.wmu.Unlock()
	if fin {
		c.sendFIN()
	}
}

// sendFIN half-closes the socket. The peer answers with its own FIN, which
// the reader sees; the monitor closes outright after LingerTimeout.
func (c *Conn) sendFIN() {
	c.halfClosed.Store(Mono())
	if c.proto.role == RoleClient {
		c.Start() // the peer's FIN must be read
	}
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.nc.(closeWriter)
	switch {
	case c.peerFIN.Load():
		c.Close(errClosedByPeer)
	case !ok || cw.CloseWrite() != nil:
		c.Close(nil)
	}
}

// write writes the batch to the socket. Without block it stops when the
// socket buffer is full and reports how much went; with block it waits for
// the socket until all of it is written or the connection closes.
func (c *Conn) write(batch *buffer, block bool) (int, error) {
	batch.n, batch.err = 0, nil
	c.wcur, c.wblock = batch, block
	err := c.raw.Write(c.writeFn)
	c.wcur = nil
	n := batch.n
	c.bytesOut.Add(uint64(n))
	if err == nil {
		err = batch.err
	}
	batch.n, batch.err = 0, nil
	return n, err
}

func (c *Conn) onWritable(fd uintptr) bool {
	w := c.wcur
	for w.n < len(w.b) {
		n, err := unix.Write(int(fd), w.b[w.n:])
		if n > 0 {
			w.n += n
			c.writes.Add(1)
			if c.wblock {
				c.stalled.Store(Mono())
			}
		}
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN:
			return !c.wblock
		default:
			w.err = err
			return true
		}
	}
	return true
}
