package server_test

// What handlers see and how they are run: the worker pool, their context,
// connection states, and interceptors.

import (
	"context"
	"errors"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestWorkerPoolOverload guards the bounded worker pool: with every worker
// busy a request is refused OVERLOADED at once (typed and retry safe for
// the client library, with its id for a raw peer), the connection keeps
// answering PINGs, and a freed worker serves again.
func TestWorkerPoolOverload(t *testing.T) {
	cfg := baseConfig()
	cfg.Workers = 1
	g := newGate(t)
	m := echoMux()
	m.Handle("sleep", g)
	ts := startServer(t, cfg, m)
	t.Cleanup(g.Release)

	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "sleep", nil)
	g.waitStarted(t, time.Second)

	// Retries are off so that the time measured is the refusal's.
	c := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: -1})
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().Active == 2 }) {
		t.Fatalf("client did not connect")
	}
	start := time.Now()
	_, err := call(t, c, "echo", []byte("x"))
	elapsed := time.Since(start)
	t.Logf("TIMING overloaded refusal after %v", elapsed)
	if !errors.Is(err, client.ErrOverloaded) || !session.RetrySafe(err) {
		t.Errorf("call with every worker busy: %v, want errors.Is client.ErrOverloaded, retry safe", err)
	}
	if elapsed > 200*time.Millisecond {
		t.Errorf("overloaded call failed after %v, want at once", elapsed)
	}

	p.request(t, 2, 0, "echo", []byte("y"))
	p.expectError(t, time.Second, 2, wire.CodeOverloaded)
	p.ping(t, 0xfeed)
	p.expectPong(t, time.Second, 0xfeed)
	if ts.Stats().Overloaded < 2 {
		t.Errorf("Overloaded = %d, want >= 2", ts.Stats().Overloaded)
	}

	g.Release()
	if f := p.expect(t, time.Second, wire.TypeResponse); f.ID != 1 {
		t.Fatalf("got %v, want RESPONSE 1", f)
	}
	if !waitFor(t, time.Second, func() bool { return ts.Stats().WorkersBusy == 0 }) {
		t.Fatalf("WorkersBusy = %d after the handler returned", ts.Stats().WorkersBusy)
	}
	if resp, err := call(t, c, "echo", []byte("free")); err != nil || string(resp) != "free" {
		t.Errorf("call after the worker freed: %q, %v", resp, err)
	}
}

type ctxReport struct {
	err         error
	deadline    time.Time
	hasDeadline bool
	waited      time.Duration
}

// TestHandlerContext guards the handler's context: cancelled when the
// connection ends, Canceled once the handler has returned (keeping the
// error a handler saw), and carrying the client's deadline, answered
// TIMEOUT when it passes.
func TestHandlerContext(t *testing.T) {
	reports := make(chan ctxReport, 4)
	started := make(chan struct{}, 4)
	release := make(chan struct{})
	m := echoMux()
	m.HandleFunc("wait", func(ctx context.Context, req *server.Request) ([]byte, error) {
		start := time.Now()
		dl, ok := ctx.Deadline()
		started <- struct{}{}
		select {
		case <-ctx.Done():
		case <-release:
			return nil, errors.New("released by the test, context never ended")
		}
		reports <- ctxReport{err: ctx.Err(), deadline: dl, hasDeadline: ok, waited: time.Since(start)}
		return nil, ctx.Err()
	})
	kept := make(chan context.Context, 2)
	m.HandleFunc("keep", func(ctx context.Context, req *server.Request) ([]byte, error) {
		switch string(req.Body) {
		case "armed":
			ctx.Done() // arms the context's timer and cancellation hook
		case "expired":
			for ctx.Err() == nil { // polls: Done would arm the context
				time.Sleep(time.Millisecond)
			}
		}
		kept <- ctx
		return nil, nil
	})
	cfg := baseConfig()
	cfg.Session.WriteTimeout = shortWrite
	ts := startServer(t, cfg, m)
	t.Cleanup(func() { close(release) }) // before the server's cleanup waits for handlers

	waitReport := func(t *testing.T, timeout time.Duration) ctxReport {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(timeout):
			t.Fatalf("handler's context not done within %v", timeout)
			return ctxReport{}
		}
	}

	t.Run("connection reset", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 0, "wait", nil)
		<-started
		_ = p.conn.SetLinger(0) // close with a reset: the connection is gone at once
		p.Close()
		closed := time.Now()
		r := waitReport(t, 2*time.Second)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("ctx.Err() = %v, want context.Canceled", r.err)
		}
		if r.hasDeadline {
			t.Errorf("a request without timeout has a deadline %v", r.deadline)
		}
		if d := time.Since(closed); d > 500*time.Millisecond {
			t.Errorf("context cancelled %v after the reset", d)
		}
	})

	t.Run("peer closes", func(t *testing.T) {
		// A FIN may be a half-close: the request may still be answered,
		// so the context ends when the in-flight work outlives
		// WriteTimeout after the FIN.
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 0, "wait", nil)
		<-started
		p.Close()
		closed := time.Now()
		r := waitReport(t, 3*time.Second)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("ctx.Err() = %v, want context.Canceled", r.err)
		}
		if d := time.Since(closed); d > shortWrite+time.Second {
			t.Errorf("context cancelled %v after the peer closed, want within WriteTimeout %v (+1s)", d, shortWrite)
		}
	})

	t.Run("handler returned", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		for i, body := range []string{"unarmed", "armed"} {
			id := uint64(i + 1)
			p.request(t, id, 10_000, "keep", []byte(body))
			p.expect(t, 2*time.Second, wire.TypeResponse)
			ctx := <-kept
			if err := ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: ctx.Err() after the handler returned = %v, want context.Canceled", body, err)
			}
			select {
			case <-ctx.Done():
			default:
				t.Errorf("%s: ctx.Done() not closed after the handler returned", body)
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("%s: ctx.Deadline() lost after the handler returned", body)
			}
		}
	})

	t.Run("error stays the same after return", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 20, "keep", []byte("expired"))
		p.expect(t, 2*time.Second, wire.TypeResponse)
		ctx := <-kept
		if err := ctx.Err(); err != context.DeadlineExceeded {
			t.Errorf("ctx.Err() after the handler returned = %v, want the DeadlineExceeded the handler saw", err)
		}
		<-ctx.Done()
		if err := ctx.Err(); err != context.DeadlineExceeded {
			t.Errorf("ctx.Err() after Done = %v, want DeadlineExceeded still", err)
		}
	})

	t.Run("client deadline", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		sent := time.Now()
		p.request(t, 1, 50, "wait", nil)
		<-started
		r := waitReport(t, 2*time.Second)
		if r.err != context.DeadlineExceeded {
			t.Errorf("ctx.Err() = %v, want context.DeadlineExceeded", r.err)
		}
		if !r.hasDeadline {
			t.Errorf("ctx.Deadline() not set for a request with a 50ms timeout")
		} else if d := r.deadline.Sub(sent); d < 40*time.Millisecond || d > 500*time.Millisecond {
			t.Errorf("deadline %v after the request was sent, want ~50ms", d)
		}
		if r.waited < 30*time.Millisecond || r.waited > time.Second {
			t.Errorf("context ended after %v, want ~50ms", r.waited)
		}
		p.expectError(t, time.Second, 1, wire.CodeTimeout)
	})
}

// TestHugeHandlerTimeout guards the deadline arithmetic: a HandlerTimeout
// of the largest duration, a common way to say "no limit", gives handlers
// a far deadline, not one that has passed already.
func TestHugeHandlerTimeout(t *testing.T) {
	type seen struct {
		err error
		dl  time.Time
	}
	got := make(chan seen, 1)
	m := echoMux()
	m.HandleFunc("look", func(ctx context.Context, req *server.Request) ([]byte, error) {
		dl, _ := ctx.Deadline()
		got <- seen{ctx.Err(), dl}
		return nil, nil
	})
	cfg := baseConfig()
	cfg.HandlerTimeout = time.Duration(math.MaxInt64)
	ts := startServer(t, cfg, m)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "look", nil)
	p.expect(t, 2*time.Second, wire.TypeResponse)
	s := <-got
	if s.err != nil || time.Until(s.dl) < 100*365*24*time.Hour {
		t.Fatalf("ctx.Err() = %v, deadline %v; want no error and a deadline centuries away", s.err, s.dl)
	}
}

type ctxKey string

// TestConnStateAndContexts guards Config.ConnState (New, Active, Idle,
// Closed, in order, for the connection served; reported outside the
// connection's locks, so that the hook may call Stats) and the contexts a
// handler inherits: BaseContext's values and ConnContext's, derived from
// it with the connection.
func TestConnStateAndContexts(t *testing.T) {
	var (
		mu     sync.Mutex
		states = map[net.Conn][]server.ConnState{}
	)
	stateOf := func() []server.ConnState {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range states {
			return slices.Clone(s)
		}
		return nil
	}
	type seen struct{ base, conn, remote any }
	got := make(chan seen, 1)
	m := echoMux()
	m.HandleFunc("values", func(ctx context.Context, req *server.Request) ([]byte, error) {
		got <- seen{ctx.Value(ctxKey("base")), ctx.Value(ctxKey("conn")), ctx.Value(ctxKey("remote"))}
		return nil, nil
	})
	cfg := baseConfig()
	var ln net.Listener = listenLoopback(t)
	cfg.BaseContext = func(l net.Listener) context.Context {
		if l != ln {
			t.Errorf("BaseContext given listener %v, want the one served", l.Addr())
		}
		return context.WithValue(context.Background(), ctxKey("base"), "from BaseContext")
	}
	cfg.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if ctx.Value(ctxKey("base")) == nil {
			t.Errorf("ConnContext's context does not derive from BaseContext's")
		}
		ctx = context.WithValue(ctx, ctxKey("remote"), c.RemoteAddr().String())
		return context.WithValue(ctx, ctxKey("conn"), "from ConnContext")
	}
	var srv atomic.Pointer[server.Server]
	cfg.ConnState = func(c net.Conn, s server.ConnState) {
		if srv := srv.Load(); srv != nil {
			srv.Stats() // a hook may call the server: no lock of the connection is held
			srv.Conns(0, 10)
		}
		mu.Lock()
		states[c] = append(states[c], s)
		mu.Unlock()
	}
	ts := serveOn(t, cfg, m, ln)
	srv.Store(ts.Server)

	p := dialRaw(t, ts.addr, true)
	waitState := func(want ...server.ConnState) {
		t.Helper()
		if !waitFor(t, 2*time.Second, func() bool { return slices.Equal(stateOf(), want) }) {
			t.Fatalf("states %v, want %v", stateOf(), want)
		}
	}
	waitState(server.StateNew)
	p.request(t, 1, 0, "values", nil)
	p.expect(t, 2*time.Second, wire.TypeResponse)
	waitState(server.StateNew, server.StateActive, server.StateIdle)
	p.Close()
	waitState(server.StateNew, server.StateActive, server.StateIdle, server.StateClosed)

	s := <-got
	if s.base != "from BaseContext" || s.conn != "from ConnContext" || s.remote != p.conn.LocalAddr().String() {
		t.Errorf("handler's context values %+v, want BaseContext's, ConnContext's and the peer's address %v", s, p.conn.LocalAddr())
	}
}

// TestInterceptors guards Config.Interceptors: they run first outermost
// around the handler, one can refuse a request with its own *server.Error
// (the handler never runs, the client sees the code), and one can read the
// request's metadata and set the answer's.
func TestInterceptors(t *testing.T) {
	var (
		mu    sync.Mutex
		trace []string
	)
	log := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	traced := func(name string) server.Interceptor {
		return func(ctx context.Context, req *server.Request, next server.Handler) ([]byte, error) {
			log(name + " in")
			defer log(name + " out")
			return next.ServeTCP(ctx, req)
		}
	}
	const codeDenied = wire.Code(0x100) // an application's own code
	auth := func(ctx context.Context, req *server.Request, next server.Handler) ([]byte, error) {
		tok, _ := req.Metadata.Get("authorization")
		if tok != "secret" {
			req.ResponseMetadata = wire.Metadata{{Key: "www-authenticate", Value: "token"}}
			return nil, &server.Error{Code: codeDenied, Message: "denied"}
		}
		req.ResponseMetadata = wire.Metadata{{Key: "user", Value: "alice"}}
		return next.ServeTCP(ctx, req)
	}
	m := server.NewMux()
	m.HandleFunc("echo", func(_ context.Context, req *server.Request) ([]byte, error) {
		log("handler")
		return req.Body, nil
	})
	cfg := baseConfig()
	cfg.Interceptors = []server.Interceptor{traced("a"), traced("b"), auth}
	ts := startServer(t, cfg, m)
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})

	var md wire.Metadata
	resp, err := call(t, c, "echo", []byte("hi"),
		client.WithMetadata(wire.Metadata{{Key: "authorization", Value: "secret"}}), client.ResponseMetadata(&md))
	if err != nil || string(resp) != "hi" {
		t.Fatalf("authorised call: %q, %v", resp, err)
	}
	if u, _ := md.Get("user"); u != "alice" {
		t.Errorf("answer metadata %v, want user=alice", md)
	}
	mu.Lock()
	got := slices.Clone(trace)
	trace = nil
	mu.Unlock()
	if want := []string{"a in", "b in", "handler", "b out", "a out"}; !slices.Equal(got, want) {
		t.Errorf("interceptor order %v, want %v", got, want)
	}

	md = nil
	_, err = call(t, c, "echo", []byte("hi"), client.ResponseMetadata(&md))
	var ce *client.CallError
	if !errors.As(err, &ce) || ce.Code != codeDenied || ce.Message != "denied" || session.RetrySafe(err) {
		t.Fatalf("refused call: %v, want a *CallError with code %v \"denied\", not retry safe", err, codeDenied)
	}
	if v, _ := md.Get("www-authenticate"); v != "token" {
		t.Errorf("refusal's metadata %v (CallError's %v), want www-authenticate=token", md, ce.Metadata)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(trace, "handler") {
		t.Errorf("the handler ran for a refused request: %v", trace)
	}
}
