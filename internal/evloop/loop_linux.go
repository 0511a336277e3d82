//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/wire"
)

// readSize is a loop's read buffer: a frame of the default MAX_FRAME_SIZE
// with its header fits, with room for more.
const readSize = 128 << 10

// maxWrite is about the most one write hands to the socket, as in netconn:
// one chunk of the default frame size plus control frames and small
// answers.
const maxWrite = 64 << 10

// loopWriteBudget is about the most the loop writes for one connection
// before it turns to the others' events: the rest waits for the socket's
// next EPOLLOUT, one turn of the loop later.
const loopWriteBudget = 4 * maxWrite

// maxEvents is how many readiness events one epoll_wait returns at most.
const maxEvents = 256

// Loops is a group of event loops.
type Loops struct {
	loops     []*loop
	next      atomic.Uint32 // round robin among equally loaded loops
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// loop is one event loop: an epoll set, its goroutine, and the timers of
// its connections.
type loop struct {
	epfd, evfd int
	// epf is the epoll descriptor as a file that Go's poller watches: the
	// loop's goroutine parks in it (no thread blocked in epoll_wait) until
	// the epoll set has events or its deadline passes.
	epf  *os.File
	eprc syscall.RawConn

	mu         sync.Mutex
	conns      []*Conn  // started and not closed, by slot (the low half of their id; 0 is the eventfd's)
	free       []uint32 // slots free in conns
	gen        uint32   // the high half of the last id given
	timers     timerHeap
	sleeping   bool  // the goroutine is parked (or about to park)
	sleepUntil int64 // the deadline it parks until (a multiple of timerGrain); 0: none
	woken      bool  // the eventfd was written and not read yet
	closed     bool  // no more connections start on it
	stopping   bool  // the goroutine must return

	n atomic.Int64 // connections adopted on it and not closed

	// The loop's goroutine's own.
	rbuf   []byte
	wbuf   *[]byte
	events []unix.EpollEvent
}

// NewLoops starts n event loops; n <= 0 means runtime.GOMAXPROCS(0).
func NewLoops(n int) (*Loops, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	l := &Loops{}
	for range n {
		lp, err := newLoop()
		if err != nil {
			for _, lp := range l.loops {
				lp.closeFds()
			}
			return nil, err
		}
		l.loops = append(l.loops, lp)
	}
	for _, lp := range l.loops {
		l.wg.Go(lp.run)
	}
	return l, nil
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // id 0: the eventfd
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	epf, eprc, err := pollable(epfd)
	if err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	wbuf := make([]byte, 0, maxWrite)
	return &loop{
		epfd:   epfd,
		evfd:   evfd,
		epf:    epf,
		eprc:   eprc,
		conns:  make([]*Conn, 1),
		rbuf:   make([]byte, readSize),
		wbuf:   &wbuf,
		events: make([]unix.EpollEvent, maxEvents),
	}, nil
}

// pollable hands the epoll descriptor to Go's poller (an epoll set is
// readable while it has events), so that the loop can wait for it as any
// goroutine waits for a socket, with a deadline.
func pollable(epfd int) (*os.File, syscall.RawConn, error) {
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err == nil {
		// Deadlines work only on a descriptor the poller took.
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("evloop: the runtime poller does not take an epoll descriptor: %w", err)
	}
	return f, rc, nil
}

func (lp *loop) closeFds() {
	lp.epf.Close() // closes epfd
	unix.Close(lp.evfd)
}

// Close closes every connection of the loops with ErrLoopsClosed, stops
// the loops and waits for the loops' goroutines to return (a write in
// progress on another goroutine closes its descriptor when it returns, and
// the connections' onDone functions run on goroutines of their own, maybe
// after Close has returned). Connections adopted and not started yet are
// closed when they start. Close is idempotent.
func (l *Loops) Close() error {
	l.closeOnce.Do(func() {
		for _, lp := range l.loops {
			lp.mu.Lock()
			lp.closed = true
			var conns []*Conn
			for _, c := range lp.conns {
				if c != nil {
					conns = append(conns, c)
				}
			}
			lp.mu.Unlock()
			for _, c := range conns {
				c.Close(ErrLoopsClosed) // leaves the epoll set before it returns
			}
		}
		for _, lp := range l.loops {
			lp.mu.Lock()
			lp.stopping = true
			lp.mu.Unlock()
			lp.wake()
		}
		l.wg.Wait()
		for _, lp := range l.loops {
			lp.closeFds()
		}
	})
	return nil
}

// pick returns the loop with the fewest connections (round robin among
// equals); nil only when there is none.
func (l *Loops) pick() *loop {
	start := int(l.next.Add(1))
	var best *loop
	var bestN int64
	for i := range l.loops {
		lp := l.loops[(start+i)%len(l.loops)]
		if n := lp.n.Load(); best == nil || n < bestN {
			best, bestN = lp, n
		}
	}
	return best
}

// Adopt takes over a connected *net.TCPConn (plain TCP only: any other
// type is an error, and nc is left to the caller). It duplicates the
// socket's descriptor, makes it non-blocking and closes nc, so that Go's
// poller no longer watches it (socket options set on nc stay), and returns
// a Conn driving a new core on it (with p, the Params its endpoint
// shares), on the least-loaded loop. Nothing is read or written before
// Start. On error nc is left open.
func (l *Loops) Adopt(nc net.Conn, p *core.Params, sink core.Sink) (*Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("evloop: Adopt takes a *net.TCPConn, not a %T", nc)
	}
	lp := l.pick()
	if lp == nil {
		return nil, errors.New("evloop: no loops")
	}
	lp.mu.Lock()
	closed := lp.closed
	lp.mu.Unlock()
	if closed {
		return nil, ErrLoopsClosed
	}
	fd, err := dupFd(tc)
	if err != nil {
		return nil, err
	}
	c := &Conn{lp: lp, fd: int32(fd), heapIdx: -1, created: netconn.Now()}
	c.addrs.set(tc.LocalAddr(), tc.RemoteAddr())
	tc.Close() // our duplicate keeps the socket open
	c.core = p.New(sink, netconn.Now())
	lp.n.Add(1)
	return c, nil
}

// dupFd duplicates tc's descriptor (close-on-exec, non-blocking).
func dupFd(tc *net.TCPConn) (int, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl", dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// register adds c to the loop's connections; false once the loop is
// closed.
func (lp *loop) register(c *Conn) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.closed {
		return false
	}
	var slot uint32
	if n := len(lp.free); n > 0 {
		slot, lp.free = lp.free[n-1], lp.free[:n-1]
	} else {
		slot = uint32(len(lp.conns))
		lp.conns = append(lp.conns, nil)
	}
	lp.gen++ // an event for the slot's previous connection is not taken for c's
	c.id = uint64(lp.gen)<<32 | uint64(slot)
	lp.conns[slot] = c
	return true
}

// unregister removes c from the loop's connections and timers.
func (lp *loop) unregister(c *Conn) {
	lp.mu.Lock()
	slot := uint32(c.id)
	lp.conns[slot] = nil
	lp.free = append(lp.free, slot)
	if c.heapIdx >= 0 {
		lp.timers.remove(c)
	}
	lp.mu.Unlock()
}

// arm makes sure the loop ticks c at at or before, and returns when it
// will. It wakes the loop if it sleeps past at.
func (lp *loop) arm(c *Conn, at int64) int64 {
	lp.mu.Lock()
	switch {
	case c.heapIdx < 0:
		c.heapAt = at
		lp.timers.push(c)
	case at < c.heapAt:
		c.heapAt = at
		lp.timers.up(int(c.heapIdx))
	default:
		at = c.heapAt
	}
	wake := lp.sleeping && !lp.woken && (lp.sleepUntil == 0 || grain(at) < lp.sleepUntil)
	if wake {
		lp.woken = true
	}
	lp.mu.Unlock()
	if wake {
		lp.wake()
	}
	return at
}

// wake interrupts the loop's epoll_wait.
func (lp *loop) wake() {
	one := [8]byte{1}
	for {
		_, err := unix.Write(lp.evfd, one[:])
		if err != unix.EINTR {
			return // EAGAIN: the counter is full, the loop is awake anyway
		}
	}
}

// epollCtl changes the events c's descriptor is watched for.
func (lp *loop) epollCtl(op int, c *Conn, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	if err := unix.EpollCtl(lp.epfd, op, int(c.fd), &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// run is the loop's goroutine: it fires the timers due, takes the events
// ready without blocking, and when there are none parks in Go's poller
// until the epoll set has events (a connection's, or the eventfd's
// wake-up) or the earliest timer is due. A goroutine, not a thread, waits:
// the scheduler resumes it as it resumes a goroutine blocked on a socket,
// with no thread blocked in epoll_wait and no processor to hand back when
// it wakes (which, under load, set the pace of a loop that blocked in the
// system call).
func (lp *loop) run() {
	deadline := int64(0) // the read deadline set on epf; 0: none
	for {
		lp.fireTimers()
		lp.mu.Lock()
		if lp.stopping {
			lp.mu.Unlock()
			return
		}
		lp.sleepUntil = 0
		if top := lp.timers.top(); top != nil {
			lp.sleepUntil = grain(top.heapAt)
		}
		lp.sleeping = true
		until := lp.sleepUntil
		lp.mu.Unlock()

		if until != deadline {
			deadline = until
			d := time.Time{}
			if until != 0 {
				d = netconn.Wall(until)
			}
			lp.epf.SetReadDeadline(d) // cannot fail: pollable checked it
		}
		var n int
		if until == 0 || until > netconn.Now() {
			n = lp.park()
		} else {
			// A timer is due already: no wait, but the sockets' events
			// are taken all the same, so that timers always due cannot
			// starve them.
			n = lp.poll()
		}

		lp.mu.Lock()
		lp.sleeping = false
		lp.mu.Unlock()
		if n > 0 {
			lp.handle(n)
		}
	}
}

// timerGrain is the resolution of the loop's timers, in nanoseconds: the
// loop wakes for a deadline at the next multiple of it (never early), so
// that the timers due within one grain fire in one wake-up (the heartbeats
// of many connections).
const timerGrain = int64(time.Millisecond)

func grain(at int64) int64 { return (at + timerGrain - 1) / timerGrain * timerGrain }

// poll takes the events ready into lp.events, without waiting.
func (lp *loop) poll() int {
	n, err := unix.EpollWait(lp.epfd, lp.events, 0)
	if err != nil && err != unix.EINTR {
		panic(fmt.Sprintf("evloop: epoll_wait: %v", err)) // a bug
	}
	return max(n, 0)
}

// park waits in Go's poller until the epoll set has events or epf's
// deadline passes, and returns how many events it took into lp.events.
func (lp *loop) park() int {
	n := 0
	// Read calls the function before it waits: an event that arrived
	// since run's last look is taken at once; one that arrives after the
	// function found none makes the set readable, which the poller
	// reports.
	err := lp.eprc.Read(func(uintptr) bool {
		n = lp.poll()
		return n > 0
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		panic(fmt.Sprintf("evloop: waiting for the epoll set: %v", err)) // closed under the loop: a bug
	}
	return max(n, 0)
}

// handle hands the first n events of lp.events to their connections.
func (lp *loop) handle(n int) {
	for _, ev := range lp.events[:n] {
		id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		if uint32(id) == 0 {
			lp.drainWake()
			continue
		}
		lp.mu.Lock()
		c := lp.conns[uint32(id)]
		lp.mu.Unlock()
		if c != nil && c.id == id {
			c.ready(ev.Events)
		}
	}
}

// drainWake reads the eventfd.
func (lp *loop) drainWake() {
	var b [8]byte
	for {
		if _, err := unix.Read(lp.evfd, b[:]); err != unix.EINTR {
			break
		}
	}
	lp.mu.Lock()
	lp.woken = false
	lp.mu.Unlock()
}

// fireTimers ticks the connections whose deadline has come.
func (lp *loop) fireTimers() {
	now := netconn.Now()
	for {
		lp.mu.Lock()
		c := lp.timers.top()
		if c == nil || c.heapAt > now {
			lp.mu.Unlock()
			return
		}
		lp.timers.remove(c)
		lp.mu.Unlock()
		c.tick()
	}
}

// frameNeed is how many bytes must be buffered to complete the frame that
// starts b (at least one more than b holds).
func frameNeed(b []byte) int {
	need := len(b) + 1
	if len(b) >= wire.HeaderLen {
		need = max(need, wire.FrameLen(b))
	}
	return need
}
