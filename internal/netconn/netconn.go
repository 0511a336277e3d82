// Package netconn drives a protocol core (internal/core) over any net.Conn:
// plain TCP, TLS, an in-memory pipe, a PROXY-protocol wrapper. It moves
// bytes and time and decides nothing about the protocol.
//
// Every call into the core is made with the connection's mutex held; the
// core's Sink is called with it held too. Three kinds of goroutine drive a
// connection:
//
//   - the reader (Run), one per connection, reads into a small buffer while
//     the connection is idle and a pooled one while bytes arrive, and feeds
//     the core. It never writes, so a peer that stops reading cannot stop it
//     from reading that peer's PINGs and CANCELs;
//   - a writer: whichever goroutine finds output pending and nobody writing
//     takes the writer role and writes until nothing is left. A goroutine
//     that may block (a server's handler goroutine, once its request is
//     answered) writes inline; the others (the reader, the timer, a client's
//     caller, whose call must return by its deadline) start a short-lived
//     writer goroutine. Each write is at most about one chunk, and the core
//     puts control frames first in each, so a PONG waits for at most one
//     chunk;
//   - the timer: one time.Timer per connection, armed at the core's next
//     deadline (Core.Next), ticks the core — except that a tick that would
//     find the peer silent (core.Conn.Silent) while the peer's bytes wait
//     unread in the socket (a reader not scheduled: a stopped or starved
//     process) waits for the reader's next hand-over, then judges.
//
// The socket is closed as soon as the core is done, whatever the other
// goroutines are doing: a blocked read or write returns at once.
package netconn

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/tcppro/tcppro/internal/bufpool"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/wire"
)

var base = time.Now()

// Now is the transport's clock: monotonic nanoseconds, never 0.
func Now() int64 { return int64(time.Since(base)) + 1 }

// Wall converts a time of the transport's clock to the wall clock's.
func Wall(t int64) time.Time { return base.Add(time.Duration(t - 1)) }

// At converts a wall-clock deadline to the transport's clock; the zero
// time is 0 (no deadline).
func At(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(base))+1, 1)
}

// smallRead is the read buffer an idle connection keeps: it takes a whole
// small request, and costs little per idle connection.
const smallRead = 256

// maxWrite is about the most one write hands to the socket: one chunk of
// the default frame size plus what control frames and small answers fit.
const maxWrite = 64 << 10

// Conn is one connection: a core driven over a net.Conn.
type Conn struct {
	mu       sync.Mutex
	core     *core.Conn
	nc       net.Conn
	writing  bool          // a goroutine holds the writer role
	readWait bool          // the reader waits (on cond) for the core to want reading again
	closing  bool          // the socket is being closed
	closed   bool          // the socket is closed
	cond     sync.Cond     // on mu: the reader waits for wanting or closed
	posted   []func()      // posted by Sink methods, run once mu is released
	done     chan struct{} // made by Done, closed with the socket
	timer    *time.Timer
	timerAt  int64  // when the timer is armed for; 0: not armed
	hold     int64  // no tick before: the reader has bytes to hand over first (see onTimer)
	held     bool   // a silence verdict is deferred until the reader's next hand-over
	heldAt   uint64 // reads when it was deferred
	reads    uint64 // reads handed to the core
	created  time.Time

	// The reader's own.
	wanted bool // the core wanted the next read when the last one was handed over
	small  [smallRead]byte
	rbuf   *[]byte // a pooled buffer, while bytes arrive
	have   int     // bytes not consumed yet at the start of the read buffer
}

// New prepares a connection over nc with the Params its endpoint shares
// (see core.Params); Run drives it. sink receives the core's events (see
// core.Sink).
func New(nc net.Conn, p *core.Params, sink core.Sink) *Conn {
	c := &Conn{nc: nc, created: time.Now()}
	c.cond.L = &c.mu
	c.core = p.New(sink, Now())
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.timer.Stop()
	return c
}

// action is what must be done once the mutex is released.
type action uint8

const (
	actWrite     action = 1 << iota // start a writer goroutine
	actWriteHere                    // write on this goroutine
	actClose                        // close the socket
	actRun                          // run what Sink methods posted
)

// afterLocked looks at the core after a change and decides what follows:
// closing the socket, a writer, waking the reader, arming the timer.
func (c *Conn) afterLocked(now int64, inline bool) (a action) {
	k := c.core
	if len(c.posted) > 0 {
		a |= actRun
	}
	if k.Done() {
		if !c.closing {
			c.closing = true
			a |= actClose
		}
		return a
	}
	if !c.writing && (k.HasOutput() || k.WantFin()) {
		c.writing = true
		if inline {
			a |= actWriteHere
		} else {
			a |= actWrite
		}
	}
	if c.readWait && k.WantRead() {
		c.readWait = false
		c.cond.Signal()
	}
	if next := k.Next(); next != 0 {
		next = max(next, c.hold)
		if c.timerAt == 0 || next < c.timerAt {
			c.timerAt = next
			c.timer.Reset(time.Duration(max(next-now, 0)))
		}
	}
	return a
}

func (c *Conn) do(a action) {
	if a&actRun != 0 {
		c.mu.Lock()
		fs := c.posted
		c.posted = nil
		c.mu.Unlock()
		for _, f := range fs {
			f()
		}
	}
	if a&actClose != 0 {
		c.timer.Stop()
		if raw, ok := c.nc.(interface{ NetConn() net.Conn }); ok {
			// A TLS connection: closing it would first try to send a
			// close_notify, which waits on a peer that does not read. A
			// graceful end has sent it already (CloseWrite).
			raw.NetConn().Close()
		}
		c.nc.Close()
		c.mu.Lock()
		c.closed = true
		if c.done != nil {
			close(c.done)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
	if a&actWrite != 0 {
		go c.writeLoop()
	}
	if a&actWriteHere != 0 {
		c.writeLoop()
	}
}

// command runs f on the core, with the mutex held and the time, then does
// what follows from it (a writer, the timer, closing the socket).
func (c *Conn) command(f func(k *core.Conn, now int64)) {
	c.mu.Lock()
	now := Now()
	f(c.core, now)
	a := c.afterLocked(now, false)
	c.mu.Unlock()
	c.do(a)
}

// holdStep is how often a deferred silence verdict looks again while the
// reader has not handed anything over (its hand-over re-arms the timer at
// once).
const holdStep = int64(10 * time.Millisecond)

func (c *Conn) onTimer() {
	c.command(func(k *core.Conn, now int64) {
		c.timerAt = 0
		if k.Silent(now) && !(c.held && c.reads != c.heldAt) && unread(c.nc) {
			// The peer's bytes wait in the socket (the process was stopped
			// or starved while they arrived, and the reader has not run
			// yet): they may prove the peer alive, so the verdict waits for
			// the reader's next hand-over — one, as on the event loop: a
			// peer that keeps the socket full of bytes that are no
			// progress (empty DATA frames) is judged after it.
			if !c.held {
				c.held, c.heldAt = true, c.reads
			}
			c.hold = now + holdStep
			return
		}
		c.held, c.hold = false, 0
		k.Tick(now)
	})
}

// writeLoop writes what the core has to send until nothing is left. The
// caller has taken the writer role.
func (c *Conn) writeLoop() {
	c.mu.Lock()
	c.coalesceLocked(1) // its own request may be in flight (a client's)
	c.writeLocked()
}

// coalesceLocked, with the mutex held, yields once, the mutex released,
// when data is queued and more requests than mine (the writer's own) are
// in flight: the goroutines about to queue theirs (callers woken by their
// answers, handlers finishing) do so first, and one write carries them
// all. A write of control frames alone (a PONG) never waits.
func (c *Conn) coalesceLocked(mine int) {
	if c.core.InFlight() > mine && c.core.DataQueued() {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
}

// writeLocked is writeLoop entered with the mutex held; it returns with
// the mutex released and the writer role given up.
func (c *Conn) writeLocked() {
	bp := bufpool.Get(maxWrite)
	defer func() { bufpool.Put(bp) }() // the buffer held at the end, which may have grown
	for {
		now := Now()
		buf := c.core.Transmit(now, (*bp)[:0], maxWrite)
		if len(buf) == 0 {
			if !c.core.WantFin() {
				c.writing = false
				a := c.afterLocked(now, false)
				c.mu.Unlock()
				c.do(a)
				return
			}
			c.mu.Unlock()
			half := closeWrite(c.nc)
			c.mu.Lock()
			c.core.FinSent(Now(), half)
		} else {
			if cap(buf) > cap(*bp) {
				bufpool.Put(bp)
				grown := buf
				bp = &grown
			}
			c.mu.Unlock()
			n, err := c.nc.Write(buf)
			c.mu.Lock()
			now = Now()
			c.core.Written(now, n)
			if err != nil {
				c.core.WriteFailed(now, err)
			}
		}
		if a := c.afterLocked(Now(), false); a != 0 {
			c.mu.Unlock()
			c.do(a)
			c.mu.Lock()
		}
	}
}

// closeWrite half-closes nc if it can, and reports whether it did.
func closeWrite(nc net.Conn) bool {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite() == nil
	}
	return false
}

// Run reads from the connection and feeds the core until the connection
// is done and its socket closed. It is the connection's goroutine.
func (c *Conn) Run() {
	defer c.dropReadBuf()
	c.started()
	for c.readOnce() {
	}
}

// readOnce waits until the core wants bytes, reads once and hands what
// arrived to the core. It reports false once the connection is done.
func (c *Conn) readOnce() bool {
	if !c.wanted && !c.waitWanted() {
		return false
	}
	buf := c.readBuf()
	n, err := c.nc.Read(buf[c.have:])
	c.received(buf, n, err)
	return true
}

// started sends what the core has from the start (a client's HELLO) and
// arms the handshake timer.
func (c *Conn) started() { c.command(func(*core.Conn, int64) {}) }

// waitWanted waits while the core does not want to read (a server paused
// by a peer that does not read its answers, or a connection that is
// ending); false means the connection is done.
func (c *Conn) waitWanted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.core.WantRead() {
		if c.closed {
			return false
		}
		c.readWait = true
		c.cond.Wait()
	}
	return true
}

// received hands the bytes of a read, and its error, to the core.
func (c *Conn) received(buf []byte, n int, err error) {
	filled := c.have+n == len(buf)
	c.mu.Lock()
	now := Now()
	if n > 0 {
		total := c.have + n
		used := c.core.Receive(now, buf[:total])
		c.have = copy(buf, buf[used:total])
		c.reads++
		c.hold = 0 // a deferred verdict is given now (see onTimer)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			c.core.ReceiveEOF(now)
		} else {
			c.core.ReadFailed(now, err)
		}
	}
	a := c.afterLocked(now, false)
	c.wanted = c.core.WantRead() && !c.closing // no need to wait for the next read
	c.mu.Unlock()
	c.do(a)
	c.sizeReadBuf(filled)
}

// readBuf is the buffer the next read goes into, after c.have bytes kept.
func (c *Conn) readBuf() []byte {
	if c.rbuf != nil {
		return *c.rbuf
	}
	return c.small[:]
}

// sizeReadBuf picks the buffer for the next read: the small one while the
// connection is quiet, a pooled one of ReadBufferSize while reads fill
// their buffer, and one large enough for a frame that does not fit.
func (c *Conn) sizeReadBuf(filled bool) {
	cur := c.readBuf()
	need := c.have + 1
	if c.have >= wire.HeaderLen {
		need = max(need, wire.FrameLen(cur[:c.have]))
	}
	switch {
	case need > len(cur) || (filled && c.rbuf == nil):
		size := max(need, c.core.Config().ReadBufferSize)
		nb := bufpool.Get(size)
		*nb = (*nb)[:cap(*nb)]
		copy(*nb, cur[:c.have])
		bufpool.Put(c.rbuf)
		c.rbuf = nb
	case c.rbuf != nil && !filled && need <= len(c.small):
		copy(c.small[:], cur[:c.have])
		bufpool.Put(c.rbuf)
		c.rbuf = nil
	}
}

func (c *Conn) dropReadBuf() {
	bufpool.Put(c.rbuf)
	c.rbuf = nil
}

// Call starts a client call (see core.Conn.Call).
func (c *Conn) Call(cl *core.Call) (err error) {
	c.command(func(k *core.Conn, now int64) { err = k.Call(now, cl) })
	return err
}

// Abandon gives up on a client call (see core.Conn.Abandon).
func (c *Conn) Abandon(cl *core.Call, err error) {
	c.command(func(k *core.Conn, now int64) { k.Abandon(now, cl, err) })
}

// Answer answers a server's request (see core.Conn.Answer), and writes it
// on this goroutine if nobody else is writing.
func (c *Conn) Answer(id uint64, md wire.Metadata, body []byte) {
	c.mu.Lock()
	c.core.Answer(Now(), id, md, body)
	c.flushHere()
}

// AnswerError answers a server's request with an ERROR, like Answer.
func (c *Conn) AnswerError(id uint64, code wire.Code, msg string, md wire.Metadata) {
	c.mu.Lock()
	c.core.AnswerError(Now(), id, code, msg, md)
	c.flushHere()
}

// flushHere, entered with the mutex held, writes on this goroutine if
// there is output and nobody is writing, and releases the mutex.
func (c *Conn) flushHere() {
	a := c.afterLocked(Now(), true)
	if a&actWriteHere != 0 {
		if a &^= actWriteHere; a != 0 {
			c.mu.Unlock()
			c.do(a)
			c.mu.Lock()
		}
		c.coalesceLocked(0) // the answered request is no longer in flight
		c.writeLocked()
		return
	}
	c.mu.Unlock()
	c.do(a)
}

// Drain ends a client connection gracefully (see core.Conn.Drain).
func (c *Conn) Drain() { c.command((*core.Conn).Drain) }

// Refuse refuses a new server connection (see core.Conn.Refuse).
func (c *Conn) Refuse(code wire.Code, msg string) {
	c.command(func(k *core.Conn, now int64) { k.Refuse(now, code, msg) })
}

// GoAway sends GOAWAY (see core.Conn.GoAway).
func (c *Conn) GoAway(reason wire.Reason, msg string) (lastID uint64, first bool) {
	c.command(func(k *core.Conn, now int64) { lastID, first = k.GoAway(now, reason, msg) })
	return lastID, first
}

// Close ends the connection at once with err and closes the socket, even
// while other goroutines read or write it.
func (c *Conn) Close(err error) {
	c.command(func(k *core.Conn, now int64) { k.Close(now, err) })
}

// Post is for Sink methods, which run with the connection's mutex held:
// f runs once it is released, on the goroutine that released it. Hooks
// that may call back into the connection's owner (an Observer asking for
// Stats) go through it.
func (c *Conn) Post(f func()) { c.posted = append(c.posted, f) }

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

// NetConn is the connection's socket.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Created is when the connection was set up.
func (c *Conn) Created() time.Time { return c.created }
