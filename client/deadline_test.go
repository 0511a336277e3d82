package client_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// slack is how late past its deadline a call may return on this shared,
// slow machine (the race detector included).
const slack = 300 * time.Millisecond

// timed runs a call and returns its error and how long it took.
func timed(call func() error) (time.Duration, error) {
	start := time.Now()
	err := call()
	return time.Since(start), err
}

// sent reports whether a timed-out call had been sent, as its
// *session.DeadlineError says. The server's own ERROR TIMEOUT, which can
// beat the client's timer by a hair (the server counts the same deadline
// from the moment it read the request), says so too.
func sent(t *testing.T, err error) bool {
	t.Helper()
	var ce *client.CallError
	if errors.As(err, &ce) && ce.Code == wire.CodeTimeout {
		return true
	}
	var de *session.DeadlineError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *session.DeadlineError", err)
	}
	return de.Sent
}

// TestDoneContextNeverSent guards that a call whose context is already
// cancelled, or whose deadline has passed, is never sent: neither the
// handler nor the frames on the wire see it (issue case 8).
func TestDoneContextNeverSent(t *testing.T) {
	var handled atomic.Int64
	_, addr := startServer(t, "", server.Config{}, counting(&handled, echo))
	// A raw peer records the methods of the REQUEST frames it reads.
	methods := make(chan string, 1024)
	raw := startRaw(t, func(nc net.Conn) {
		serveFrames(nc, func(fr *wire.Framer, f wire.Frame) bool {
			if f.Type == wire.TypeRequest {
				_, m, _, _, _ := wire.ParseRequest(f.Flags, f.Payload)
				methods <- string(m)
				return fr.WriteResponse(f.ID, false, nil, nil) == nil
			}
			return true
		})
	})
	for _, addr := range []string{addr, raw.addr} {
		c := newClient(t, client.Config{Addrs: []string{addr}})
		if _, err := c.Call(context.Background(), "warm", nil); err != nil {
			t.Fatal(err)
		}
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		// Many times: the connection's writer, started by a call, could
		// otherwise win the race against its abandonment now and then.
		for i := 0; i < 300; i++ {
			if _, err := c.Call(cancelled, "cancelled", nil); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled context: %v, want context.Canceled", err)
			}
		}
		expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel2()
		if _, err := c.Call(expired, "expired", nil); !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("expired context: %v, want ErrTimeout", err)
		}
		if _, err := c.CallAppend(expired, "expired", nil, nil, client.WithMetadata(wire.Metadata{{Key: "k", Value: "v"}})); !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("expired context with options: %v, want ErrTimeout", err)
		}
		// Frames leave in order: once "last" arrived, nothing sent
		// before it is still on its way.
		if _, err := c.Call(context.Background(), "last", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := handled.Load(); n != 2 {
		t.Fatalf("the server handled %d calls, want 2 (warm, last)", n)
	}
	var got []string
	for len(methods) > 0 {
		got = append(got, <-methods)
	}
	if len(got) != 2 || got[0] != "warm" || got[1] != "last" {
		t.Fatalf("the raw peer read REQUESTs %q, want [warm last]", got)
	}
}

// TestDeadlineWhileConnecting guards the call's own timer while it waits
// outside any connection: a call waiting for a connection returns at its
// deadline — its context's or CallTimeout's — or at once when cancelled,
// even while the connect hangs (DialTimeout is a minute here).
func TestDeadlineWhileConnecting(t *testing.T) {
	t.Parallel()
	dialing := make(chan struct{}, 1)
	c := newClient(t, client.Config{Addrs: []string{"127.0.0.1:7420"}, DialTimeout: time.Minute, Dial: func(ctx context.Context, _ string) (net.Conn, error) {
		select {
		case dialing <- struct{}{}:
		default:
		}
		<-ctx.Done() // a connect that never completes
		return nil, ctx.Err()
	}})
	<-dialing
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
	if !errors.Is(err, client.ErrTimeout) || sent(t, err) {
		t.Fatalf("err = %v, want ErrTimeout, not sent", err)
	}
	within(t, "a 200ms call while connecting", el, 200*time.Millisecond+slack)

	c2 := newClient(t, client.Config{Addrs: []string{"127.0.0.1:7420"}, DialTimeout: time.Minute, CallTimeout: 200 * time.Millisecond,
		Dial: func(ctx context.Context, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }})
	el, err = timed(func() error { _, err := c2.Call(context.Background(), "echo", nil); return err })
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout from CallTimeout", err)
	}
	within(t, "a call with CallTimeout 200ms while connecting", el, 200*time.Millisecond+slack)

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	el, err = timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	within(t, "a call cancelled after 50ms while connecting", el, 50*time.Millisecond+slack)
}

// slowHandler blocks each request until release is closed or its context
// ends, reporting its start on started and its context's error on ended.
type slowHandler struct {
	started chan struct{}
	ended   chan error
	release chan struct{}
	n       atomic.Int64
}

func newSlowHandler() *slowHandler {
	return &slowHandler{started: make(chan struct{}, 16), ended: make(chan error, 16), release: make(chan struct{})}
}

func (h *slowHandler) ServeTCP(ctx context.Context, req *server.Request) ([]byte, error) {
	h.n.Add(1)
	h.started <- struct{}{}
	select {
	case <-h.release:
		h.ended <- nil
		return req.Body, nil
	case <-ctx.Done():
		h.ended <- ctx.Err()
		return nil, ctx.Err()
	}
}

// TestDeadlineWhileWaitingForSlot guards the deadlines of calls waiting
// inside a connection: with the server's MAX_IN_FLIGHT used up, a further
// call waits for a slot, unsent, and returns at its deadline —
// CallTimeout's or its context's — or at once when cancelled; the server
// never sees it.
func TestDeadlineWhileWaitingForSlot(t *testing.T) {
	t.Parallel()
	h := newSlowHandler()
	cfg := fastSession
	cfg.MaxInFlight = 1
	_, addr := startServer(t, "", server.Config{Session: cfg}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 200 * time.Millisecond})
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "slow", nil)
		first <- err
	}()
	<-h.started

	el, err := timed(func() error { _, err := c.Call(context.Background(), "slow", nil); return err })
	if !errors.Is(err, client.ErrTimeout) || sent(t, err) {
		t.Fatalf("err = %v, want ErrTimeout, not sent", err)
	}
	within(t, "a call with CallTimeout 200ms waiting for a slot", el, 200*time.Millisecond+slack)

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	el, err = timed(func() error { _, err := c.Call(ctx, "slow", nil); return err })
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	within(t, "a 150ms call waiting for a slot", el, 150*time.Millisecond+slack)

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	el, err = timed(func() error { _, err := c.Call(ctx, "slow", nil); return err })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	within(t, "a call cancelled after 50ms waiting for a slot", el, 50*time.Millisecond+slack)

	close(h.release)
	if err := <-first; err != nil {
		t.Fatalf("the call holding the slot: %v", err)
	}
	if n := h.n.Load(); n != 1 {
		t.Fatalf("the server handled %d calls, want only the one holding the slot", n)
	}
}

// TestDeadlineWhileAwaitingAnswer guards the deadline of a call sent and
// unanswered, and CANCEL: a call the server is slow to answer returns at
// its deadline; a call cancelled while the server runs it returns at once,
// and its CANCEL cancels the handler's context.
func TestDeadlineWhileAwaitingAnswer(t *testing.T) {
	t.Parallel()
	h := newSlowHandler()
	_, addr := startServer(t, "", server.Config{}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 200 * time.Millisecond})
	el, err := timed(func() error { _, err := c.Call(context.Background(), "slow", nil); return err })
	if !errors.Is(err, client.ErrTimeout) || !sent(t, err) {
		t.Fatalf("err = %v, want ErrTimeout, sent", err)
	}
	within(t, "a call with CallTimeout 200ms awaiting its answer", el, 200*time.Millisecond+slack)
	<-h.started
	if err := <-h.ended; err == nil {
		t.Fatal("the handler of a timed-out call was not cancelled")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	el, err = timed(func() error { _, err := c.Call(ctx, "slow", nil); return err })
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	within(t, "a 150ms call awaiting its answer", el, 150*time.Millisecond+slack)
	<-h.started
	<-h.ended

	// No deadline the server could act on by itself: only CANCEL can
	// cancel the handler's context with context.Canceled.
	c2 := newClient(t, client.Config{Addrs: []string{addr}})
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := c2.Call(ctx, "slow", nil); done <- err }()
	<-h.started
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	within(t, "a cancelled call", time.Since(start), slack)
	select {
	case herr := <-h.ended:
		if !errors.Is(herr, context.Canceled) {
			t.Fatalf("the handler's context ended with %v, want context.Canceled (CANCEL)", herr)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("CANCEL did not reach the handler")
	}
}

// smallBuffers makes the kernel hold little for a connection: the
// server's receive buffer (set on the listener, inherited when it
// accepts) and the client's send buffer.
const smallBuffer = 16 << 10

func smallRecvListener(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, smallBuffer)
		})
		if err == nil {
			err = serr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// countingConn counts the bytes handed to Write, before they are written.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return c.Conn.Write(b)
}

// TestDeadlineWhileWaitingForRoom guards issue case 3: against a server
// that stopped reading, a 2 MiB call fills the write queue (1 MiB) and a
// second call waits for room, unsent; both return at CallTimeout, though
// their contexts have no deadline and the writer is stuck in a write. The
// waiting call returns at its own deadline even while the call filling
// the queue has a later one.
func TestDeadlineWhileWaitingForRoom(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	raw := startRawOn(t, smallRecvListener(t), func(nc net.Conn) {
		fr := wire.NewFramer(nc, nc)
		if _, err := fr.ServerHandshake(rawHello); err != nil {
			return
		}
		if f, err := fr.ReadFrame(); err != nil || fr.WriteResponse(f.ID, false, nil, nil) != nil {
			return
		}
		<-hold // and never read again
	})
	t.Cleanup(func() { close(hold) }) // before the raw server closes
	type result struct {
		err error
		el  time.Duration
	}
	// fill starts a 2 MiB call with ctx on a new client, and returns the
	// client once the call is being written.
	fill := func(ctx context.Context) (*client.Client, chan result) {
		var written atomic.Int64
		c := newClient(t, client.Config{Addrs: []string{raw.addr}, CallTimeout: 300 * time.Millisecond,
			Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				nc, err := netx.Dialer{Options: netx.Options{SendBuffer: smallBuffer}}.DialContext(ctx, addr)
				if err != nil {
					return nil, err
				}
				return countingConn{nc, &written}, nil
			}})
		if _, err := c.Call(context.Background(), "warm", nil); err != nil {
			t.Fatal(err)
		}
		big := make(chan result, 1)
		base := written.Load()
		go func() {
			el, err := timed(func() error { _, err := c.Call(ctx, "big", make([]byte, 2<<20)); return err })
			big <- result{err, el}
		}()
		waitFor(t, 5*time.Second, func() bool { return written.Load()-base >= 32<<10 })
		return c, big
	}

	c, big := fill(context.Background())
	el, err := timed(func() error { _, err := c.Call(context.Background(), "small", []byte("x")); return err })
	if !errors.Is(err, client.ErrTimeout) || sent(t, err) {
		t.Fatalf("the call waiting for room: %v, want ErrTimeout, not sent", err)
	}
	within(t, "a call with CallTimeout 300ms waiting for room", el, 600*time.Millisecond)
	r := <-big
	if !errors.Is(r.err, client.ErrTimeout) || !sent(t, r.err) {
		t.Fatalf("the 2 MiB call: %v, want ErrTimeout, sent", r.err)
	}
	within(t, "a 2 MiB call with CallTimeout 300ms to a server that does not read", r.el, 600*time.Millisecond)
	t.Logf("waiting for room: %v; the 2 MiB call: %v", el, r.el)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, big = fill(ctx)
	el, err = timed(func() error { _, err := c.Call(context.Background(), "small", []byte("x")); return err })
	if !errors.Is(err, client.ErrTimeout) || sent(t, err) {
		t.Fatalf("the call waiting for room behind a call with a 3 s deadline: %v, want ErrTimeout, not sent", err)
	}
	within(t, "a call with CallTimeout 300ms waiting for room behind a call with a 3 s deadline", el, 600*time.Millisecond)
	c.Close() // ends the 2 MiB call
	<-big
}

// TestDeadlineErrorSaysWhetherSent guards DeadlineError.Sent when the
// deadline is the context's: a call that passed its deadline awaiting the
// answer reports that it was sent (whether the server processed it is
// unknown: not safe to retry), one still waiting for a slot that it was
// not. The context's timer and the connection's fire at the same instant;
// whichever wins, the answer must be the same.
func TestDeadlineErrorSaysWhetherSent(t *testing.T) {
	t.Parallel()
	h := newSlowHandler()
	cfg := fastSession
	cfg.MaxInFlight = 1
	_, addr := startServer(t, "", server.Config{Session: cfg}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.Call(ctx, "slow", nil)
		cancel()
		if !errors.Is(err, client.ErrTimeout) || !sent(t, err) {
			t.Fatalf("call %d: %v, want a timeout saying the call was sent", i, err)
		}
		<-h.started
		<-h.ended
	}
	first := make(chan error, 1)
	go func() { _, err := c.Call(context.Background(), "slow", nil); first <- err }()
	<-h.started
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.Call(ctx, "slow", nil)
		cancel()
		if !errors.Is(err, client.ErrTimeout) || sent(t, err) {
			t.Fatalf("call %d waiting for a slot: %v, want a timeout saying it was not sent", i, err)
		}
	}
	close(h.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}
