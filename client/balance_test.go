package client_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
)

// sleeping answers after d.
func sleeping(d time.Duration) server.Handler {
	return server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return req.Body, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// load runs calls from callers goroutines until n calls have been made,
// and returns how many failed.
func load(t *testing.T, c *client.Client, callers, n int) int64 {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if _, err := c.Call(ctx, "echo", nil); err != nil {
					failed.Add(1)
					t.Logf("call: %v", err)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}

// TestSlowServerGetsFewCalls: of four servers, one answers 10× slower; the
// client's default balancer gives it under 10% of the calls (round-robin
// would give it 25%).
func TestSlowServerGetsFewCalls(t *testing.T) {
	var counts [4]atomic.Int64
	var addrs []string
	for i := range counts {
		d := 2 * time.Millisecond
		if i == 3 {
			d = 20 * time.Millisecond
		}
		_, a := startServer(t, "", server.Config{}, counting(&counts[i], sleeping(d)))
		addrs = append(addrs, a)
	}
	c := newClient(t, client.Config{Addrs: addrs})
	waitFor(t, 5*time.Second, func() bool { return readyCount(c) == 4 })
	if failed := load(t, c, 8, 2000); failed != 0 {
		t.Fatalf("%d calls failed", failed)
	}
	total := int64(0)
	for i := range counts {
		total += counts[i].Load()
	}
	share := float64(counts[3].Load()) / float64(total)
	t.Logf("calls per server: %d %d %d %d; the slow one's share %.1f%%", counts[0].Load(), counts[1].Load(), counts[2].Load(), counts[3].Load(), 100*share)
	if share >= 0.10 {
		t.Fatalf("the slow server got %.1f%% of the calls, want < 10%%", 100*share)
	}
}

func readyCount(c *client.Client) int {
	n := 0
	for _, e := range c.Endpoints() {
		if e.State == "ready" {
			n++
		}
	}
	return n
}

// TestEjectedServerAvoidedThenBack: a server whose connects fail is
// ejected after ConsecutiveFailures; once it listens again it is not
// called until its ejection ends, and then it is, warmed in.
func TestEjectedServerAvoidedThenBack(t *testing.T) {
	var good, back atomic.Int64
	_, a := startServer(t, "", server.Config{}, counting(&good, echo))
	// b: a port with nothing listening, taken back later.
	ln := listenLoopback(t, "")
	b := ln.Addr().String()
	ln.Close()
	c := newClient(t, client.Config{
		Addrs:   []string{a, b},
		Backoff: client.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond},
		Balancer: balancer.Config{
			WarmUp:   100 * time.Millisecond,
			Ejection: balancer.Ejection{ConsecutiveFailures: 3, BaseTime: time.Second, Interval: time.Hour},
		},
	})
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Ejections == 1 })
	ejectedAt := time.Now()
	// The server at b comes back; its connection is ready, but it stays
	// ejected.
	serveOn(t, listenLoopback(t, b), server.Config{}, counting(&back, echo))
	for time.Since(ejectedAt) < 700*time.Millisecond {
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
		if n := back.Load(); n != 0 {
			eps := c.Endpoints()
			t.Fatalf("an ejected server got %d calls (%+v)", n, eps)
		}
	}
	// Back after the ejection (1s ±10%): it gets calls again.
	waitFor(t, 5*time.Second, func() bool {
		if _, err := c.Call(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
		return back.Load() > 0
	})
	s := c.Stats()
	if s.EjectionReturns != 1 || s.Ejected != 0 {
		t.Fatalf("stats %+v: want one return and none ejected", s)
	}
	if el := time.Since(ejectedAt); el < 900*time.Millisecond {
		t.Fatalf("called again %v after its ejection, before it ended", el)
	}
}

// TestClientSubset: with Subset, the client connects only to its
// deterministic subset of the servers.
func TestClientSubset(t *testing.T) {
	var addrs []string
	for range 6 {
		ln := listenLoopback(t, "")
		addrs = append(addrs, ln.Addr().String())
		serveOn(t, ln, server.Config{}, echo)
	}
	c := newClient(t, client.Config{Addrs: addrs, Balancer: balancer.Config{Subset: 2, SubsetID: 4}})
	waitFor(t, 5*time.Second, func() bool { return len(c.Endpoints()) > 0 })
	want := balancer.Subset(addrs, 2, 3)
	var got []string
	for _, e := range c.Endpoints() {
		got = append(got, e.Addr)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("client 4 connects to %v, want its subset %v", got, want)
	}
	if n := c.Stats().Endpoints; n != 2 {
		t.Fatalf("%d endpoints, want 2", n)
	}
	// Another id, another subset (of the three).
	c2 := newClient(t, client.Config{Addrs: addrs, Balancer: balancer.Config{Subset: 2, SubsetID: 5}})
	waitFor(t, 5*time.Second, func() bool { return len(c2.Endpoints()) > 0 })
	var got2 []string
	for _, e := range c2.Endpoints() {
		got2 = append(got2, e.Addr)
	}
	if slices.Equal(got, got2) {
		t.Fatalf("clients 4 and 5 share the subset %v", got)
	}
}
