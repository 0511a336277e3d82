package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestGoAwayLosesNothing: under concurrent load, one of two servers shuts
// down gracefully; every call succeeds, and every call is processed exactly
// once — those above the GOAWAY's last id are sent again to the other
// server, those below are answered by the one leaving.
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

	for i := 0; a.Stats().Requests == 0; i++ { // A carries load
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
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3000; i++ {
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
	waitFor(t, 10*time.Second, func() bool { return a.Stats().Requests >= 200 })
	// Requests in flight on A when it shuts down must still complete: send
	// slow ones until A holds at least one.
	slowErrs := make(chan error, 16)
	slow := 0
	waitFor(t, 10*time.Second, func() bool {
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

// TestGoAwayRetriesAboveLastID: a server holding two calls sends GOAWAY
// with the first one's id as last id: the first is answered there, the
// second (never processed) is sent to the other server at once; the client
// then closes the drained connection itself.
func TestGoAwayRetriesAboveLastID(t *testing.T) {
	var other atomic.Int64
	_, addrB := startServer(t, "", server.Config{}, counting(&other, echo))
	var conns atomic.Int64
	got := make(chan string, 4) // bodies the raw server read
	closed := make(chan error, 1)
	raw := startRaw(t, func(nc net.Conn) {
		fr := wire.NewFramer(nc, nc)
		if conns.Add(1) > 1 {
			// Later connections: refused, as by a server gone offline.
			if _, err := fr.ReadFrame(); err == nil {
				fr.WriteError(0, wire.CodeShuttingDown, nil, "offline")
			}
			return
		}
		if _, err := fr.ServerHandshake(rawHello); err != nil {
			closed <- err
			return
		}
		var ids []uint64
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				closed <- err
				return
			}
			switch f.Type {
			case wire.TypePing:
				d, _ := wire.ParsePing(f.Payload)
				fr.WritePong(d)
			case wire.TypeRequest:
				_, _, _, body, _ := wire.ParseRequest(f.Flags, f.Payload)
				got <- string(body)
				if ids = append(ids, f.ID); len(ids) == 2 {
					fr.WriteGoAway(ids[0], wire.ReasonDrain, "draining")
					fr.WriteResponse(ids[0], false, nil, []byte("first, from the raw server"))
				}
			}
		}
	})
	gate := make(chan struct{})
	c := newClient(t, client.Config{Addrs: []string{raw.addr, addrB}, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == addrB { // B comes up only once both calls are on the raw server
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return netx.Dialer{}.DialContext(ctx, addr)
	}})
	type result struct {
		resp string
		err  error
	}
	res := make(chan result, 2)
	call := func(body string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.Call(ctx, "echo", []byte(body))
		res <- result{string(r), err}
	}
	go call("one")
	if b := <-got; b != "one" {
		t.Fatalf("the raw server read %q first", b)
	}
	go call("two")
	if b := <-got; b != "two" {
		t.Fatalf("the raw server read %q second", b)
	}
	close(gate)
	answers := map[string]bool{}
	for i := 0; i < 2; i++ {
		r := <-res
		if r.err != nil {
			t.Fatalf("a call failed across GOAWAY: %v", r.err)
		}
		answers[r.resp] = true
	}
	if !answers["first, from the raw server"] || !answers["two"] {
		t.Fatalf("answers %v: want the first from the raw server, the second echoed by the other", answers)
	}
	if n := other.Load(); n != 1 {
		t.Fatalf("the other server handled %d calls, want the one above the last id", n)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the drained connection ended with %v, want the client's FIN", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the client kept a drained connection open after GOAWAY")
	}
	if st := c.Stats(); st.GoAways != 1 || st.Retries != 1 {
		t.Fatalf("stats %+v: want one GOAWAY, one retry", st)
	}
}

// TestMaxConnAgeRotatesWithoutLoss: connections that reach their maximum
// age are replaced under load with no failed call.
func TestMaxConnAgeRotatesWithoutLoss(t *testing.T) {
	srv, addr := startServer(t, "", server.Config{MaxConnAge: 100 * time.Millisecond, MaxConnAgeGrace: time.Second}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	var wg sync.WaitGroup
	var failed atomic.Int64
	deadline := time.Now().Add(10 * time.Second)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for srv.Stats().GoAways < 3 && time.Now().Before(deadline) {
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
	if n := srv.Stats().GoAways; n < 3 {
		t.Fatalf("%d GOAWAYs within 10s of load, want 3", n)
	}
	// The third GOAWAY may still be on its way to the client.
	waitFor(t, 5*time.Second, func() bool { return c.Stats().GoAways >= 3 })
}

// TestGoAwayOnEveryConnectionBacksOff guards the backoff after a GOAWAY
// on a connection that answered nothing: a server that answers every new
// connection with GOAWAY (draining by GOAWAY rather than by refusing
// connections, or a MaxConnAge shorter than a round trip) is not
// redialled in a tight loop (without it: some 1500 connections a second).
func TestGoAwayOnEveryConnectionBacksOff(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	raw := startRaw(t, func(nc net.Conn) {
		conns.Add(1)
		fr := wire.NewFramer(nc, nc)
		if _, err := fr.ServerHandshake(rawHello); err != nil {
			return
		}
		fr.WriteGoAway(0, wire.ReasonDrain, "draining")
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	})
	newClient(t, client.Config{Addrs: []string{raw.addr}})
	// The client works on its own meanwhile: this wait observes it.
	time.Sleep(time.Second)
	if n := conns.Load(); n > 30 {
		t.Fatalf("%d connections in 1 s to a server that sends GOAWAY on each: no backoff", n)
	}
}

// TestDrainingEveryConnectionTypedError: against a server that sends
// GOAWAY and closes on every connection, calls end with a typed error:
// their deadline, the GOAWAY (not processed), or ErrUnavailable naming a
// real error for the endpoint — never an empty one (a graceful end of a
// connection is not an error to report).
func TestDrainingEveryConnectionTypedError(t *testing.T) {
	t.Parallel()
	raw := startRaw(t, func(nc net.Conn) {
		fr := wire.NewFramer(nc, nc)
		if _, err := fr.ServerHandshake(rawHello); err != nil {
			return
		}
		fr.WriteGoAway(0, wire.ReasonShutdown, "going")
		// Then close, gracefully: a close with the client's request
		// unread would reset the connection, and the reset can reach the
		// client before the GOAWAY it follows.
		nc.(*net.TCPConn).CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, nc)
	})
	c := newClient(t, client.Config{Addrs: []string{raw.addr}, Backoff: client.Backoff{Base: 20 * time.Millisecond}})
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := c.Call(ctx, "echo", nil)
		cancel()
		var ue *client.UnavailableError
		switch {
		case errors.As(err, &ue):
			for addr, e := range ue.Errs {
				if e == nil {
					t.Fatalf("call %d: %v: no error recorded for %s", i, err, addr)
				}
			}
		case errors.Is(err, client.ErrTimeout), errors.Is(err, session.ErrGoAway):
		default:
			t.Fatalf("call %d: %v, want ErrTimeout, ErrGoAway or ErrUnavailable", i, err)
		}
	}
}
