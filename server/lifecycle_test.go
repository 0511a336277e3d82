package server_test

// A server's life: graceful shutdown and its deadline, Close with stuck
// handlers, drain, accept errors, and connection ageing.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestShutdownGraceful guards Shutdown's order: GOAWAY carrying the last
// request the server will process, requests above it never processed,
// in-flight work finished and answered, then the connection closed and
// Shutdown returning nil.
func TestShutdownGraceful(t *testing.T) {
	g := newGate(t)
	var echoed atomic.Int64
	m := server.NewMux()
	m.Handle("hold", g)
	m.HandleFunc("echo", func(_ context.Context, req *server.Request) ([]byte, error) {
		echoed.Add(1)
		return req.Body, nil
	})
	ts := startServer(t, baseConfig(), m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "hold", nil)
	g.waitStarted(t, time.Second)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()

	f := p.expect(t, time.Second, wire.TypeGoAway)
	last, reason, _, err := wire.ParseGoAway(f.Payload)
	if err != nil || last != 1 || reason != wire.ReasonShutdown {
		t.Fatalf("GOAWAY last=%d reason=%v (%v), want last=1 SHUTDOWN", last, reason, err)
	}
	if ready, _ := ts.Ready(); ready {
		t.Errorf("Ready() = true during Shutdown")
	}
	// A request after the GOAWAY is above its last id: never processed.
	p.request(t, 2, 0, "echo", []byte("too late"))
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after Shutdown began")
	}

	g.Release()
	if body, ef := p.answer(t, time.Second, 1); ef != nil || string(body) != "released" {
		t.Fatalf("answer to request 1: %q, %v", body, ef)
	}
	p.expectEOF(t, time.Second) // nothing for request 2
	p.Close()
	if n := echoed.Load(); n != 0 {
		t.Errorf("request 2, sent after GOAWAY(last=1), was processed")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := ts.ServeErr(t, time.Second); !errors.Is(err, server.ErrServerClosed) {
		t.Errorf("Serve = %v, want server.ErrServerClosed", err)
	}
}

// TestShutdownDeadline guards Shutdown's hard deadline: a handler that
// never returns does not hold Shutdown past its context, and the
// connection is closed then.
func TestShutdownDeadline(t *testing.T) {
	g := newGate(t) // ignores its context
	m := echoMux()
	m.Handle("stuck", g)
	ts := startServer(t, baseConfig(), m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "stuck", nil)
	g.waitStarted(t, time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- ts.Shutdown(ctx) }()
	var err error
	select {
	case err = <-shut:
	case <-time.After(3 * time.Second):
		g.Release() // let Shutdown return before the test ends
		<-shut
		t.Fatalf("Shutdown with a 100ms deadline did not return within 3s")
	}
	elapsed := time.Since(start)
	t.Logf("TIMING Shutdown(100ms) returned after %v", elapsed)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if elapsed < 90*time.Millisecond || elapsed > 600*time.Millisecond {
		t.Errorf("Shutdown returned after %v, want ~100ms", elapsed)
	}
	p.expect(t, time.Second, wire.TypeGoAway)
	p.expectClosed(t, time.Second)
	if a := ts.Stats().Active; a != 0 {
		t.Errorf("Active = %d after the Shutdown deadline, want 0", a)
	}
	g.Release()
	if !waitFor(t, time.Second, func() bool { return ts.handlers.Load() == 0 }) {
		t.Errorf("the stuck handler did not return after release")
	}
}

// TestCloseWithStuckHandler guards Close against handlers that never
// return (issue case 7): Close returns at once and every descriptor of the
// server (listener, reserve, the connection's socket) is released while
// the handler is still blocked; the peer sees its connection end.
func TestCloseWithStuckHandler(t *testing.T) {
	stuck := make(chan struct{})
	started := make(chan struct{}, 1)
	m := echoMux()
	m.HandleFunc("stuck", func(context.Context, *server.Request) ([]byte, error) {
		started <- struct{}{}
		<-stuck // blocked on a channel it gets only when the test ends, whatever its context says
		return nil, nil
	})
	base := openFDs(t)
	ts := startServer(t, baseConfig(), m)
	var once sync.Once
	release := func() { once.Do(func() { close(stuck) }) }
	t.Cleanup(release) // before the server's cleanup, which waits for handlers
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "stuck", nil)
	select {
	case <-started:
	case <-time.After(2 * time.Second):
		t.Fatal("handler did not start")
	}
	if n := openFDs(t); n <= base+1 {
		t.Fatalf("%d descriptors open with the server running, %d before: the count proves nothing", n, base)
	}

	start := time.Now()
	closed := make(chan struct{})
	go func() {
		ts.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		release() // and the peer goes: Close can return
		p.Close()
		<-closed
		t.Fatalf("Close did not return within 2s with a stuck handler")
	}
	took := time.Since(start)
	t.Logf("TIMING Close with a stuck handler returned after %v", took)
	if took > time.Second {
		t.Errorf("Close took %v with a stuck handler, want < 1s", took)
	}
	p.expectClosed(t, time.Second)
	// Only the peer's own socket remains open.
	if !waitFor(t, time.Second, func() bool { return openFDs(t) <= base+1 }) {
		t.Errorf("%d descriptors open after Close, want at most %d (the peer's socket)", openFDs(t), base+1)
	}
	if ts.handlers.Load() != 1 {
		t.Fatalf("%d handlers running, want the stuck one: the test proves nothing", ts.handlers.Load())
	}
	release()
	if !waitFor(t, time.Second, func() bool { return ts.handlers.Load() == 0 }) {
		t.Errorf("the released handler did not return")
	}
}

// TestDrain guards Drain: open connections get GOAWAY (reason DRAIN, last
// id the last request received) and may finish, new connections are
// refused SHUTTING_DOWN, and SetOffline(false) ends the drain.
func TestDrain(t *testing.T) {
	ts := startServer(t, baseConfig(), echoMux())
	p := dialRaw(t, ts.addr, true)
	p.echo(t, 1, "before")
	p.echo(t, 2, "before")
	ts.Drain(wire.ReasonDrain)
	f := p.expect(t, time.Second, wire.TypeGoAway)
	if last, reason, _, err := wire.ParseGoAway(f.Payload); err != nil || last != 2 || reason != wire.ReasonDrain {
		t.Fatalf("GOAWAY last=%d reason=%v (%v), want last=2 DRAIN", last, reason, err)
	}
	p.expectEOF(t, time.Second) // nothing in flight: closed at once
	if ready, why := ts.Ready(); ready || why != "draining" {
		t.Errorf("Ready() = %v, %q while draining", ready, why)
	}
	if he := refusal(t, ts.addr); he.Code != wire.CodeShuttingDown {
		t.Errorf("refused with %v while draining, want SHUTTING_DOWN", he)
	}
	ts.SetOffline(false)
	dialRaw(t, ts.addr, true).echo(t, 1, "back")
}

// TestShutdownDrainDelay guards Config.DrainDelay while it lasts:
// Shutdown tells OnServiceChange, turns not ready and refuses new
// connections at once, and the open connections keep serving without a
// GOAWAY. The delay (an hour) is ended by Shutdown's context, which then
// closes what is left, as its hard deadline.
func TestShutdownDrainDelay(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.DrainDelay = time.Hour
	left := make(chan struct{})
	cfg.OnServiceChange = func(in bool) {
		if !in {
			close(left)
		}
	}
	ts := startServer(t, cfg, echoMux())
	p := dialRaw(t, ts.addr, true)
	p.echo(t, 1, "before")
	if d := ts.DrainDelay(); d != time.Hour {
		t.Errorf("DrainDelay() = %v in service, want Config.DrainDelay (1h)", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(ctx) }()
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("OnServiceChange(false) not called within 5s of Shutdown")
	}
	if !waitFor(t, 5*time.Second, func() bool { ready, why := ts.Ready(); return !ready && why == "shutting down" }) {
		ready, why := ts.Ready()
		t.Fatalf("Ready() = %v, %q after Shutdown began, want false, shutting down", ready, why)
	}
	if he := refusal(t, ts.addr); he.Code != wire.CodeShuttingDown {
		t.Errorf("a new connection during the drain delay was refused with %v, want SHUTTING_DOWN", he)
	}
	p.echo(t, 2, "during the delay") // no GOAWAY came before it
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) during its drain delay", err)
	default:
	}

	cancel()
	select {
	case err := <-shut:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still waiting out its drain delay after its context ended")
	}
	// Closed at the hard deadline, maybe after its GOAWAY.
	for {
		f, err := p.next(5 * time.Second)
		if err == nil && (f.Type == wire.TypeGoAway || f.Type == wire.TypePing) {
			continue
		}
		if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("after Shutdown's context ended: %v, %v; want the connection closed", f, err)
		}
		break
	}
}

// TestShutdownDrainDelayThenGoAway: GOAWAY comes once the drain delay is
// over, not before, and Shutdown then ends gracefully.
func TestShutdownDrainDelayThenGoAway(t *testing.T) {
	t.Parallel()
	const delay = 500 * time.Millisecond
	cfg := baseConfig()
	cfg.DrainDelay = delay
	ts := startServer(t, cfg, echoMux())
	p := dialRaw(t, ts.addr, true)
	p.echo(t, 1, "before")
	start := time.Now()
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()
	f := p.expect(t, delay+5*time.Second, wire.TypeGoAway)
	if took := time.Since(start); took < delay {
		t.Errorf("GOAWAY %v after Shutdown began, before the drain delay (%v) was over", took, delay)
	}
	if last, reason, _, err := wire.ParseGoAway(f.Payload); err != nil || last != 1 || reason != wire.ReasonShutdown {
		t.Errorf("GOAWAY last=%d reason=%v (%v), want last=1 SHUTDOWN", last, reason, err)
	}
	p.expectEOF(t, time.Second)
	p.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return once the connection closed")
	}
}

// TestShutdownDrainDelaySkipped: a server taken out of service before
// (SetOffline, Drain) has had its delay: Shutdown sends GOAWAY at once; so
// does Close end the delay.
func TestShutdownDrainDelaySkipped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		before func(*testServer)
		during func(*testServer)
	}{
		{"offline first", func(ts *testServer) { ts.SetOffline(true) }, nil},
		{"close during", nil, func(ts *testServer) { ts.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.DrainDelay = time.Hour
			ts := startServer(t, cfg, echoMux())
			p := dialRaw(t, ts.addr, true)
			p.echo(t, 1, "before")
			if tc.before != nil {
				tc.before(ts)
				if d := ts.DrainDelay(); d != 0 {
					t.Errorf("DrainDelay() = %v out of service already, want 0", d)
				}
			}
			shut := make(chan error, 1)
			go func() { shut <- ts.Shutdown(context.Background()) }()
			if tc.during != nil {
				if !waitFor(t, 5*time.Second, func() bool { ready, _ := ts.Ready(); return !ready }) {
					t.Fatal("still ready after Shutdown began")
				}
				tc.during(ts)
			} else {
				p.expect(t, 5*time.Second, wire.TypeGoAway)
				p.Close()
			}
			select {
			case <-shut:
			case <-time.After(5 * time.Second):
				t.Fatal("Shutdown still waiting out its drain delay")
			}
		})
	}
}

// failingListener fails its first fails Accepts with errno, then blocks
// until closed. It records when each Accept was called.
type failingListener struct {
	errno  syscall.Errno
	fails  int
	mu     sync.Mutex
	calls  []time.Time
	closed chan struct{}
	once   sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	n := len(l.calls)
	l.mu.Unlock()
	if n <= l.fails {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", l.errno)}
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *failingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *failingListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}

func (l *failingListener) gaps() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var g []time.Duration
	for i := 1; i < len(l.calls); i++ {
		g = append(g, l.calls[i].Sub(l.calls[i-1]))
	}
	return g
}

// TestAcceptBackoff guards the accept loop against spinning on temporary
// errors: the pause doubles from AcceptBackoffMin. At the open-file limit
// (EMFILE) the loop first spends its reserve descriptor on one accept;
// when that fails too, it backs off the same way.
func TestAcceptBackoff(t *testing.T) {
	t.Run("ENOBUFS", func(t *testing.T) {
		ln := &failingListener{errno: syscall.ENOBUFS, fails: 5, closed: make(chan struct{})}
		ts := serveOn(t, baseConfig(), echoMux(), ln)
		if !waitFor(t, 3*time.Second, func() bool { return len(ln.gaps()) == 5 }) {
			t.Fatalf("Accept called %d times, want 6", len(ln.gaps())+1)
		}
		gaps := ln.gaps()
		t.Logf("TIMING accept gaps %v", gaps)
		for i, w := range []time.Duration{5, 10, 20, 40, 80} {
			if gaps[i] < w*time.Millisecond {
				t.Errorf("gap after accept error %d = %v, want >= %v", i+1, gaps[i], w*time.Millisecond)
			}
		}
		if got := ts.Stats().AcceptErrors; got != 5 {
			t.Errorf("AcceptErrors = %d, want 5", got)
		}
	})
	t.Run("EMFILE", func(t *testing.T) {
		// Calls go in pairs: the failed accept, then the one made with the
		// reserve descriptor given up, failing too; a pause follows each pair.
		ln := &failingListener{errno: syscall.EMFILE, fails: 6, closed: make(chan struct{})}
		ts := serveOn(t, baseConfig(), echoMux(), ln)
		if !waitFor(t, 3*time.Second, func() bool { return len(ln.gaps()) == 6 }) {
			t.Fatalf("Accept called %d times, want 7", len(ln.gaps())+1)
		}
		gaps := ln.gaps()
		t.Logf("TIMING accept gaps %v", gaps)
		for i, w := range []time.Duration{5, 10} {
			if g := gaps[2*i+1]; g < w*time.Millisecond {
				t.Errorf("pause after failed pair %d = %v, want >= %v", i+1, g, w*time.Millisecond)
			}
		}
		if got := ts.Stats().AcceptErrors; got != 3 {
			t.Errorf("AcceptErrors = %d, want 3", got)
		}
	})
}

// TestMaxConnAge guards connection ageing: connections older than
// MaxConnAge get GOAWAY and clients move to fresh ones without a single
// call failing.
func TestMaxConnAge(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.MaxConnAge = 200 * time.Millisecond
	cfg.MaxConnAgeJitter = 0.1
	cfg.MaxConnAgeGrace = time.Second
	ts := startServer(t, cfg, echoMux())
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})

	const callers = 4
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		errs       []error
		wg         sync.WaitGroup
	)
	end := time.Now().Add(time.Second)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(fmt.Sprintf("caller %d", i))
			for n := 0; n < 100_000 && time.Now().Before(end); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := c.Call(ctx, "echo", body)
				cancel()
				if err == nil && string(resp) != string(body) {
					err = fmt.Errorf("wrong response %q", resp)
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	st, cs := ts.Stats(), c.Stats()
	t.Logf("calls ok=%d failed=%d; server accepted %d, GOAWAYs %d; client GOAWAYs %d", ok.Load(), failed.Load(), st.Accepted, st.GoAways, cs.GoAways)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls failed across connection ageing; first errors: %v", n, errs)
	}
	if st.GoAways < 1 || st.Accepted < 2 || cs.GoAways < 1 {
		t.Errorf("client did not move to a fresh connection: server GOAWAYs %d, accepted %d, client GOAWAYs %d", st.GoAways, st.Accepted, cs.GoAways)
	}
	if ok.Load() == 0 {
		t.Errorf("no call succeeded")
	}
}

// TestListening: Listening is closed once Serve has registered its
// listener — from then on Addrs lists it and Ready no longer says "not
// listening" — and not before.
func TestListening(t *testing.T) {
	srv, err := server.New(server.Config{Logger: quiet}, server.HandlerFunc(func(context.Context, *server.Request) ([]byte, error) { return nil, nil }))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.Listening():
		t.Fatal("Listening closed before Serve")
	default:
	}
	if ready, why := srv.Ready(); ready || why != "not listening" {
		t.Fatalf("Ready() = %v, %q before Serve", ready, why)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	<-srv.Listening()
	if addrs := srv.Addrs(); len(addrs) != 1 || addrs[0].String() != ln.Addr().String() {
		t.Errorf("Addrs() = %v once listening, want [%v]", addrs, ln.Addr())
	}
	if ready, why := srv.Ready(); !ready {
		t.Errorf("Ready() = false, %q once listening", why)
	}
	srv.Close()
	if err := <-done; !errors.Is(err, server.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
