//go:build linux

package evloop

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tcppro/tcppro/internal/bufpool"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/wire"
)

// Conn is one connection: a core driven over a socket by a loop (see the
// package comment). Its methods are those of *netconn.Conn, with Start in
// place of Run.
type Conn struct {
	mu      sync.Mutex
	core    *core.Conn
	lp      *loop
	id      uint64 // the loop's name for it (epoll data), once started
	fd      int32  // -1 once closed
	events  uint32 // what the loop watches the socket for; 0: not in the epoll set
	heapIdx int32  // the loop's mutex: index in its timer heap, or -1
	pendOff int32

	started  bool
	closing  bool // the core is done: the socket is being closed
	closed   bool // the descriptor is closed
	notified bool // onDone was started
	writing  bool // a goroutine, or the loop while parked, holds the writer role
	inWrite  bool // a write is in progress with mu released: the descriptor stays open
	parked   bool // pend waits for the socket to drain (EPOLLOUT)
	// readOwed: the core wanted the next read when the last one was
	// handed over, so that read happens even if the core has stopped
	// wanting to read meanwhile (a server whose answers fill its write
	// queue pauses reading): as in netconn, whose reader is then already
	// in that read, a PING sent just after a request that pauses reading
	// is read and answered ahead of the queued answer.
	readOwed bool

	pend    *[]byte       // parked: the rest of a write
	rtail   *[]byte       // the start of a frame not fully arrived; nil when none
	posted  *[]func()     // posted by Sink methods, run once mu is released
	done    chan struct{} // made by Done, closed with the descriptor
	onDone  func()
	timerAt int64 // the time the loop will tick it at; 0: not armed
	heapAt  int64 // the loop's mutex: when the loop ticks it
	created int64 // netconn.Now() when adopted

	addrs // kept small: an idle connection costs what its fields cost
}

// Start registers the connection with its loop and returns at once: from
// then on the loop reads it and fires its timers, and a client's HELLO is
// written (on this goroutine). onDone, if not nil, runs once, on a
// goroutine of its own, after the socket is closed. Start must be called
// once, unless the connection was closed before (Close closes the socket
// of a connection never started); a connection adopted by Loops closed
// since is closed with ErrLoopsClosed.
func (c *Conn) Start(onDone func()) {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		panic("evloop: Conn.Start called twice")
	}
	c.started, c.onDone = true, onDone
	if !c.closing && !c.lp.register(c) {
		c.core.Close(netconn.Now(), ErrLoopsClosed)
	}
	c.release(nil, -1)
}

// release, entered with the mutex held, does what the core's state calls
// for — closing the socket, writing its output, watching the socket for
// what the core waits for, arming the timer — then releases the mutex and
// runs what Sink methods posted. w is the loop's write buffer on the
// loop's goroutine, nil elsewhere; mine is as in writeLocked.
func (c *Conn) release(w *[]byte, mine int) {
	for {
		k := c.core
		if k.Done() {
			c.closeLocked()
			break
		}
		if !c.started {
			break
		}
		if !c.writing && (k.HasOutput() || k.WantFin()) {
			c.writing = true
			c.writeLocked(w, mine)
			continue
		}
		if err := c.watchLocked(); err != nil {
			k.Close(netconn.Now(), err)
			continue
		}
		if next := k.Next(); next != 0 && (c.timerAt == 0 || next < c.timerAt) {
			c.timerAt = c.lp.arm(c, next)
		}
		break
	}
	var fs []func()
	if c.posted != nil {
		fs, c.posted = *c.posted, nil
	}
	var notify func()
	if c.closed && c.started && !c.notified {
		c.notified, notify = true, c.onDone
	}
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
	if notify != nil {
		go notify()
	}
}

// closeLocked, once the core is done, takes the connection off its loop
// and closes the descriptor, unless a write is in progress: its writer
// closes it as soon as the write returns.
func (c *Conn) closeLocked() {
	if !c.closing {
		c.closing = true
		if c.events != 0 {
			c.lp.epollCtl(epollDel, c, 0) // fails only if already gone
			c.events = 0
		}
		if c.id != 0 {
			c.lp.unregister(c)
		}
		bufpool.Put(c.rtail)
		c.rtail = nil
	}
	if c.closed || c.inWrite {
		return
	}
	closeFd(int(c.fd))
	c.fd = -1
	c.closed = true
	bufpool.Put(c.pend)
	c.pend, c.parked = nil, false
	if c.done != nil {
		close(c.done)
	}
	c.lp.n.Add(-1)
}

// tick is called by the loop when the connection's deadline has come.
func (c *Conn) tick() {
	c.mu.Lock()
	c.timerAt = 0
	if c.closing {
		c.mu.Unlock()
		return
	}
	now := netconn.Now()
	if c.core.Silent(now) && c.readable() {
		// The peer's bytes may be waiting in the socket (the process was
		// stopped or starved while they arrived): they are read before
		// the peer is judged silent.
		if c.readLocked() {
			c.readOwed = c.core.WantRead()
		}
		now = netconn.Now()
	}
	c.core.Tick(now)
	c.release(c.lp.wbuf, -1)
}

// command runs f on the core with the mutex held and the time, then does
// what follows from it.
func (c *Conn) command(mine int, f func(k *core.Conn, now int64)) {
	c.mu.Lock()
	f(c.core, netconn.Now())
	c.release(nil, mine)
}

// Call starts a client call (see core.Conn.Call). Its request is written
// on this goroutine if nobody else is writing.
func (c *Conn) Call(cl *core.Call) (err error) {
	c.command(1, func(k *core.Conn, now int64) { err = k.Call(now, cl) })
	return err
}

// Abandon gives up on a client call (see core.Conn.Abandon).
func (c *Conn) Abandon(cl *core.Call, err error) {
	c.command(-1, func(k *core.Conn, now int64) { k.Abandon(now, cl, err) })
}

// Answer answers a server's request (see core.Conn.Answer), and writes it
// on this goroutine if nobody else is writing.
func (c *Conn) Answer(id uint64, md wire.Metadata, body []byte) {
	c.command(0, func(k *core.Conn, now int64) { k.Answer(now, id, md, body) })
}

// AnswerError answers a server's request with an ERROR, like Answer.
func (c *Conn) AnswerError(id uint64, code wire.Code, msg string, md wire.Metadata) {
	c.command(0, func(k *core.Conn, now int64) { k.AnswerError(now, id, code, msg, md) })
}

// Drain ends a client connection gracefully (see core.Conn.Drain).
func (c *Conn) Drain() { c.command(-1, (*core.Conn).Drain) }

// Refuse refuses a new server connection (see core.Conn.Refuse).
func (c *Conn) Refuse(code wire.Code, msg string) {
	c.command(-1, func(k *core.Conn, now int64) { k.Refuse(now, code, msg) })
}

// GoAway sends GOAWAY (see core.Conn.GoAway).
func (c *Conn) GoAway(reason wire.Reason, msg string) (lastID uint64, first bool) {
	c.command(-1, func(k *core.Conn, now int64) { lastID, first = k.GoAway(now, reason, msg) })
	return lastID, first
}

// Close ends the connection at once with err and closes the socket (at
// once, or as soon as a write in progress on another goroutine returns).
func (c *Conn) Close(err error) {
	c.command(-1, func(k *core.Conn, now int64) { k.Close(now, err) })
}

// Post is for Sink methods, which run with the connection's mutex held:
// f runs once it is released, on the goroutine that released it — which
// may be a loop's: f must not block.
func (c *Conn) Post(f func()) {
	if c.posted == nil {
		c.posted = new([]func())
	}
	*c.posted = append(*c.posted, f)
}

// Done is closed once the socket is closed.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.closed {
			close(c.done)
		}
	}
	return c.done
}

// Err is why the connection failed, or nil (open, or ended gracefully).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.core.Err()
}

// Stats returns the core's counters.
func (c *Conn) Stats() core.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.core.Stats()
}

// Usable reports whether a client connection takes new calls.
func (c *Conn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.core.Usable()
}

// Peer is the peer's HELLO (the protocol's defaults before it arrived).
func (c *Conn) Peer() wire.Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.core.Peer()
}

// Created is when the connection was adopted.
func (c *Conn) Created() time.Time { return netconn.Wall(c.created) }

// Control runs f with the connection's socket descriptor, with the
// connection's mutex held, and reports whether it could: false once the
// descriptor is closed. f must be short and must not call into the
// connection (reading a socket option, for example).
func (c *Conn) Control(f func(fd int)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fd < 0 {
		return false
	}
	f(int(c.fd))
	return true
}

// RemoteAddr is the peer's address: a *net.TCPAddr, the same at every
// call, as a *net.TCPConn's.
func (c *Conn) RemoteAddr() net.Addr { return c.addrs.remote }

// LocalAddr is the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.addrs.localAddr()) }

// addrs are a connection's addresses: the peer's as Go has it (a copy of
// the adopted connection's, which it would otherwise pin), needed for
// every request a server hands its handler, and the local one, asked for
// rarely, packed into a word when it is IPv4.
type addrs struct {
	remote *net.TCPAddr
	local  uint64          // 1<<48 | address<<16 | port; 0: see local6
	local6 *netip.AddrPort // a local address other than IPv4
}

func (a *addrs) set(local, remote net.Addr) {
	if ra, ok := remote.(*net.TCPAddr); ok {
		a.remote = &net.TCPAddr{IP: slices.Clone(ra.IP), Port: ra.Port, Zone: ra.Zone}
	} else {
		a.remote = &net.TCPAddr{}
	}
	ap := addrPort(local)
	if ip := ap.Addr(); ip.Is4() {
		b := ip.As4()
		a.local = 1<<48 | uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(ap.Port())
		return
	}
	a.local6 = &ap
}

func (a *addrs) localAddr() netip.AddrPort {
	if v := a.local; v != 0 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16)}), uint16(v))
	}
	if a.local6 == nil {
		return netip.AddrPort{}
	}
	return *a.local6
}

// addrPort is a's address and port (kept so: a net.Addr costs more).
func addrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// NetConn returns a net.Conn that stands for the connection where an API
// hands one to its user (a handler's request, a ConnState hook): its
// addresses are the connection's, Close closes the connection (its calls
// end with ErrClosedByUser), and its reads, writes and deadlines fail with
// ErrOwnedByLoop — the loop owns the connection's bytes.
func (c *Conn) NetConn() net.Conn { return facade{c} }
