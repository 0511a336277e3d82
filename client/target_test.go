package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/server"
)

// fakeResolver is a discovery.Resolver the test drives: each set it is
// given is passed on to the client.
type fakeResolver struct {
	sets       chan discovery.Set
	resolveNow atomic.Int64
}

func (r *fakeResolver) Run(ctx context.Context, update func(discovery.Set)) {
	for {
		select {
		case s := <-r.sets:
			update(s)
		case <-ctx.Done():
			return
		}
	}
}

func (r *fakeResolver) ResolveNow() { r.resolveNow.Add(1) }

// fakeTargets holds the resolvers of the "fake" scheme, by name.
var fakeTargets = struct {
	sync.Mutex
	m map[string]*fakeResolver
}{m: map[string]*fakeResolver{}}

func init() {
	discovery.Register("fake", func(rest string, _ discovery.Options) (discovery.Resolver, error) {
		fakeTargets.Lock()
		defer fakeTargets.Unlock()
		r := fakeTargets.m[rest]
		if r == nil {
			return nil, fmt.Errorf("%w: no fake resolver %q", discovery.ErrBadTarget, rest)
		}
		return r, nil
	})
}

// newFakeTarget returns a target whose sets the test gives.
func newFakeTarget(t *testing.T) (string, *fakeResolver) {
	r := &fakeResolver{sets: make(chan discovery.Set, 16)}
	fakeTargets.Lock()
	fakeTargets.m[t.Name()] = r
	fakeTargets.Unlock()
	t.Cleanup(func() {
		fakeTargets.Lock()
		delete(fakeTargets.m, t.Name())
		fakeTargets.Unlock()
	})
	return "fake://" + t.Name(), r
}

// namedServer answers "who" with its name; "hold" too, but, on a server
// given a release channel, only once it is closed (telling holding when
// it starts).
func namedServer(t *testing.T, name string, holding chan<- struct{}, release <-chan struct{}, handled *atomic.Int64) (string, *server.Server) {
	m := server.NewMux()
	m.HandleFunc("who", func(context.Context, *server.Request) ([]byte, error) {
		handled.Add(1)
		return []byte(name), nil
	})
	m.HandleFunc("hold", func(ctx context.Context, _ *server.Request) ([]byte, error) {
		if release == nil {
			return []byte(name), nil
		}
		holding <- struct{}{}
		select {
		case <-release:
			return []byte(name), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	srv, addr := startServer(t, "", server.Config{}, m)
	return addr, srv
}

// TestTargetSetChanges guards a client that follows its target: a server
// that joins the set gets calls; a server that leaves is drained — no new
// calls, its call in flight finishes — and its connection is closed.
func TestTargetSetChanges(t *testing.T) {
	holding, release := make(chan struct{}, 1), make(chan struct{})
	var aCalls, bCalls atomic.Int64
	a, _ := namedServer(t, "a", nil, nil, &aCalls)
	b, srvB := namedServer(t, "b", holding, release, &bCalls)
	target, res := newFakeTarget(t)
	c := newClient(t, client.Config{Target: target})
	res.sets <- discovery.Set{Addrs: []string{a}}
	for i := 0; i < 10; i++ {
		if resp, err := c.Call(context.Background(), "who", nil); err != nil || string(resp) != "a" {
			t.Fatalf("call %d: %q, %v", i, resp, err)
		}
	}
	res.sets <- discovery.Set{Addrs: []string{a, b}}
	waitFor(t, 5*time.Second, func() bool {
		_, _ = c.Call(context.Background(), "who", nil)
		return bCalls.Load() > 0
	})

	// b is holding a call when it leaves the set.
	held := make(chan error, 1)
	go func() {
		for {
			resp, err := c.Call(context.Background(), "hold", nil)
			if err != nil || string(resp) == "b" {
				held <- err
				return
			}
		}
	}()
	<-holding
	res.sets <- discovery.Set{Addrs: []string{a}}
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Endpoints == 1 })
	before := bCalls.Load()
	for i := 0; i < 20; i++ {
		if resp, err := c.Call(context.Background(), "who", nil); err != nil || string(resp) != "a" {
			t.Fatalf("call %d after b left: %q, %v", i, resp, err)
		}
	}
	if n := bCalls.Load(); n != before {
		t.Fatalf("b handled %d calls after it left the set", n-before)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("the call held when its server left: %v", err)
	}
	// Drained: the client closes its connection to b once the call ended.
	waitFor(t, 5*time.Second, func() bool { return srvB.Stats().Active == 0 })
}

// TestTargetUnavailable guards the errors of a target that names no
// server: before the first set calls wait; an empty set after a failed
// resolution fails calls at once with ErrUnavailable carrying the
// resolution's error.
func TestTargetUnavailable(t *testing.T) {
	target, res := newFakeTarget(t)
	c := newClient(t, client.Config{Target: target})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := c.Call(ctx, "who", nil)
	cancel()
	if !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("before any set: %v, want the call to wait until its deadline", err)
	}
	dnsErr := errors.New("no such host")
	res.sets <- discovery.Set{Err: dnsErr}
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Resolutions == 1 })
	start := time.Now()
	_, err = c.Call(context.Background(), "who", nil)
	if !errors.Is(err, client.ErrUnavailable) || !errors.Is(err, dnsErr) {
		t.Fatalf("empty set: %v, want ErrUnavailable wrapping the resolution's error", err)
	}
	within(t, "failing on an empty set", time.Since(start), time.Second)
}

// TestTargetResolvesAgainOnFailure guards the hint a client gives its
// resolver when connections to the set fail: the servers may have moved.
func TestTargetResolvesAgainOnFailure(t *testing.T) {
	target, res := newFakeTarget(t)
	ln := listenLoopback(t, "")
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	newClient(t, client.Config{Target: target, Backoff: client.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	res.sets <- discovery.Set{Addrs: []string{dead}}
	waitFor(t, 5*time.Second, func() bool { return res.resolveNow.Load() >= 2 })
}

// TestTargetOrAddrs guards the configuration: exactly one of Addrs and
// Target, and a bad target refused up front.
func TestTargetOrAddrs(t *testing.T) {
	for _, cfg := range []client.Config{
		{},
		{Addrs: []string{"127.0.0.1:7420"}, Target: "dns:///example.test:7420"},
		{Target: "nosuch:///x"},
		{Target: "dns://x:1"},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
