package server_test

// Everything a peer can make the server hold is bounded: queued control
// frames (a PING flood), the bytes held per connection and across the
// server (the memory budget), whatever the peers send.

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestPingFlood guards the bound on queued control frames (issue case 5):
// a peer that sends a million PINGs (24 MB) and never reads is cut with
// ERROR CONTROL_FLOOD once the PONGs it does not read exceed
// MaxQueuedControl, and the server's heap grows by far less than the PONGs
// would take.
func TestPingFlood(t *testing.T) {
	rec := &recorder{}
	cfg := baseConfig()
	cfg.Observer = rec
	// Only the flood bound may end the connection; once it has, the
	// server lingers briefly for its final ERROR to leave.
	cfg.Session.WriteTimeout = 5 * time.Second
	cfg.Session.LingerTimeout = 300 * time.Millisecond
	ts := startServer(t, cfg, echoMux())
	conn := dialTCP(t, ts.addr)
	defer conn.Close()
	fr := wire.NewFramer(conn, conn)
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Time{})

	// The PINGs go in batches, each written whole; the loop ends when the
	// server has closed the connection (a write fails other than by its
	// deadline), after a million PINGs, or after 20s.
	const pings, batch = 1_000_000, 1024
	buf := make([]byte, 0, batch*(wire.HeaderLen+8))
	base := liveHeap()
	heap := sampleHeap(20 * time.Millisecond)
	sent := 0
	end := time.Now().Add(20 * time.Second)
flood:
	for sent < pings && time.Now().Before(end) {
		buf = buf[:0]
		for i := range batch {
			buf = wire.AppendPing(buf, uint64(sent+i))
		}
		for b := buf; len(b) > 0 && time.Now().Before(end); {
			_ = conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := conn.Write(b)
			b = b[n:]
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				t.Logf("write stopped after %d PINGs: %v", sent, err)
				break flood
			}
		}
		sent += batch
	}
	peak := heap.Stop()
	if sent >= pings {
		t.Fatalf("all %d PINGs were read though none of their PONGs was", pings)
	}

	// Whatever reached the peer: PONGs, the server's own heartbeat PINGs
	// (its interval, 200 ms, may pass while the flood is read), possibly the
	// final ERROR, then the end of the stream.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var pongs int
	var final *wire.Code
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f.Type {
		case wire.TypePong:
			pongs++
		case wire.TypePing:
		case wire.TypeError:
			code, _, _, _ := wire.ParseError(f.ID, f.Flags, f.Payload)
			final = &code
		default:
			t.Errorf("unexpected frame %v", f.Header)
		}
	}
	t.Logf("flood: %d PINGs sent, %d PONGs read, final ERROR %v; heap grew %d KiB", sent, pongs, final, (peak-min(peak, base))>>10)
	if final != nil && *final != wire.CodeControlFlood {
		t.Errorf("the connection ended with ERROR %v, want CONTROL_FLOOD", *final)
	}
	if !waitFor(t, 5*time.Second, func() bool { return ts.Stats().ControlFloods == 1 }) {
		t.Fatalf("ControlFloods = %d, want 1 (close reasons %v)", ts.Stats().ControlFloods, rec.closeErrs())
	}
	if errs := rec.closeErrs(); len(errs) != 1 || !errors.Is(errs[0], session.ErrControlFlood) {
		t.Errorf("close reasons %v, want one session.ErrControlFlood", errs)
	}
	if grew := peak - min(peak, base); grew > 16*mib {
		t.Errorf("the server's heap grew by %d MiB under the flood, want < 16 MiB", grew/mib)
	}
}

// TestRefusalBurstIsNotAFlood: a peer keeping within the server's
// MAX_IN_FLIGHT (512 here) sends 300 requests in one write while every
// worker is busy, then reads. Each request must be refused OVERLOADED
// (retry safe) and the connection must live on: the peer reads every
// refusal. (A tcppro client does the same with 300 concurrent calls: it
// writes them together.)
//
// It guards the flood bound against counting what the writer never had a
// chance to write: refusals owed for the requests of one read are all
// queued (internal/core peerControl, called from Receive for each frame)
// before any is written, so a bound checked there alone takes such a
// burst for a flood and ends the connection with CONTROL_FLOOD, failing
// every call on it, not retry safe.
func TestRefusalBurstIsNotAFlood(t *testing.T) {
	cfg := baseConfig()
	cfg.Workers = 1
	cfg.Session.MaxInFlight = 512
	g := newGate(t)
	m := echoMux()
	m.Handle("hold", g)
	ts := startServer(t, cfg, m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "hold", nil)
	g.waitStarted(t, time.Second)

	const burst = 300
	var b []byte
	for id := uint64(2); id < 2+burst; id++ {
		b = wire.AppendRequest(b, id, false, 0, "echo", nil, []byte("x"))
	}
	if err := p.writeRaw(b); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for refused < burst {
		f, err := p.next(2 * time.Second)
		if err != nil {
			t.Fatalf("after %d refusals: %v (control floods: %d)", refused, err, ts.Stats().ControlFloods)
		}
		if f.Type == wire.TypePing {
			continue
		}
		if code, msg := errorCode(t, f); code != wire.CodeOverloaded || f.ID != uint64(2+refused) {
			t.Fatalf("after %d refusals: ERROR %v id %d (%q), want OVERLOADED id %d", refused, code, f.ID, msg, 2+refused)
		}
		refused++
	}
	g.Release()
	if body, ef := p.answer(t, time.Second, 1); ef != nil || string(body) != "released" {
		t.Errorf("the request holding the worker: %q, %v", body, ef)
	}
}

// smallBuffers is a dialer whose sockets have small kernel buffers, so
// that a peer that does not read stalls the server's writes early.
var smallBuffers = net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10)
		}
	}); err != nil {
		return err
	}
	return serr
}}

// pipeliner writes n echo requests of one shared body on its own
// connection without reading, frame by frame with vectored writes (no copy
// of the body per request), from when go is closed until done, a write
// fails, or stop.
type pipeliner struct {
	conn   *net.TCPConn
	frames atomic.Int64 // frames written
	done   chan struct{}
}

func startPipeliner(t *testing.T, addr string, n int, body []byte, start, stop <-chan struct{}) *pipeliner {
	t.Helper()
	nc, err := smallBuffers.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := nc.(*net.TCPConn)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	h, err := wire.NewFramer(conn, conn).ClientHandshake(wire.Hello{})
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	p := &pipeliner{conn: conn, done: make(chan struct{})}
	t.Cleanup(func() { conn.Close(); <-p.done })
	chunk := int(h.MaxFrameSize)
	go func() {
		defer close(p.done)
		select {
		case <-start:
		case <-stop:
			return
		}
		hdr := make([]byte, 0, 64)
		for id := uint64(1); id <= uint64(n); id++ {
			// The REQUEST carries no body; DATA frames carry it all.
			hdr = wire.AppendRequest(hdr[:0], id, true, 0, "echo", nil, nil)
			if _, err := conn.Write(hdr); err != nil {
				return
			}
			p.frames.Add(1)
			for off := 0; off < len(body); off += chunk {
				c := body[off:min(off+chunk, len(body))]
				more := off+len(c) < len(body)
				var flags uint8
				if more {
					flags = wire.FlagMore
				}
				hdr = wire.AppendHeader(hdr[:0], wire.Header{Length: uint32(len(c)), Type: wire.TypeData, Flags: flags, ID: id})
				bufs := net.Buffers{hdr, c}
				if _, err := bufs.WriteTo(conn); err != nil {
					return
				}
				p.frames.Add(1)
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	return p
}

// closed is a channel that is closed.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// stalled waits until none of the pipeliners has written a frame for
// quiet (each is blocked by the server, or done), within timeout.
func stalled(t *testing.T, ps []*pipeliner, quiet, timeout time.Duration) bool {
	t.Helper()
	total := func() (n int64) {
		for _, p := range ps {
			n += p.frames.Load()
		}
		return n
	}
	last, since := total(), time.Now()
	return waitFor(t, timeout, func() bool {
		if n := total(); n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// TestPipelinedLargeEchoesNotRead guards the per-connection memory bound
// (protocol.md §11.4): a peer pipelining 128 echoes of 1 MiB without
// reading makes the server hold at most ConnMemory plus one message for
// it. The server stops reading it (TCP flow control holds the peer's
// writes back) rather than refusing the excess OVERLOADED — protocol.md
// allows either — and resumes as soon as the peer reads.
func TestPipelinedLargeEchoesNotRead(t *testing.T) {
	const n, size = 128, 1 * mib
	cfg := baseConfig()
	cfg.Session.MaxMessageSize = size
	cfg.Session.ConnMemory = 4 * mib
	// The stall below must not end the connection, nor slow frames on a
	// loaded machine.
	cfg.Session.WriteTimeout = 5 * time.Second
	cfg.Session.FrameReadTimeout = 5 * time.Second
	ts := startServer(t, cfg, echoMux())
	stop := make(chan struct{})
	defer close(stop)
	p := startPipeliner(t, ts.addr, n, make([]byte, size), closed, stop)

	var maxHeld atomic.Int64
	sample := func() {
		if h := ts.Stats().MemoryHeld; h > maxHeld.Load() {
			maxHeld.Store(h)
		}
	}
	samplerStop, samplerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			sample()
			select {
			case <-samplerStop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	defer func() {
		select {
		case <-samplerStop:
		default:
			close(samplerStop)
		}
		<-samplerDone
	}()

	if !stalled(t, []*pipeliner{p}, 300*time.Millisecond, 10*time.Second) {
		t.Fatal("the peer's writes never stalled")
	}
	written := p.frames.Load()
	perRequest := int64(1 + (size+wire.DefaultMaxFrameSize-1)/wire.DefaultMaxFrameSize)
	t.Logf("stalled after %d of %d frames; server holds %d KiB", written, n*perRequest, ts.Stats().MemoryHeld>>10)
	if written >= n*perRequest {
		t.Fatalf("the server read all %d requests while their answers went unread", n)
	}

	// The peer reads now: the server resumes reading, answers flow and
	// the peer's writes go on.
	readDone := make(chan int)
	go func() {
		fr := wire.NewFramer(nil, p.conn)
		answers := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				readDone <- answers
				return
			}
			if f.ID != 0 && !f.More() {
				if f.Type == wire.TypeError {
					if code, _, _, _ := wire.ParseError(f.ID, f.Flags, f.Payload); code != wire.CodeOverloaded {
						t.Errorf("request %d answered %v, want an echo or OVERLOADED", f.ID, code)
					}
				}
				answers++
			}
		}
	}()
	if !waitFor(t, 10*time.Second, func() bool { return p.frames.Load() >= written+4*perRequest }) {
		t.Errorf("the server did not resume reading once the peer read (%d frames written, %d before)", p.frames.Load(), written)
	}
	close(samplerStop)
	<-samplerDone
	p.conn.Close()
	answers := <-readDone
	t.Logf("%d answers read; the server held at most %d KiB for the connection", answers, maxHeld.Load()>>10)
	if bound := int64(cfg.Session.ConnMemory + size + 64<<10); maxHeld.Load() > bound {
		t.Errorf("the server held %d bytes for one connection, want at most ConnMemory + one message (%d)", maxHeld.Load(), bound)
	}
	if answers < 4 {
		t.Errorf("%d answers read after the peer began reading, want at least 4", answers)
	}
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().MemoryHeld == 0 }) {
		t.Errorf("MemoryHeld = %d once the connection closed, want 0", ts.Stats().MemoryHeld)
	}
}

// TestMemoryBudget guards Config.MemoryBudget: concurrent large requests
// beyond it are refused OVERLOADED (typed, retry safe) and counted in
// RefusedMemory, the others are served, and the memory held returns to
// zero once they are answered.
func TestMemoryBudget(t *testing.T) {
	const size = 900 << 10
	cfg := baseConfig()
	cfg.MemoryBudget = 2 * mib
	cfg.Session.MaxMessageSize = mib
	cfg.Session.ConnMemory = 2 * mib // the server's budget, not each connection's, binds
	g := newGate(t)
	m := echoMux()
	m.Handle("hold", g)
	ts := startServer(t, cfg, m)
	t.Cleanup(g.Release)

	const callers = 4
	body := make([]byte, size)
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		c := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: -1})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Call(ctx, "hold", body)
			errs <- err
		}()
	}
	defer wg.Wait()
	defer g.Release()

	// Every call is either being handled or refused.
	var refused []error
	if !waitFor(t, 5*time.Second, func() bool {
		for {
			select {
			case err := <-errs:
				refused = append(refused, err)
				continue
			default:
			}
			return len(refused)+len(g.Started) == callers
		}
	}) {
		t.Fatalf("%d calls refused, %d handled, want %d in all", len(refused), len(g.Started), callers)
	}
	admitted := len(g.Started)
	st := ts.Stats()
	t.Logf("%d admitted, %d refused; MemoryHeld %d KiB, RefusedMemory %d", admitted, len(refused), st.MemoryHeld>>10, st.RefusedMemory)
	if len(refused) < 2 || admitted < 1 {
		t.Errorf("%d admitted, %d refused: want at most 2 of %d requests of %d KiB within a budget of %d KiB, and at least 1",
			admitted, len(refused), callers, size>>10, cfg.MemoryBudget>>10)
	}
	for _, err := range refused {
		if !errors.Is(err, session.ErrOverloaded) || !session.RetrySafe(err) {
			t.Errorf("refused call: %v, want errors.Is session.ErrOverloaded, retry safe", err)
		}
	}
	if st.RefusedMemory != uint64(len(refused)) {
		t.Errorf("RefusedMemory = %d, want %d", st.RefusedMemory, len(refused))
	}
	if st.MemoryHeld > cfg.MemoryBudget {
		t.Errorf("MemoryHeld = %d, above the budget %d", st.MemoryHeld, cfg.MemoryBudget)
	}

	g.Release()
	wg.Wait()
	for range admitted {
		if err := <-errs; err != nil {
			t.Errorf("admitted call: %v", err)
		}
	}
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().MemoryHeld == 0 }) {
		t.Errorf("MemoryHeld = %d after every call ended, want 0", ts.Stats().MemoryHeld)
	}
}

// TestAnswerNotPinnedByBlockedWrite guards the memory accounting of
// answers: once a request is answered, the server holds its answer
// (counted in MemoryHeld until written) and nothing else of it. A peer that
// does not read makes the write of the answer block; the request's body
// must not stay in memory meanwhile, uncounted, for as long as the peer
// keeps the write blocked.
func TestAnswerNotPinnedByBlockedWrite(t *testing.T) {
	const size = 4 * mib
	cfg := baseConfig()
	cfg.Session.WriteTimeout = 5 * time.Second // the stall below must not end the connection
	cfg.Socket.SendBuffer = 64 << 10
	ts := startServer(t, cfg, echoMux())
	stop := make(chan struct{})
	defer close(stop)
	body := make([]byte, size)
	p := startPipeliner(t, ts.addr, 1, body, closed, stop)
	if !waitFor(t, 5*time.Second, func() bool { return p.frames.Load() == 1+size/wire.DefaultMaxFrameSize }) {
		t.Fatalf("the request was not sent (%d frames)", p.frames.Load())
	}
	if !stalled(t, []*pipeliner{p}, 200*time.Millisecond, 5*time.Second) {
		t.Fatal("the peer's writes never stalled")
	}
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().MemoryHeld > size/2 }) {
		t.Fatalf("MemoryHeld = %d: the answer is not queued", ts.Stats().MemoryHeld)
	}
	held := ts.Stats().MemoryHeld
	during := liveHeap()

	// What the connection held is what closing it releases.
	p.conn.Close()
	if !waitFor(t, 2*time.Second, func() bool { st := ts.Stats(); return st.MemoryHeld == 0 && st.Active == 0 }) {
		t.Fatalf("the connection was not released: %+v", ts.Stats())
	}
	after := liveHeap()
	waitFor(t, 2*time.Second, func() bool { // until what the handler's goroutine kept is gone too
		prev := after
		after = liveHeap()
		return prev-min(prev, after) < 64<<10
	})
	runtime.KeepAlive(body)
	grew := int64(during) - int64(after)
	t.Logf("answer of %d KiB waiting for a peer that does not read: MemoryHeld %d KiB, the connection held %d KiB of heap", size>>10, held>>10, grew>>10)
	// The answer is held once, in full until its last chunk is written;
	// a connection's I/O buffers add a few hundred KiB at most.
	if limit := int64(size + 512<<10); grew > limit {
		t.Errorf("the connection held %d KiB of heap for one answered request of %d KiB held as %d KiB, want at most %d KiB: "+
			"something else than the answer is kept while its write is blocked", grew>>10, size>>10, held>>10, limit>>10)
	}
}

// TestMaxSizeMessageWithinConnMemory guards what the per-connection
// bound counts: a request's body bytes, as MAX_MESSAGE_SIZE does, so that
// the smallest ConnMemory Validate accepts, MaxMessageSize, admits a
// message of the largest size rather than refusing it OVERLOADED for ever.
func TestMaxSizeMessageWithinConnMemory(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.MaxMessageSize = mib
	cfg.Session.ConnMemory = mib
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	ts := startServer(t, cfg, echoMux())
	c := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: -1})
	if _, err := call(t, c, "echo", make([]byte, mib)); err != nil {
		t.Errorf("echo of MaxMessageSize bytes with ConnMemory = MaxMessageSize: %v", err)
	}
}
