//go:build linux

package evloop

// The idle footprint: N idle server connections with heartbeats, held by a
// helper process (this test binary, re-executed) whose clients answer the
// server's PINGs and send their own, measured on the server side for
// netconn and for evloop in turn: heap and stack bytes, resident memory
// and goroutines per connection, and the CPU the heartbeats cost.
//
//	EVLOOP_FOOTPRINT=9000 go test -run TestIdleFootprint -v ./internal/evloop
//
// EVLOOP_FOOTPRINT_HB sets the heartbeat interval (default 1s; the timeout
// is three intervals) and EVLOOP_FOOTPRINT_WINDOW the CPU window (default
// 10s).

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

const holderEnv = "EVLOOP_HOLDER_ADDR"

// idleSink is a server Sink that costs little: it counts Ready and echoes
// requests.
type idleSink struct {
	conn interface {
		Answer(uint64, wire.Metadata, []byte)
	}
	ready *atomic.Int64
}

func (s *idleSink) Ready(wire.Hello) { s.ready.Add(1) }
func (s *idleSink) Request(in core.Incoming) bool {
	body := append([]byte(nil), in.Body...)
	go s.conn.Answer(in.ID, nil, body)
	return true
}
func (s *idleSink) Cancelled(uint64)                                  {}
func (s *idleSink) CallDone(*core.Call, []byte, wire.Metadata, error) {}
func (s *idleSink) GoAway(uint64, wire.Reason, []byte)                {}
func (s *idleSink) Closed(error)                                      {}
func (s *idleSink) HeartbeatRTT(time.Duration)                        {}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func hbConfig() session.Config {
	hb := envDuration("EVLOOP_FOOTPRINT_HB", time.Second)
	return session.Config{HeartbeatInterval: hb, HeartbeatTimeout: 3 * hb}
}

// footprint is what one measurement found, per connection.
type footprint struct {
	heap, stack, rss float64 // bytes
	goroutines       float64
	cpu              time.Duration // for the whole window
	user             time.Duration // of which in user space
	pings            uint64        // frames received by the server in the window
}

type memSnap struct {
	heap, stack, rss uint64
	goroutines       int
}

func snap() memSnap {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnap{heap: ms.HeapInuse, stack: ms.StackInuse, rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

func vmRSS() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime is the process's user and system CPU time.
func cpuTime() [2]time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return [2]time.Duration{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

func TestIdleFootprint(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EVLOOP_FOOTPRINT"))
	if n <= 0 {
		t.Skip("set EVLOOP_FOOTPRINT to the number of idle connections to measure")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory makes the numbers meaningless")
	}
	window := envDuration("EVLOOP_FOOTPRINT_WINDOW", 10*time.Second)
	cfg := hbConfig()
	kinds := []string{"evloop", "netconn"} // evloop first: netconn's memory, once freed, would lower the RSS evloop adds
	if k := os.Getenv("EVLOOP_FOOTPRINT_KIND"); k != "" {
		kinds = []string{k}
	}
	res := map[string]footprint{}
	for _, kind := range kinds {
		res[kind] = measureIdle(t, kind, n, cfg, window)
	}
	for _, kind := range kinds {
		f := res[kind]
		t.Logf("RESULT %-7s %d idle conns, heartbeat %v: heap %.0f B/conn, stack %.0f B/conn, heap+stack %.0f B/conn, RSS %.0f B/conn, %.3f goroutines/conn; CPU %v (user %v) over %v (%.2f µs per frame received, %d frames)",
			kind, n, cfg.HeartbeatInterval, f.heap, f.stack, f.heap+f.stack, f.rss, f.goroutines, f.cpu.Round(time.Millisecond), f.user.Round(time.Millisecond), window,
			float64(f.cpu.Microseconds())/float64(max(f.pings, 1)), f.pings)
	}
	nc, ev := res["netconn"], res["evloop"]
	if len(kinds) < 2 {
		return
	}
	t.Logf("RESULT evloop/netconn: heap+stack %.2f×, RSS %.2f×, heartbeat CPU %.2f× (user %.2f×)",
		(ev.heap+ev.stack)/(nc.heap+nc.stack), ev.rss/nc.rss, float64(ev.cpu)/float64(nc.cpu), float64(ev.user)/float64(nc.user))
}

// measureIdle holds n idle connections served by kind and measures them.
func measureIdle(t *testing.T, kind string, n int, cfg session.Config, window time.Duration) footprint {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var loops *Loops
	if kind == "evloop" {
		if loops, err = NewLoops(0); err != nil {
			t.Fatal(err)
		}
		defer loops.Close()
	}
	before := snap()

	var ready atomic.Int64
	var mu sync.Mutex
	// The server's table of connections: 16 bytes each.
	var conns []interface {
		Close(error)
		Stats() core.Stats
		Done() <-chan struct{}
	}
	accepted := make(chan error, 1)
	params := core.NewParams(core.Server, cfg, core.Options{}) // shared, as a server shares them
	go func() {
		for range n {
			nc, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			s := &idleSink{ready: &ready}
			mu.Lock()
			if kind == "evloop" {
				c, err := loops.Adopt(nc, params, s)
				if err != nil {
					mu.Unlock()
					accepted <- err
					return
				}
				s.conn = c
				c.Start(nil)
				conns = append(conns, c)
			} else {
				c := netconn.New(nc, params, s)
				s.conn = c
				go c.Run()
				conns = append(conns, c)
			}
			mu.Unlock()
		}
		accepted <- nil
	}()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+ln.Addr().String(), "EVLOOP_HOLD_N="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "connected") {
		t.Fatalf("holder: %q, %v", line, err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if !conntest.WaitFor(time.Minute, func() bool { return ready.Load() == int64(n) }) {
		t.Fatalf("%d of %d connections ready", ready.Load(), n)
	}
	time.Sleep(2 * cfg.HeartbeatInterval) // heartbeats under way: their buffers, if any, taken
	after := snap()
	if path := os.Getenv("EVLOOP_FOOTPRINT_HEAPPROF"); path != "" {
		if f, err := os.Create(path + "." + kind); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}

	mu.Lock()
	framesBefore := uint64(0)
	for _, c := range conns {
		framesBefore += c.Stats().FramesIn
	}
	mu.Unlock()
	cpu0 := cpuTime()
	time.Sleep(window)
	cpu1 := cpuTime()
	user, sys := cpu1[0]-cpu0[0], cpu1[1]-cpu0[1]
	mu.Lock()
	framesAfter := uint64(0)
	for _, c := range conns {
		framesAfter += c.Stats().FramesIn
	}
	for _, c := range conns {
		c.Close(nil)
		<-c.Done()
	}
	mu.Unlock()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	return footprint{
		heap:       per(after.heap, before.heap),
		stack:      per(after.stack, before.stack),
		rss:        per(after.rss, before.rss),
		goroutines: float64(after.goroutines-before.goroutines) / float64(n),
		cpu:        user + sys,
		user:       user,
		pings:      framesAfter - framesBefore,
	}
}

// holdMain is the helper process: it opens EVLOOP_HOLD_N connections to
// the address in holderEnv with evloop client cores, prints "connected"
// once all are ready, and holds them (answering PINGs, sending its own)
// until its standard input closes.
func holdMain() int {
	n, _ := strconv.Atoi(os.Getenv("EVLOOP_HOLD_N"))
	addr := os.Getenv(holderEnv)
	loops, err := NewLoops(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer loops.Close()
	var ready atomic.Int64
	params := core.NewParams(core.Client, hbConfig(), core.Options{})
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			return 1
		}
		s := &idleSink{ready: &ready}
		c, err := loops.Adopt(nc, params, s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			return 1
		}
		s.conn = c
		c.Start(nil)
	}
	for ready.Load() < int64(n) {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("connected")
	var b [1]byte
	os.Stdin.Read(b[:])
	return 0
}
