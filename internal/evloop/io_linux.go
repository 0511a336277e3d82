//go:build linux

package evloop

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/internal/bufpool"
	"github.com/tcppro/tcppro/internal/netconn"
)

const epollDel = unix.EPOLL_CTL_DEL

// ready is called by the loop when c's socket is ready: it finishes a
// parked write, reads once, and does what follows.
func (c *Conn) ready(ev uint32) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if c.parked && ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.flushParked()
	}
	if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 && c.readable() {
		if c.readLocked() {
			c.readOwed = c.core.WantRead()
		}
	}
	c.release(c.lp.wbuf, -1)
}

// readable reports whether the loop reads the socket now: it is watched
// for reading, and the core wants to read (or is owed a read).
func (c *Conn) readable() bool {
	return c.events&unix.EPOLLIN != 0 && !c.core.Done() && (c.core.WantRead() || c.readOwed)
}

// readLocked reads once, on the loop, and hands the bytes to the core.
// Reads go into the loop's buffer, after the start of a frame kept from
// the previous read; only a frame larger than that buffer is read into a
// buffer of the connection's own. What the core leaves unconsumed (the
// start of a frame) is kept in a pooled buffer, dropped once the frame is
// complete. It reports whether the read came to something (bytes, the end
// of the stream or an error) rather than nothing (EAGAIN).
func (c *Conn) readLocked() bool {
	lp := c.lp
	buf := lp.rbuf
	have := 0
	if c.rtail != nil {
		tail := *c.rtail
		have = len(tail)
		if need := frameNeed(tail); need <= len(lp.rbuf) {
			copy(buf, tail)
			bufpool.Put(c.rtail)
			c.rtail = nil
		} else {
			if need > cap(tail) {
				nb := bufpool.Get(need)
				*nb = (*nb)[:copy(*nb, tail)]
				bufpool.Put(c.rtail)
				c.rtail = nb
			}
			buf = (*c.rtail)[:cap(*c.rtail)]
		}
	}
	if !c.core.WantRead() {
		// The read owed since before the core paused reading: no more
		// than a read of netconn's would take.
		buf = buf[:min(len(buf), have+c.core.Config().ReadBufferSize)]
	}
	n, err := readFd(int(c.fd), buf[have:])
	now := netconn.Now()
	switch {
	case n > 0:
		total := have + n
		used := c.core.Receive(now, buf[:total])
		rest := buf[used:total]
		switch {
		case len(rest) == 0:
			bufpool.Put(c.rtail)
			c.rtail = nil
		case c.rtail != nil: // buf is the tail's buffer
			*c.rtail = (*c.rtail)[:copy((*c.rtail)[:cap(*c.rtail)], rest)]
		default:
			nb := bufpool.Get(len(rest))
			copy(*nb, rest)
			c.rtail = nb
		}
	case err == unix.EAGAIN:
		// Woken for nothing (another thread read it; spurious).
		return false
	case err == nil:
		c.core.ReceiveEOF(now)
	default:
		c.core.ReadFailed(now, os.NewSyscallError("read", err))
	}
	return true
}

// writeLocked writes what the core has to send until nothing is left, the
// core is done, or the socket takes no more: the rest of that write is
// then kept and the connection parked, the writer role passing to the
// loop. Entered with the mutex held and the writer role taken; returns
// with the mutex held. The mutex is released during each write, so that
// output queued meanwhile leaves in the next one.
//
// w is the loop's write buffer on the loop's goroutine; elsewhere (w nil)
// a pooled buffer is borrowed for the duration. mine >= 0 is a goroutine
// other than the loop with mine of the requests in flight its own (a
// caller's call, a handler's answered request: 1, 0): it yields once
// before writing when data is queued and others are in flight, so that
// the goroutines about to queue theirs (callers woken by their answers,
// handlers finishing) do so first and one write carries them all (as in
// netconn). A write of control frames alone never waits.
func (c *Conn) writeLocked(w *[]byte, mine int) {
	bp := w
	if w == nil {
		bp = bufpool.Get(maxWrite)
	}
	defer func() {
		if w == nil {
			bufpool.Put(bp) // the buffer held at the end, which may have grown
		}
	}()
	if mine >= 0 && c.core.InFlight() > mine && c.core.DataQueued() {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	written := 0 // by the loop, this time
	for {
		k := c.core
		if k.Done() {
			c.writing = false
			return
		}
		buf := k.Transmit(netconn.Now(), (*bp)[:0], maxWrite)
		if len(buf) == 0 {
			if !k.WantFin() {
				c.writing = false
				return
			}
			err := unix.Shutdown(int(c.fd), unix.SHUT_WR)
			k.FinSent(netconn.Now(), err == nil)
			continue
		}
		if cap(buf) > cap(*bp) { // grown for a frame larger than it
			if w == nil {
				bufpool.Put(bp)
				bp = new([]byte)
			}
			*bp = buf[:0]
		}
		fd := int(c.fd)
		c.inWrite = true
		c.mu.Unlock()
		n, err := writeFd(fd, buf)
		c.mu.Lock()
		c.inWrite = false
		now := netconn.Now()
		if n > 0 {
			k.Written(now, n)
		}
		switch {
		case err == nil:
			if w == nil {
				break
			}
			if written += n; written >= loopWriteBudget && (k.HasOutput() || k.WantFin()) && !k.Done() {
				// The other connections of the loop wait while it
				// writes this one's: it goes on when the loop next
				// finds the socket writable (parked with nothing half
				// written), after their events.
				c.parked = true
				return
			}
		case err == unix.EAGAIN && !k.Done():
			p := bufpool.Get(len(buf) - n)
			copy(*p, buf[n:])
			c.pend, c.pendOff, c.parked = p, 0, true // pend is at most maxWrite or one frame: int32
			return                                   // the loop writes the rest: it holds the writer role now
		default:
			k.WriteFailed(now, os.NewSyscallError("write", err))
		}
	}
}

// flushParked, on the loop, writes the rest of a parked write; once it is
// out, the writer role is free again. (A connection parked by the loop's
// write budget has nothing half written.)
func (c *Conn) flushParked() {
	if c.pend == nil {
		c.parked, c.writing = false, false
		return
	}
	for int(c.pendOff) < len(*c.pend) {
		n, err := writeFd(int(c.fd), (*c.pend)[c.pendOff:])
		if n > 0 {
			c.pendOff += int32(n)
			c.core.Written(netconn.Now(), n)
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			c.core.WriteFailed(netconn.Now(), os.NewSyscallError("write", err))
			break
		}
	}
	bufpool.Put(c.pend)
	c.pend, c.pendOff, c.parked, c.writing = nil, 0, false, false
}

// watchLocked makes the loop watch the socket for what the connection
// waits for: reading while the core wants to read, writing while parked.
// A socket watched for nothing leaves the epoll set, which would otherwise
// report its EPOLLHUP for ever.
func (c *Conn) watchLocked() error {
	var want uint32
	if c.core.WantRead() || (c.readOwed && !c.core.Done()) {
		want |= unix.EPOLLIN
	}
	if c.parked {
		want |= unix.EPOLLOUT
	}
	if want == c.events {
		return nil
	}
	op := unix.EPOLL_CTL_MOD
	switch {
	case c.events == 0:
		op = unix.EPOLL_CTL_ADD
	case want == 0:
		op = epollDel
	}
	if err := c.lp.epollCtl(op, c, want); err != nil {
		return err
	}
	c.events = want
	return nil
}

// readFd reads once into b.
func readFd(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return max(n, 0), err
		}
	}
}

// writeFd writes b until all of it is written or the socket fails or
// takes no more (EAGAIN), and returns how much it wrote.
func writeFd(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(fd, b[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == unix.EINTR:
		case err != nil:
			return n, err
		case m <= 0:
			return n, unix.EIO // a write of nothing: never on a socket
		}
	}
	return n, nil
}

func closeFd(fd int) { unix.Close(fd) }
