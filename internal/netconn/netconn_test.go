package netconn

// Tests of what is netconn's own: its writer role, which coalesces the
// answers queued during a write, and its reader and writer goroutines,
// blocked in a net.Conn's Read and Write, which Close must free. A
// hookConn wrapped around the connection sees and holds those calls. What
// every driver promises is tested by internal/conntest (conformance_test.go).

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
)

// transports are what these tests run over: TCP, and a pipe, where a
// write returns only once the other end has read all of it.
var transports = []struct {
	name string
	pair func(t testing.TB) (client, server net.Conn)
}{
	{"tcp", func(t testing.TB) (net.Conn, net.Conn) {
		c, s := conntest.TCPPair(t, 0)
		return c, s
	}},
	{"pipe", conntest.PipePair},
}

// TestWritesCoalesce guards write coalescing: answers queued while a write
// is in progress leave together in the next write, not one write each.
func TestWritesCoalesce(t *testing.T) {
	const n = 64
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			var calls sync.WaitGroup
			t.Cleanup(calls.Wait) // after the connections' cleanup, which ends the calls
			nc, ns := tr.pair(t)
			hook := newHookConn(ns)
			ss := conntest.NewSink()
			ss.Held = make(chan core.Incoming, n)
			srv := start(t, hook, core.Server, session.Config{}, ss)
			cli := start(t, nc, core.Client, session.Config{}, nil)

			for i := range n {
				calls.Add(1)
				go func() {
					defer calls.Done()
					body := fmt.Appendf(nil, "call %d", i)
					if got, err := cli.Echo(t, body, 20*time.Second); err != nil || !bytes.Equal(got, body) {
						t.Errorf("call %d: %q, %v; want its body echoed", i, got, err)
					}
				}()
			}
			var reqs []core.Incoming
			for range n {
				select {
				case in := <-ss.Held:
					reqs = append(reqs, in)
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d requests arrived within 10s", len(reqs), n)
				}
			}

			hook.holdWrites()
			before := hook.writes.Load()
			first := make(chan struct{})
			go func() {
				defer close(first)
				srv.Answer(reqs[0].ID, nil, reqs[0].Body) // writes on this goroutine: held
			}()
			select {
			case <-hook.inWrite:
			case <-time.After(5 * time.Second):
				t.Fatal("the first answer's write did not start within 5s")
			}
			for _, in := range reqs[1:] {
				srv.Answer(in.ID, nil, in.Body) // queued: a write is in progress
			}
			hook.releaseWrites()
			<-first
			calls.Wait()
			writes := hook.writes.Load() - before
			t.Logf("%d answers left in %d writes", n, writes)
			if writes > 3 {
				t.Errorf("%d answers, %d of them queued during a write, left in %d writes; want at most 3", n, n-1, writes)
			}
		})
	}
}

// TestCloseWhileBlocked guards Close: called from another goroutine while
// the reader is blocked in Read and a writer in Write, it returns at once,
// the blocked calls return, and Run returns.
func TestCloseWhileBlocked(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			nc, ns := tr.pair(t)
			hook := newHookConn(ns)
			srv := start(t, hook, core.Server, session.Config{}, nil)
			p := conntest.NewRawPeer(nc)
			p.Handshake(t)

			hook.holdWrites()
			if err := p.Fr.WritePing(1); err != nil {
				t.Fatal(err)
			}
			select {
			case <-hook.inWrite: // the PONG's write is held: the PING was read
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not start writing its PONG within 5s")
			}
			if !conntest.WaitFor(5*time.Second, func() bool { return hook.inRead.Load() == 1 }) {
				t.Fatal("the reader did not read again within 5s")
			}

			took := conntest.CloseBlocked(t, srv)
			t.Logf("TIMING Close with a read and a write blocked: Run returned after %v", took)
			if !conntest.WaitFor(2*time.Second, func() bool { return hook.inRead.Load() == 0 && hook.inWriteNow.Load() == 0 }) {
				t.Errorf("a Read or Write is still blocked after Close")
			}
		})
	}
}

// hookConn wraps a net.Conn, counting writes and the reads and writes in
// progress, and can hold writes: while held, a Write waits until
// releaseWrites or Close.
type hookConn struct {
	net.Conn
	writes     atomic.Int64
	inRead     atomic.Int32 // Read calls in progress
	inWriteNow atomic.Int32 // Write calls in progress
	mu         sync.Mutex
	hold       chan struct{} // not nil: writes wait for it to be closed
	inWrite    chan struct{} // receives once per held Write entered
	closed     chan struct{}
	once       sync.Once
}

func newHookConn(nc net.Conn) *hookConn {
	return &hookConn{Conn: nc, inWrite: make(chan struct{}, 64), closed: make(chan struct{})}
}

// holdWrites makes the following writes wait until releaseWrites.
func (h *hookConn) holdWrites() {
	h.mu.Lock()
	h.hold = make(chan struct{})
	h.mu.Unlock()
}

func (h *hookConn) releaseWrites() {
	h.mu.Lock()
	if h.hold != nil {
		close(h.hold)
		h.hold = nil
	}
	h.mu.Unlock()
}

func (h *hookConn) Write(b []byte) (int, error) {
	h.writes.Add(1)
	h.inWriteNow.Add(1)
	defer h.inWriteNow.Add(-1)
	h.mu.Lock()
	hold := h.hold
	h.mu.Unlock()
	if hold != nil {
		select {
		case h.inWrite <- struct{}{}:
		default:
		}
		select {
		case <-hold:
		case <-h.closed:
			return 0, net.ErrClosed
		}
	}
	return h.Conn.Write(b)
}

func (h *hookConn) Read(b []byte) (int, error) {
	h.inRead.Add(1)
	defer h.inRead.Add(-1)
	return h.Conn.Read(b)
}

func (h *hookConn) Close() error {
	h.once.Do(func() { close(h.closed) })
	return h.Conn.Close()
}

// CloseWrite half-closes the connection under it, when it can.
func (h *hookConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}
