package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var fastSession = session.Config{
	HeartbeatInterval: 200 * time.Millisecond,
	HeartbeatTimeout:  200 * time.Millisecond,
	LingerTimeout:     200 * time.Millisecond,
}

// startServer serves h on 127.0.0.1 at a free port (or addr) and stops it
// at the end of the test.
func startServer(t *testing.T, addr string, cfg server.Config, h server.Handler) (*server.Server, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := netx.ListenConfig{AllowEphemeralPort: true}.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quiet
	if cfg.Session == (session.Config{}) {
		cfg.Session = fastSession
	}
	srv, err := server.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return srv, ln.Addr().String()
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.Logger = quiet
	if cfg.Session == (session.Config{}) {
		cfg.Session = fastSession
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var echo = server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
	return req.Body, nil
})

func TestCallEcho(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				want := fmt.Sprintf("g%d-%d", g, i)
				got, err := c.Call(context.Background(), "echo", []byte(want))
				if err != nil || string(got) != want {
					t.Errorf("Call = %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCallAppend: the response is appended to the caller's buffer, which
// is returned unchanged on error, and a reused buffer saves the one
// allocation Call makes per call for its response.
func TestCallAppend(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	ctx := context.Background()
	buf := append(make([]byte, 0, 64), "prefix:"...)
	got, err := c.CallAppend(ctx, "echo", []byte("hello"), buf)
	if err != nil || string(got) != "prefix:hello" || &got[0] != &buf[:1][0] {
		t.Fatalf("CallAppend = %q, %v; want prefix:hello in the caller's buffer", got, err)
	}
	if got, err := c.CallAppend(ctx, "bad method!", nil, buf); err == nil || string(got) != "prefix:" {
		t.Fatalf("CallAppend with a bad method = %q, %v; want the buffer unchanged and an error", got, err)
	}
	body := make([]byte, 64)
	call := func() {
		if _, err := c.Call(ctx, "echo", body); err != nil {
			t.Fatal(err)
		}
	}
	resp := make([]byte, 0, 64)
	callAppend := func() {
		var err error
		if resp, err = c.CallAppend(ctx, "echo", body, resp[:0]); err != nil {
			t.Fatal(err)
		}
	}
	call()
	// Client and server share this process: both sides' allocations count.
	withCall, withAppend := testing.AllocsPerRun(500, call), testing.AllocsPerRun(500, callAppend)
	t.Logf("allocations per call, client and server: Call %.2f, CallAppend %.2f", withCall, withAppend)
	if withAppend > withCall-1 {
		t.Fatalf("CallAppend with a reused buffer makes %.2f allocations per call, Call %.2f: want one fewer", withAppend, withCall)
	}
}

func TestCallServerError(t *testing.T) {
	mux := server.NewMux()
	mux.HandleFunc("fail", func(context.Context, *server.Request) ([]byte, error) { return nil, errors.New("nope") })
	_, addr := startServer(t, "", server.Config{}, mux)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	_, err := c.Call(context.Background(), "fail", nil)
	var ce *client.CallError
	if !errors.As(err, &ce) || ce.Code.String() != "APPLICATION" || ce.Message != "nope" {
		t.Fatalf("err = %v, want CallError APPLICATION nope", err)
	}
	_, err = c.Call(context.Background(), "missing", nil)
	if !errors.As(err, &ce) || ce.Code.String() != "UNKNOWN_METHOD" {
		t.Fatalf("err = %v, want UNKNOWN_METHOD", err)
	}
	if _, err := c.Call(context.Background(), "", nil); err == nil {
		t.Fatal("empty method accepted")
	}
}

// TestCallNeverHangs: a server that never answers cannot hold a call past
// its deadline, and the handler sees the deadline the client sent.
func TestCallNeverHangs(t *testing.T) {
	sawDeadline := make(chan time.Duration, 1)
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		d, _ := ctx.Deadline()
		sawDeadline <- time.Until(d)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, addr := startServer(t, "", server.Config{}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, "wait", nil)
	el := time.Since(start)
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if el < 150*time.Millisecond || el > 2*time.Second {
		t.Fatalf("returned after %v, want about 150ms", el)
	}
	if d := <-sawDeadline; d <= 0 || d > 150*time.Millisecond {
		t.Fatalf("handler deadline %v away, want within the client's 150ms", d)
	}
	// CallTimeout applies when the context has none.
	c2 := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 100 * time.Millisecond})
	if _, err := c2.Call(context.Background(), "wait", nil); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout from CallTimeout", err)
	}
	<-sawDeadline
}

// TestGoAwayLosesNothing: under concurrent load, one of two servers shuts
// down gracefully; every call succeeds, and every call is processed exactly
// once.
func TestGoAwayLosesNothing(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	release := make(chan struct{})
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		mu.Lock()
		seen[string(req.Body)]++
		mu.Unlock()
		if strings.HasPrefix(string(req.Body), "slow") {
			<-release
		}
		return req.Body, nil
	})
	a, addrA := startServer(t, "", server.Config{}, h)
	_, addrB := startServer(t, "", server.Config{}, h)
	c := newClient(t, client.Config{Addrs: []string{addrA, addrB}})

	// Wait until both connections are up so that A carries load.
	for i := 0; a.Stats().Active == 0; i++ {
		if _, err := c.Call(context.Background(), "echo", []byte(fmt.Sprint("warm", i))); err != nil {
			t.Fatal(err)
		}
	}
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("g%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := c.Call(ctx, "echo", []byte(body))
				cancel()
				calls.Add(1)
				if err != nil || string(got) != body {
					failed.Add(1)
					t.Errorf("call %s: %q, %v", body, got, err)
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, func() bool { return a.Stats().Requests >= 200 })
	// Requests in flight on A when it shuts down must still complete: send
	// slow ones until A holds at least one.
	slowErrs := make(chan error, 16)
	slow := 0
	waitFor(t, 5*time.Second, func() bool {
		if slow < 16 && a.Stats().WorkersBusy == 0 {
			body := fmt.Sprint("slow-", slow)
			slow++
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Call(context.Background(), "echo", []byte(body))
				slowErrs <- err
			}()
			waitFor(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return seen[body] == 1 })
		}
		return a.Stats().WorkersBusy > 0
	})
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- a.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, func() bool { return a.Stats().GoAways > 0 })
	close(release)
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i := 0; i < slow; i++ {
		if err := <-slowErrs; err != nil {
			t.Fatalf("a call in flight during shutdown failed: %v", err)
		}
	}
	halt()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed", failed.Load(), calls.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	for body, n := range seen {
		if n != 1 {
			t.Errorf("%q processed %d times", body, n)
		}
	}
	t.Logf("%d calls, A answered %d, client stats %+v", calls.Load(), a.Stats().Requests, c.Stats())
}

// TestMaxConnAgeRotatesWithoutLoss: connections that reach their maximum
// age are replaced under load with no failed call.
func TestMaxConnAgeRotatesWithoutLoss(t *testing.T) {
	srv, addr := startServer(t, "", server.Config{MaxConnAge: 100 * time.Millisecond, MaxConnAgeGrace: time.Second}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for srv.Stats().GoAways < 3 {
				if _, err := c.Call(context.Background(), "echo", []byte("x")); err != nil {
					failed.Add(1)
					t.Errorf("call failed: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d calls failed across connection rotation", failed.Load())
	}
	// The third GOAWAY may still be on its way to the client.
	waitFor(t, 5*time.Second, func() bool { return c.Stats().GoAways >= 3 })
}

func TestBalancesOverServers(t *testing.T) {
	var addrs []string
	var servers []*server.Server
	for i := 0; i < 3; i++ {
		s, a := startServer(t, "", server.Config{}, echo)
		servers = append(servers, s)
		addrs = append(addrs, a)
	}
	c := newClient(t, client.Config{Addrs: addrs})
	waitFor(t, 5*time.Second, func() bool {
		for _, s := range servers {
			if s.Stats().Active == 0 {
				return false
			}
		}
		return true
	})
	for i := 0; i < 300; i++ {
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range servers {
		if n := s.Stats().Requests; n < 80 {
			t.Errorf("server %d answered %d of 300 calls", i, n)
		}
	}
}

// TestUnavailableFailsFast: with nothing listening, a call fails at once
// with ErrUnavailable, not at its deadline.
func TestUnavailableFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, client.Config{Addrs: []string{addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Call(ctx, "echo", nil)
	var de *netx.DialError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &de) || de.Timeout {
		t.Fatalf("err = %v, want ErrUnavailable wrapping a refused DialError", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
}

// TestDialTimeoutBlackHole: a listener whose accept queue is full drops
// SYNs, as a black hole does; the connect fails at the dial timeout.
func TestDialTimeoutBlackHole(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	// Fill the accept queue (never accepted).
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		fillers = append(fillers, c)
	}
	const timeout = 300 * time.Millisecond
	d := netx.Dialer{Timeout: timeout}
	start := time.Now()
	c, err := d.DialContext(context.Background(), addr)
	el := time.Since(start)
	if err == nil {
		c.Close()
		t.Skip("the kernel accepted past a full backlog (tcp_abort_on_overflow or syncookies): no black hole here")
	}
	var de *netx.DialError
	if !errors.As(err, &de) || !de.Timeout {
		t.Fatalf("err = %v, want a DialError with Timeout", err)
	}
	if el < timeout || el > timeout+timeout/2 {
		t.Fatalf("dial failed after %v, want %v (+50%%)", el, timeout)
	}
}

// TestReconnectsAfterRestart: a server that dies and comes back on the
// same port is used again without any action by the caller.
func TestReconnectsAfterRestart(t *testing.T) {
	ln, err := netx.ListenConfig{}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv, err := server.New(server.Config{Logger: quiet, Session: fastSession}, echo)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	c := newClient(t, client.Config{Addrs: []string{addr}, Backoff: client.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}})
	if _, err := c.Call(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	<-done
	// While it is down every call ends with a typed error, promptly.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = c.Call(ctx, "echo", nil)
	cancel()
	if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrConnClosed) {
		t.Fatalf("while down: %v", err)
	}
	startServer(t, addr, server.Config{}, echo)
	waitFor(t, 5*time.Second, func() bool {
		_, err := c.Call(context.Background(), "echo", nil)
		return err == nil
	})
	if s := c.Stats(); s.Reconnects == 0 {
		t.Fatalf("stats %+v: no reconnect counted", s)
	}
}

func TestClosedClient(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	if _, err := c.Call(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Call(context.Background(), "echo", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []client.Config{
		{},
		{Addrs: []string{"no-port"}},
		{Addrs: []string{"127.0.0.1:1"}, Backoff: client.Backoff{Base: time.Second, Max: time.Millisecond}},
	} {
		var ce *session.ConfigError
		if _, err := client.New(cfg); !errors.As(err, &ce) {
			t.Errorf("New(%+v) = %v, want a ConfigError", cfg, err)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestRequestTooLargeFailsLocally: a call whose frame would exceed the
// maximum frame size fails before anything is sent.
func TestRequestTooLargeFailsLocally(t *testing.T) {
	srv, addr := startServer(t, "", server.Config{}, echo)
	cfg := fastSession
	cfg.MaxFrameSize = 1024
	c := newClient(t, client.Config{Addrs: []string{addr}, Session: cfg})
	_, err := c.Call(context.Background(), "echo", make([]byte, 2000))
	if !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if _, err := c.Call(context.Background(), "echo", make([]byte, 1000)); err != nil {
		t.Fatalf("a call under the limit: %v", err)
	}
	if n := srv.Stats().Requests; n != 1 {
		t.Fatalf("server answered %d requests, want only the small one", n)
	}
}

// TestDialHook: a configured Dial opens the connections.
func TestDialHook(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, echo)
	var dials atomic.Int64
	c := newClient(t, client.Config{Addrs: []string{"tcppro.invalid:7420"}, Dial: func(ctx context.Context, _ string) (net.Conn, error) {
		dials.Add(1)
		return netx.Dialer{}.DialContext(ctx, addr)
	}})
	if got, err := c.Call(context.Background(), "echo", []byte("via hook")); err != nil || string(got) != "via hook" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	if dials.Load() != 1 {
		t.Fatalf("%d dials through the hook", dials.Load())
	}
}
