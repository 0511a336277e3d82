package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestCallEcho: concurrent calls multiplexed on one connection each get
// their own answer, and bodies larger than a frame travel in chunks.
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
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	got, err := c.Call(context.Background(), "echo", big)
	if err != nil || string(got) != string(big) {
		t.Fatalf("a %d-byte echo: %d bytes back, %v", len(big), len(got), err)
	}
}

// TestCallAppend: the response is appended to the caller's buffer, which
// is returned unchanged on error; a call reusing its buffer allocates
// little. The server runs in another process, so that the allocations
// counted are the client's.
func TestCallAppend(t *testing.T) {
	c := newClient(t, client.Config{Addrs: []string{startEchoPeer(t)}})
	ctx := context.Background()
	buf := append(make([]byte, 0, 64), "prefix:"...)
	got, err := c.CallAppend(ctx, "echo", []byte("hello"), buf)
	if err != nil || string(got) != "prefix:hello" || &got[0] != &buf[:1][0] {
		t.Fatalf("CallAppend = %q, %v; want prefix:hello in the caller's buffer", got, err)
	}
	if got, err := c.CallAppend(ctx, "bad method!", nil, buf); !errors.Is(err, wire.ErrInvalidMethod) || string(got) != "prefix:" {
		t.Fatalf("CallAppend with a bad method = %q, %v; want the buffer unchanged and ErrInvalidMethod", got, err)
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
		if resp, err = c.CallAppend(ctx, "echo", body, resp[:0]); err != nil || len(resp) != len(body) {
			t.Fatalf("CallAppend = %d bytes, %v", len(resp), err)
		}
	}
	for i := 0; i < 100; i++ { // warm the pools
		callAppend()
	}
	withCall, withAppend := testing.AllocsPerRun(1000, call), testing.AllocsPerRun(1000, callAppend)
	t.Logf("the client's allocations per call: Call %.0f, CallAppend %.0f (race detector: %v)", withCall, withAppend, raceEnabled)
	// The connection's writer (a goroutine started per burst of output,
	// and its write buffer) accounts for about 3. The race detector drops
	// a quarter of what goes back to a sync.Pool, which costs a few more.
	bound := 4.0
	if raceEnabled {
		bound = 8
	}
	if withAppend > bound {
		t.Errorf("CallAppend with a reused buffer makes %.0f allocations per call, want at most %.0f", withAppend, bound)
	}
	// Under the race detector sync.Pool's random drops blur a difference
	// of one allocation.
	if !raceEnabled && withAppend > withCall-0.5 {
		t.Errorf("CallAppend with a reused buffer makes %.0f allocations per call, Call %.0f: want the response's allocation saved", withAppend, withCall)
	}
}

// TestCallServerError: an ERROR answer is a *client.CallError carrying the
// server's code and message, matching the sentinel of its code.
func TestCallServerError(t *testing.T) {
	mux := server.NewMux()
	mux.HandleFunc("fail", func(context.Context, *server.Request) ([]byte, error) { return nil, errors.New("nope") })
	mux.HandleFunc("overloaded", refuseAll.ServeTCP)
	mux.HandleFunc("down", func(context.Context, *server.Request) ([]byte, error) {
		return nil, &server.Error{Code: wire.CodeShuttingDown, Message: "draining"}
	})
	mux.HandleFunc("late", func(context.Context, *server.Request) ([]byte, error) {
		return nil, fmt.Errorf("gave up: %w", context.DeadlineExceeded)
	})
	_, addr := startServer(t, "", server.Config{}, mux)
	c := newClient(t, client.Config{Addrs: []string{addr}, MaxRetries: -1})
	ctx := context.Background()
	for _, tc := range []struct {
		method   string
		code     wire.Code
		sentinel error
	}{
		{"fail", wire.CodeApplication, nil},
		{"missing", wire.CodeUnknownMethod, nil},
		{"overloaded", wire.CodeOverloaded, client.ErrOverloaded},
		{"down", wire.CodeShuttingDown, session.ErrShuttingDown},
		{"late", wire.CodeTimeout, client.ErrTimeout},
	} {
		_, err := c.Call(ctx, tc.method, nil)
		var ce *client.CallError
		if !errors.As(err, &ce) || ce.Code != tc.code || ce.Conn {
			t.Errorf("%s: err = %v, want a CallError %v", tc.method, err, tc.code)
			continue
		}
		if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v does not match %v", tc.method, err, tc.sentinel)
		}
		if tc.method == "fail" && ce.Message != "nope" {
			t.Errorf("fail: message %q, want the handler's", ce.Message)
		}
	}
	if _, err := c.Call(ctx, "", nil); !errors.Is(err, wire.ErrInvalidMethod) {
		t.Fatalf("empty method: %v, want ErrInvalidMethod", err)
	}
}

// TestCallNeverHangs: a server that never answers cannot hold a call past
// its deadline, and the handler sees the deadline the client sent.
func TestCallNeverHangs(t *testing.T) {
	t.Parallel()
	sawDeadline := make(chan time.Duration, 2)
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		d, _ := ctx.Deadline()
		sawDeadline <- time.Until(d)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, addr := startServer(t, "", server.Config{}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	start := time.Now() // before the deadline is set: the call cannot end before start+150ms
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, "wait", nil)
	el := time.Since(start)
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if el < 150*time.Millisecond || el > time.Second {
		t.Fatalf("returned after %v, want about 150ms", el)
	}
	if d := <-sawDeadline; d <= 0 || d > 150*time.Millisecond {
		t.Fatalf("handler deadline %v away, want within the client's 150ms", d)
	}
	// CallTimeout applies when the context has none.
	c2 := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 100 * time.Millisecond})
	start = time.Now()
	if _, err := c2.Call(context.Background(), "wait", nil); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout from CallTimeout", err)
	}
	within(t, "a call bounded by CallTimeout 100ms", time.Since(start), time.Second)
	if d := <-sawDeadline; d <= 0 || d > 100*time.Millisecond {
		t.Fatalf("handler deadline %v away, want within CallTimeout", d)
	}
}

// TestRequestTooLargeFailsLocally: a body above the server's
// MAX_MESSAGE_SIZE (learnt from its HELLO) fails before anything is sent.
func TestRequestTooLargeFailsLocally(t *testing.T) {
	cfg := fastSession
	cfg.MaxMessageSize = 1000
	srv, addr := startServer(t, "", server.Config{Session: cfg}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	_, err := c.Call(context.Background(), "echo", make([]byte, 2000))
	if !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if _, err := c.Call(context.Background(), "echo", make([]byte, 1000)); err != nil {
		t.Fatalf("a call at the limit: %v", err)
	}
	if n := srv.Stats().Requests; n != 1 {
		t.Fatalf("server answered %d requests, want only the one at the limit", n)
	}
}

// TestClosedClient: Close fails the calls in flight promptly, and every
// later call with ErrClosed.
func TestClosedClient(t *testing.T) {
	started := make(chan struct{}, 1)
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		if req.Method == "wait" {
			started <- struct{}{}
			<-ctx.Done()
		}
		return req.Body, nil
	})
	_, addr := startServer(t, "", server.Config{}, h)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	if _, err := c.Call(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	inFlight := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "wait", nil)
		inFlight <- err
	}()
	<-started
	start := time.Now()
	c.Close()
	select {
	case err := <-inFlight:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("call in flight at Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a call in flight did not return after Close")
	}
	within(t, "Close with a call in flight", time.Since(start), time.Second)
	if _, err := c.Call(context.Background(), "echo", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestConfigValidation: New refuses an invalid configuration with a
// *session.ConfigError naming the field; DefaultConfig fills in the
// documented defaults.
func TestConfigValidation(t *testing.T) {
	addrs := []string{"127.0.0.1:1"}
	for _, tc := range []struct {
		field string
		cfg   client.Config
	}{
		{"Addrs", client.Config{}},
		{"Addrs", client.Config{Addrs: []string{"no-port"}}},
		{"DialTimeout", client.Config{Addrs: addrs, DialTimeout: -time.Second}},
		{"CallTimeout", client.Config{Addrs: addrs, CallTimeout: -time.Second}},
		{"Backoff.Max", client.Config{Addrs: addrs, Backoff: client.Backoff{Base: time.Second, Max: time.Millisecond}}},
		{"Backoff.Multiplier", client.Config{Addrs: addrs, Backoff: client.Backoff{Multiplier: 0.5}}},
		{"RetryBackoff.Max", client.Config{Addrs: addrs, RetryBackoff: client.Backoff{Base: time.Second, Max: time.Millisecond}}},
		{"RetryBudget.Tokens", client.Config{Addrs: addrs, RetryBudget: client.RetryBudget{Tokens: 0.5}}},
		{"RetryBudget.Ratio", client.Config{Addrs: addrs, RetryBudget: client.RetryBudget{Ratio: 2}}},
		{"HeartbeatTimeout", client.Config{Addrs: addrs, Session: session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second}}},
		{"Transport", client.Config{Addrs: addrs, Transport: "io_uring"}},
		{"Transport", client.Config{Addrs: addrs, Transport: netx.TransportEpoll, TLS: &tls.Config{}}},
	} {
		var ce *session.ConfigError
		if _, err := client.New(tc.cfg); !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%+v) = %v, want a ConfigError naming %s", tc.cfg, err, tc.field)
		}
	}
	// A check of another package: the error behind it is kept.
	for _, tc := range []struct {
		field string
		cfg   client.Config
		is    error
	}{
		{"Target", client.Config{Target: "nope:///x"}, discovery.ErrBadTarget},
		{"Discovery", client.Config{Target: "dns:///localhost:7420", Discovery: discovery.Options{Refresh: -time.Second}}, discovery.ErrBadOptions},
	} {
		var ce *session.ConfigError
		_, err := client.New(tc.cfg)
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, tc.is) {
			t.Errorf("New(%+v) = %v, want a ConfigError naming %s that is %v", tc.cfg, err, tc.field, tc.is)
		}
	}
	// The defaults README's practices table states, as figures.
	d := client.DefaultConfig()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"DialTimeout", d.DialTimeout, 3 * time.Second},
		{"CallTimeout", d.CallTimeout, 30 * time.Second},
		{"MaxRetries", d.MaxRetries, 3},
		{"Backoff", d.Backoff, client.Backoff{Base: 100 * time.Millisecond, Multiplier: 2, Max: 10 * time.Second}},
		{"RetryBackoff.Base", d.RetryBackoff.Base, 10 * time.Millisecond},
		{"RetryBackoff.Max", d.RetryBackoff.Max, time.Second},
		{"RetryBudget", d.RetryBudget, client.RetryBudget{Tokens: 10, Ratio: 0.1}},
	} {
		if c.got != c.want {
			t.Errorf("DefaultConfig().%s = %+v, want %+v (as documented)", c.name, c.got, c.want)
		}
	}
}

// TestDialHook: a configured Dial opens the connections, whatever the
// address says.
func TestDialHook(t *testing.T) {
	_, addr := startServer(t, "", server.Config{}, echo)
	var dials atomic.Int64
	c := newClient(t, client.Config{Addrs: []string{"tcppro.invalid:7420"}, Dial: func(ctx context.Context, a string) (net.Conn, error) {
		if a != "tcppro.invalid:7420" {
			return nil, fmt.Errorf("dialled %q", a)
		}
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
