package client_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestLongCallsAtInFlightLimitStayAlive: a client using every in-flight
// slot with calls longer than the heartbeat bound keeps its connection:
// the server, stopped before further requests, still reads PINGs.
func TestLongCallsAtInFlightLimitStayAlive(t *testing.T) {
	cfg := fastSession
	cfg.MaxInFlight = 4
	slow := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		select {
		case <-time.After(time.Second): // > interval + timeout (400 ms)
			return req.Body, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	srv, addr := startServer(t, "", server.Config{Session: cfg}, slow)
	c := newClient(t, client.Config{Addrs: []string{addr}, Session: cfg})
	var wg sync.WaitGroup
	for i := 0; i < cfg.MaxInFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(context.Background(), "slow", nil); err != nil {
				t.Errorf("call at the in-flight limit: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := srv.Stats().DeadPeers; n != 0 {
		t.Fatalf("server declared %d peers dead", n)
	}
}

// TestShutdownDeadlineWithInlineHandler: Shutdown's hard deadline holds
// even when a stuck handler runs on a connection's reader.
func TestShutdownDeadlineWithInlineHandler(t *testing.T) {
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
	c := newClient(t, client.Config{Addrs: []string{addr}})
	for i := 0; i < 20; i++ { // warm: later requests run on the reader
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	callDone := make(chan struct{})
	go func() {
		defer close(callDone)
		c.Call(context.Background(), "stuck", nil)
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	srv.Shutdown(ctx)
	el := time.Since(start)
	close(release)
	<-callDone
	if el > time.Second {
		t.Fatalf("Shutdown with a 50 ms deadline returned after %v", el)
	}
}

// TestBackoffAgainstBusyServer: a server refusing connections with BUSY is
// not hammered: each refusal lengthens the backoff.
func TestBackoffAgainstBusyServer(t *testing.T) {
	_, addr := startServer(t, "", server.Config{MaxConns: 1}, echo)
	hold, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	waitForActive := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr) // the second connection is refused once the first is counted
		if err != nil {
			t.Fatal(err)
		}
		fr := wire.NewFramer(c, c)
		f, err := fr.ReadFrame()
		c.Close()
		if err == nil && f.Type == wire.TypeError {
			break
		}
		if time.Now().After(waitForActive) {
			t.Fatal("the server never reached its cap")
		}
	}
	c := newClient(t, client.Config{Addrs: []string{addr}, Backoff: client.Backoff{Base: 20 * time.Millisecond, Max: 5 * time.Second}})
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		c.Call(context.Background(), "echo", nil)
		time.Sleep(10 * time.Millisecond) // a caller retrying, not synchronisation
	}
	if d := c.Stats().Dials; d > 20 {
		t.Fatalf("%d connection attempts in 1 s against a BUSY server: no backoff", d)
	}
}

// TestClientClosesAfterGoAway: once every call below a GOAWAY's last id is
// answered, the client closes the connection itself (protocol.md §8).
func TestClientClosesAfterGoAway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	eof := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			eof <- err
			return
		}
		defer nc.Close()
		fr := wire.NewFramer(nc, nc)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				eof <- err
				return
			}
			switch f.Type {
			case wire.TypeRequest:
				fr.WriteGoAway(f.ID, wire.ReasonDrain, "draining")
				fr.WriteResponse(f.ID, []byte("ok"))
			case wire.TypePing:
				d, _ := wire.ParsePing(f.Payload)
				fr.WritePong(d)
			}
		}
	}()
	cfg := fastSession
	c := newClient(t, client.Config{Addrs: []string{ln.Addr().String()}, Session: cfg})
	if got, err := c.Call(context.Background(), "echo", nil); err != nil || string(got) != "ok" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	select {
	case <-eof:
	case <-time.After(3 * time.Second):
		t.Fatal("the client kept a drained connection open after GOAWAY")
	}
}
