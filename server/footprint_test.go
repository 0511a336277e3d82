package server_test

// The idle footprint: what a server keeps per idle connection, heartbeats
// on, after one call. The connections are held by a helper process (this
// test binary, re-executed with holderEnv set), so that only the server's
// memory is in this process.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/wire"
)

// holderEnv makes the test binary the helper process of
// TestIdleConnFootprint (see holderChild): the server's address and the
// number of connections.
const holderEnv = "TCPPRO_SERVER_TEST_HOLDER"

// holderChild holds connections to a server: it opens them (a HELLO
// exchange and one echo call on each), prints "called", answers PINGs
// until every connection has answered one, prints "pinged", and holds them
// (still answering PINGs) until its stdin closes.
func holderChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	addr, ns, _ := strings.Cut(os.Getenv(holderEnv), " ")
	n, err := strconv.Atoi(ns)
	if err != nil {
		return fail(err)
	}
	var called, pinged sync.WaitGroup
	called.Add(n)
	pinged.Add(n)
	var conns []net.Conn
	var failed atomic.Value
	sem := make(chan struct{}, 64) // dials and calls in progress
	for i := range n {
		sem <- struct{}{}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, nc)
		go func() {
			fr := wire.NewFramer(nc, nc)
			var w sync.Mutex // the framer's writes: the call's and the PONGs
			err := func() error {
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
					return err
				}
				_ = nc.SetDeadline(time.Time{})
				return fr.WriteRequest(1, false, 0, "echo", nil, []byte(fmt.Sprint("call ", i)))
			}()
			<-sem
			if err != nil {
				failed.Store(err)
				called.Done()
				pinged.Done()
				return
			}
			answered, ponged := false, false
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					if !answered {
						failed.Store(err)
						called.Done()
					}
					if !ponged {
						pinged.Done()
					}
					return
				}
				switch {
				case f.Type == wire.TypeResponse && f.ID == 1 && !answered:
					answered = true
					called.Done()
				case f.Type == wire.TypePing:
					data, _ := wire.ParsePing(f.Payload)
					w.Lock()
					err = fr.WritePong(data)
					w.Unlock()
					if err == nil && answered && !ponged {
						ponged = true
						pinged.Done()
					}
				}
			}
		}()
	}
	called.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return fail(err)
	}
	fmt.Println("called")
	pinged.Wait()
	fmt.Println("pinged")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, nc := range conns {
		nc.Close()
	}
	return 0
}

// liveMemory is the heap in use by live objects and the stacks in use,
// after the garbage collections that free what pools dropped.
func liveMemory() (heap, stack uint64, goroutines int) {
	for range 2 { // the second frees what sync.Pool kept through the first
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()
}

// TestIdleConnFootprint guards what an idle server connection costs,
// heartbeats on, after one call: its heap and stack per connection,
// measured over many connections held by another process. On the event
// loop an idle connection has no goroutine, no buffer and no timer of its
// own: only its protocol state, its transport's and the server's
// bookkeeping. The heap bounds leave room for noise and catch anything
// kept per connection after its first call (a buffer, a table, a copy of
// the configuration); the stack bounds catch a goroutine per connection
// (the handlers' goroutines, ended, leave some stacks behind for reuse:
// not per connection).
func TestIdleConnFootprint(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory makes the numbers meaningless")
	}
	for _, tc := range []struct {
		transport netx.Transport
		conns     int
		maxHeap   float64 // bytes per connection
		maxStack  float64
		goroutine float64 // per connection
	}{
		{netx.TransportEpoll, 2000, 700, 512, 0},
		{netx.TransportNetConn, 1000, 4 << 10, 8 << 10, 1},
	} {
		t.Run(string(tc.transport), func(t *testing.T) {
			if tc.transport == netx.TransportEpoll && runtime.GOOS != "linux" {
				t.Skip("the event loop needs Linux")
			}
			heap, stack, gor := idleFootprint(t, tc.transport, tc.conns)
			t.Logf("%s: %d idle connections after one call: heap %.0f B, stack %.0f B, %.3f goroutines per connection",
				tc.transport, tc.conns, heap, stack, gor)
			if heap > tc.maxHeap {
				t.Errorf("%s: heap %.0f B per idle connection, want at most %.0f", tc.transport, heap, tc.maxHeap)
			}
			if stack > tc.maxStack {
				t.Errorf("%s: stack %.0f B per idle connection, want at most %.0f", tc.transport, stack, tc.maxStack)
			}
			if gor > tc.goroutine+0.05 { // some short-lived goroutines (writers, timers) may be running
				t.Errorf("%s: %.3f goroutines per idle connection, want %v", tc.transport, gor, tc.goroutine)
			}
		})
	}
}

// idleFootprint serves n connections held by a helper process over
// transport, each after one call and a heartbeat, and returns the heap,
// the stack and the goroutines per connection.
func idleFootprint(t *testing.T, transport netx.Transport, n int) (heap, stack, goroutines float64) {
	cfg := baseConfig()
	cfg.Transport = transport
	cfg.MaxConns = n + 10
	// Every connection is PINGed once before the measurement; none may
	// die of a loaded machine meanwhile.
	cfg.Session.HeartbeatInterval = 300 * time.Millisecond
	cfg.Session.HeartbeatTimeout = 20 * time.Second
	cfg.Session.WriteTimeout = 20 * time.Second
	ts := startServer(t, cfg, echoMux())

	// One connection and one call first: what is made once (the loops,
	// pools, interned names) is not charged to the connections.
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "echo", []byte("warm-up"))
	if _, ef := p.answer(t, 5*time.Second, 1); ef != nil {
		t.Fatalf("warm-up call: %v", ef)
	}
	p.Close()
	if !waitFor(t, 5*time.Second, func() bool { return ts.Stats().Active == 0 }) {
		t.Fatal("the warm-up connection did not end")
	}
	h0, s0, g0 := liveMemory()

	cmd, stdin, stdout := startChild(t, holderEnv+"="+ts.addr+" "+strconv.Itoa(n))
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
		waitFor(t, 10*time.Second, func() bool { return ts.Stats().Active == 0 })
	}()
	lines := bufio.NewScanner(stdout)
	for _, want := range []string{"called", "pinged"} {
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("holder: %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	if active := ts.Stats().Active; active != int64(n) {
		t.Fatalf("%d connections open, want %d", active, n)
	}
	h1, s1, g1 := liveMemory()
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return per(h0, h1), per(s0, s1), float64(g1-g0) / float64(n)
}
