package session

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tcppro/tcppro/wire"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); s.Close() })
	return s.(*net.TCPConn), d.(*net.TCPConn)
}

type nopHandler struct{}

func (nopHandler) HandleRequest(uint64, time.Duration, []byte, []byte) {}
func (nopHandler) HandleResponse(uint64, []byte)                       {}
func (nopHandler) HandleError(uint64, wire.Code, []byte)               {}
func (nopHandler) HandleGoAway(uint64, wire.Reason, []byte)            {}

// TestWritesCoalesce: frames queued while a write is in progress go out
// together in one write call.
func TestWritesCoalesce(t *testing.T) {
	a, b := tcpPair(t)
	c, err := NewConn(a, RoleServer, Config{}, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(nil)
	// Hold the flusher role, as a goroutine inside a write call does.
	c.wmu.Lock()
	c.flushing = true
	c.wmu.Unlock()
	for i := uint64(1); i <= 10; i++ {
		if err := c.SendResponse(i, []byte("payload")); err != nil {
			t.Fatal(err)
		}
	}
	if c.Writes() != 0 {
		t.Fatalf("%d writes while another writer was active", c.Writes())
	}
	c.wmu.Lock()
	c.flushing = false
	if err := c.flushLocked(false); err != nil {
		t.Fatal(err)
	}
	if w := c.Writes(); w != 1 {
		t.Fatalf("10 queued frames took %d write calls, want 1", w)
	}
	fr := wire.NewFramer(nil, b)
	for i := uint64(1); i <= 10; i++ {
		f, err := fr.ReadFrame()
		if err != nil || f.ID != i || string(f.Payload) != "payload" {
			t.Fatalf("frame %d: %v %v", i, f.Header, err)
		}
	}
}

// TestWriteQueueBounded: with a peer that does not read, senders wait once
// WriteQueueSize bytes are queued, and are released with an error when the
// connection closes.
func TestWriteQueueBounded(t *testing.T) {
	a, _ := tcpPair(t)
	const limit = 64 << 10
	c, err := NewConn(a, RoleServer, Config{WriteQueueSize: limit}, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 16<<10)
	blocked := make(chan error, 1)
	go func() {
		for i := uint64(1); ; i++ {
			if err := c.SendResponse(i, body); err != nil {
				blocked <- err
				return
			}
		}
	}()
	// The sender fills the kernel buffers, then the queue, then waits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.wmu.Lock()
		queued := c.inWrite
		if c.wb != nil {
			queued += len(c.wb.b)
		}
		waiting := c.wwait != nil
		c.wmu.Unlock()
		if queued > limit+len(body)+wire.HeaderLen {
			t.Fatalf("%d bytes queued, over the %d limit", queued, limit)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender never had to wait")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close(ErrWriteTimeout)
	if err := <-blocked; !errors.Is(err, ErrWriteTimeout) {
		t.Fatalf("blocked sender got %v, want the close reason", err)
	}
}

// TestStalledWriteIsCut: the monitor's tick cuts a connection whose queued
// output made no progress for WriteTimeout.
func TestStalledWriteIsCut(t *testing.T) {
	a, _ := tcpPair(t)
	c, err := NewConn(a, RoleServer, Config{WriteTimeout: 50 * time.Millisecond, HeartbeatInterval: -1}, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMonitor(5 * time.Millisecond)
	defer m.Close()
	m.Add(c)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		body := make([]byte, 64<<10)
		for i := uint64(1); c.SendResponse(i, body) == nil; i++ {
		}
	}()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled connection was never cut")
	}
	wg.Wait()
	if !errors.Is(c.Err(), ErrWriteTimeout) {
		t.Fatalf("closed with %v, want ErrWriteTimeout", c.Err())
	}
}

// TestConnSize keeps the per-connection transport within its allocation
// size class: every byte here is paid by every idle connection.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 512 {
		t.Fatalf("Conn is %d bytes, want at most 512 (the 512-byte size class)", n)
	}
}

// TestPeekable: the monitor's FIN check sees waiting bytes and a FIN,
// consumes neither, and allocates nothing (it runs for every connection
// that goes quiet).
func TestPeekable(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	raw, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	peek := func() (got bool) {
		if err := raw.Control(func(fd uintptr) { got = peekable(fd) }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if peek() {
		t.Fatal("peekable with nothing sent")
	}
	if allocs := testing.AllocsPerRun(100, func() { peek() }); allocs != 0 {
		t.Fatalf("peekable allocates %.0f times per call", allocs)
	}
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(2*time.Second, peek) {
		t.Fatal("a waiting byte not seen")
	}
	var buf [2]byte
	if n, err := a.Read(buf[:]); n != 1 || err != nil {
		t.Fatalf("read %d, %v after peeking; want the byte still there", n, err)
	}
	if peek() {
		t.Fatal("peekable after the byte was read")
	}
	_ = b.Close()
	if !waitUntil(2*time.Second, peek) {
		t.Fatal("the peer's FIN not seen")
	}
}

// waitUntil polls cond every millisecond until it holds or timeout passes
// (a condition checked until a deadline, not a sleep as synchronisation).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// answerHandler marks its waiter answered when a RESPONSE arrives.
type answerHandler struct {
	nopHandler
	w *flagWaiter
}

func (h answerHandler) HandleResponse(uint64, []byte) { h.w.done.Store(true) }

type flagWaiter struct{ done atomic.Bool }

func (w *flagWaiter) Answered() bool { return w.done.Load() }

type registrar struct{ c *Conn }

func (r registrar) Register(uint64) bool { r.c.SetAwaited(1); return true }

// TestLeadKickedOnce: a caller reading for itself whose answer takes many
// monitor ticks is kicked once, to read what may have reached the socket
// unseen before its read began, and not at every tick after that.
func TestLeadKickedOnce(t *testing.T) {
	a, b := tcpPair(t)
	w := &flagWaiter{}
	c, err := NewConn(a, RoleClient, Config{HeartbeatInterval: -1}, answerHandler{w: w})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(nil)
	const tick, ticks = 5 * time.Millisecond, 80
	m := NewMonitor(tick)
	defer m.Close()
	m.Add(c)
	if !c.TryLead() {
		t.Fatal("TryLead on a fresh connection without a reader failed")
	}
	led := make(chan error, 1)
	go func() {
		l := &Lead{Method: "wait", Registrar: registrar{c}}
		expired := c.SendAndLead(l, w, time.Now().Add(10*time.Second))
		if l.ID == 0 || expired {
			led <- fmt.Errorf("SendAndLead: id %d, expired %v, err %v", l.ID, expired, l.Err)
			return
		}
		led <- nil
	}()
	fr := wire.NewFramer(b, b)
	f, err := fr.ReadFrame()
	if err != nil || f.Type != wire.TypeRequest {
		t.Fatalf("peer read %v, %v; want the REQUEST", f.Header, err)
	}
	before := readSyscalls(t)
	<-time.After(ticks * tick) // let the monitor tick while the answer is held back
	reads := readSyscalls(t) - before
	if err := fr.WriteResponse(f.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-led; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reads over %d ticks while the answer was held back", reads, ticks)
	// The process reads for other reasons too: the runtime's poller reads
	// an eventfd when woken, about once every three ticks here. A kick at
	// every tick adds a read per tick on top.
	if reads > ticks*3/4 {
		t.Fatalf("%d reads over %d ticks: the reading caller was kicked again and again", reads, ticks)
	}
}

// readSyscalls returns this process's read system calls so far (syscr in
// /proc/self/io).
func readSyscalls(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no syscr in /proc/self/io")
	return 0
}
