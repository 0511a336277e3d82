package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

// TestBalancesOverServers: with the round-robin policy, calls are spread
// evenly over every ready server.
func TestBalancesOverServers(t *testing.T) {
	var addrs []string
	var servers []*server.Server
	for i := 0; i < 3; i++ {
		s, a := startServer(t, "", server.Config{}, echo)
		servers = append(servers, s)
		addrs = append(addrs, a)
	}
	c := newClient(t, client.Config{Addrs: addrs, Balancer: balancer.Config{Policy: balancer.RoundRobin}})
	// Wait until every connection is ready: a call to each server.
	waitFor(t, 5*time.Second, func() bool {
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
		for _, s := range servers {
			if s.Stats().Requests == 0 {
				return false
			}
		}
		return true
	})
	before := make([]uint64, len(servers))
	for i, s := range servers {
		before[i] = s.Stats().Requests
	}
	for i := 0; i < 300; i++ {
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range servers {
		if n := s.Stats().Requests - before[i]; n < 80 {
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
	el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
	var de *netx.DialError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &de) || de.Timeout {
		t.Fatalf("err = %v, want ErrUnavailable wrapping a refused DialError", err)
	}
	within(t, "a call with no server listening", el, time.Second)
}

// TestReconnectsAfterRestart: a server that dies and comes back on the
// same port is used again without any action by the caller.
func TestReconnectsAfterRestart(t *testing.T) {
	ln := listenLoopback(t, "")
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
	el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
	cancel()
	if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrConnClosed) {
		t.Fatalf("while down: %v", err)
	}
	within(t, "a call while the server is down", el, time.Second)
	startServer(t, addr, server.Config{}, echo)
	waitFor(t, 5*time.Second, func() bool {
		_, err := c.Call(context.Background(), "echo", nil)
		return err == nil
	})
	if s := c.Stats(); s.Reconnects == 0 {
		t.Fatalf("stats %+v: no reconnect counted", s)
	}
}

// TestBackoffAgainstBusyServer: a server refusing connections with BUSY is
// not hammered: each refusal lengthens the backoff; calls meanwhile fail
// fast with ErrServerBusy.
func TestBackoffAgainstBusyServer(t *testing.T) {
	t.Parallel()
	srv, addr := startServer(t, "", server.Config{MaxConns: 1}, echo)
	hold, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	waitFor(t, 5*time.Second, func() bool { return srv.Stats().Active == 1 })
	c := newClient(t, client.Config{Addrs: []string{addr}, Backoff: client.Backoff{Base: 20 * time.Millisecond, Max: 5 * time.Second}})
	deadline := time.Now().Add(time.Second)
	var last error
	for time.Now().Before(deadline) {
		_, last = c.Call(context.Background(), "echo", nil)
		time.Sleep(10 * time.Millisecond) // a caller retrying, not synchronisation
	}
	if !errors.Is(last, client.ErrServerBusy) || !errors.Is(last, client.ErrUnavailable) {
		t.Fatalf("call against a busy server: %v, want ErrUnavailable matching ErrServerBusy", last)
	}
	if d := c.Stats().Dials; d > 20 {
		t.Fatalf("%d connection attempts in 1 s against a BUSY server: no backoff", d)
	}
	t.Logf("stats after 1 s against a busy server: %+v", c.Stats())
}

// TestLongCallsAtInFlightLimitStayAlive: a client using every in-flight
// slot with calls longer than the heartbeat timeout keeps its connection:
// the server, whatever it holds, keeps reading PINGs and answers them.
func TestLongCallsAtInFlightLimitStayAlive(t *testing.T) {
	t.Parallel()
	cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond, MaxInFlight: 4}
	slow := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		timer := time.NewTimer(600 * time.Millisecond) // twice the heartbeat timeout
		defer timer.Stop()
		select {
		case <-timer.C:
			return req.Body, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	srv, addr := startServer(t, "", server.Config{Session: cfg}, slow)
	c := newClient(t, client.Config{Addrs: []string{addr}, Session: cfg})
	var wg sync.WaitGroup
	for i := 0; i < 2*cfg.MaxInFlight; i++ { // half of them wait for a slot
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(context.Background(), "slow", nil); err != nil {
				t.Errorf("call at the in-flight limit: %v", err)
			}
		}()
	}
	wg.Wait()
	if st, sst := c.Stats(), srv.Stats(); st.DeadPeers != 0 || st.Dials != 1 || sst.DeadPeers != 0 {
		t.Fatalf("client stats %+v, server stats %+v: a connection was taken for dead", st, sst)
	}
}

// TestShutdownDeadlineWithStuckHandler: Shutdown's hard deadline holds
// even when a handler ignores its context; the client's call then fails
// with a connection error instead of hanging.
func TestShutdownDeadlineWithStuckHandler(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	mux := server.NewMux()
	mux.HandleFunc("echo", echo.ServeTCP)
	mux.HandleFunc("stuck", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- struct{}{}
		<-release // ignores ctx
		return nil, nil
	})
	srv, addr := startServer(t, "", server.Config{}, mux)
	defer close(release)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	callDone := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "stuck", nil)
		callDone <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	el, err := timed(func() error { return srv.Shutdown(ctx) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want its context's deadline", err)
	}
	within(t, "Shutdown with a 50 ms deadline and a stuck handler", el, time.Second)
	select {
	case err := <-callDone:
		if !errors.Is(err, client.ErrConnClosed) {
			t.Fatalf("the stuck call: %v, want ErrConnClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call on a connection closed by Shutdown did not return")
	}
}
