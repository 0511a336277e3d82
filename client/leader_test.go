package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// warmCalls makes n calls one at a time: after the first, each call reads
// the connection itself (the background reader has left), which is the
// path the tests below exercise.
func warmCalls(t *testing.T, c *client.Client, n int) {
	t.Helper()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Call(ctx, "echo", []byte("warm"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadingCallEndsOnTime: a call reading the connection for itself
// still ends at its context's deadline, at its context's cancellation, and
// at CallTimeout, and the connection serves the next call normally.
func TestReadingCallEndsOnTime(t *testing.T) {
	started := make(chan struct{}, 8)
	mux := server.NewMux()
	mux.HandleFunc("echo", echo.ServeTCP)
	mux.HandleFunc("wait", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, addr := startServer(t, "", server.Config{}, mux)
	c := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 150 * time.Millisecond})

	check := func(name string, ctx context.Context, cancel func(), want error) {
		t.Helper()
		warmCalls(t, c, 3)
		if cancel != nil {
			go func() {
				<-started
				cancel()
			}()
		}
		start := time.Now()
		_, err := c.Call(ctx, "wait", nil)
		el := time.Since(start)
		if !errors.Is(err, want) {
			t.Fatalf("%s: err = %v, want %v", name, err, want)
		}
		if el > time.Second {
			t.Fatalf("%s: returned after %v", name, el)
		}
		t.Logf("TIMING %s: returned after %v", name, el)
		if cancel == nil {
			<-started
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	check("context deadline", ctx, nil, client.ErrTimeout)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	check("context cancelled", ctx, cancel, context.Canceled)

	check("CallTimeout", context.Background(), nil, client.ErrTimeout)

	warmCalls(t, c, 3)
}

// TestIdleClientSeesGoAway: a client whose calls read the connection
// themselves leaves nobody reading between calls; when the server goes
// away meanwhile, the client still learns of it within a few monitor ticks
// and leaves no socket in CLOSE_WAIT.
func TestIdleClientSeesGoAway(t *testing.T) {
	srv, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	warmCalls(t, c, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (the client never closed its side)", err)
	}
	waitFor(t, 2*time.Second, func() bool { return c.Stats().GoAways == 1 })
	t.Logf("TIMING idle client closed its side %v after Shutdown began", time.Since(start))
}

// TestReadingCallSeesFrameThatArrivedUnseen: a GOAWAY that reached the
// socket while nobody read it, just before a call began to read the
// connection itself, is read within a couple of monitor ticks (the call
// has read nothing for a tick, so the monitor kicks it), and the call,
// above the GOAWAY's last id, is sent again on a fresh connection. The
// server answers no PING, so without the kick the call would wait until a
// read deadline left by an earlier call, or its own.
func TestReadingCallSeesFrameThatArrivedUnseen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type peer struct {
		fr  *wire.Framer
		wmu sync.Mutex
		ids chan uint64
	}
	peers := make(chan *peer, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range open {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			p := &peer{fr: wire.NewFramer(nc, nc), ids: make(chan uint64, 16)}
			peers <- p
			wg.Go(func() {
				for {
					f, err := p.fr.ReadFrame()
					if err != nil {
						return
					}
					if f.Type != wire.TypeRequest { // PINGs go unanswered
						continue
					}
					p.ids <- f.ID
					if n > 0 || f.ID <= 2 { // the first connection answers ids 1 and 2 only
						p.wmu.Lock()
						p.fr.WriteResponse(f.ID, []byte("ok"))
						p.wmu.Unlock()
					}
				}
			})
		}
	})
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second}
	c := newClient(t, client.Config{Addrs: []string{ln.Addr().String()}, Session: cfg})
	warmCalls(t, c, 2) // the second reads for itself, then leaves the role vacant
	first := <-peers
	// On loopback the frame is in the client's socket when the write returns.
	first.wmu.Lock()
	err = first.fr.WriteGoAway(2, wire.ReasonDrain, "draining")
	first.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// Let the runtime's poller take the readiness edge while nobody reads,
	// as it would in a busy process (it polls at least every 10 ms). This
	// pause synchronises nothing; it is shorter than the tick after which
	// a background reader would take the vacant role.
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	got, err := c.Call(ctx, "echo", []byte("x"))
	if err != nil || string(got) != "ok" {
		t.Fatalf("Call = %q, %v; want ok, sent again after the GOAWAY", got, err)
	}
	took := time.Since(start)
	t.Logf("TIMING call answered %v after it began", took)
	if took > cfg.HeartbeatInterval {
		t.Fatalf("the GOAWAY was read %v after the call began, want within a few ticks (%v)", took, cfg.TickInterval())
	}
	for {
		select {
		case id := <-first.ids:
			if id == 3 {
				return // the call was sent on the first connection, after the GOAWAY
			}
		case <-time.After(time.Second):
			t.Skip("the GOAWAY was read before the call began (a tick started a reader): the race under test did not happen")
		}
	}
}
