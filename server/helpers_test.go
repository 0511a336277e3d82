package server_test

// Shared helpers of the server's end-to-end tests. Every test runs over real
// TCP sockets on 127.0.0.1, against tcppro clients or raw peers (see
// rawpeer_test.go).
//
// Timers are short (see baseSession) so that the package runs in seconds;
// upper bounds on timings carry generous slack because the machines running
// these tests are small and loaded.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
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

// The timers every test server uses unless a test says otherwise: short
// enough for the package to run in seconds, long enough that a loaded
// machine (other packages' tests run alongside) does not trip them. The
// heartbeat timeout is measured from the last bytes received and must
// exceed the interval by a round trip.
const (
	hbInterval       = 200 * time.Millisecond
	hbTimeout        = time.Second
	frameReadTimeout = time.Second
	writeTimeout     = time.Second
	lingerTimeout    = 200 * time.Millisecond
)

// The short timers of the tests that measure them.
const (
	shortInterval  = 100 * time.Millisecond // heartbeat
	shortTimeout   = 300 * time.Millisecond // heartbeat
	shortFrameRead = 250 * time.Millisecond
	shortWrite     = 300 * time.Millisecond
)

var quiet = slog.New(slog.DiscardHandler)

func baseSession() session.Config {
	return session.Config{
		HeartbeatInterval: hbInterval,
		HeartbeatTimeout:  hbTimeout,
		FrameReadTimeout:  frameReadTimeout,
		WriteTimeout:      writeTimeout,
		LingerTimeout:     lingerTimeout,
	}
}

func baseConfig() server.Config {
	return server.Config{
		Session:      baseSession(),
		RejectLinger: 200 * time.Millisecond,
		Logger:       quiet,
	}
}

// waitFor polls cond until it holds or timeout passes, and reports whether
// it held. It is how these tests wait for the server to act.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		pollPause(2 * time.Millisecond)
	}
}

// pollPause is waitFor's poll interval (not synchronisation: every wait is
// a condition checked until a deadline).
func pollPause(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// recorder is a server.Observer that keeps why each connection ended.
type recorder struct {
	mu     sync.Mutex
	closed []error
}

func (r *recorder) ConnOpened(net.Addr) {}
func (r *recorder) ConnClosed(_ net.Addr, err error, _ time.Duration) {
	r.mu.Lock()
	r.closed = append(r.closed, err)
	r.mu.Unlock()
}
func (r *recorder) ConnRejected(string)        {}
func (r *recorder) GoAwaySent(wire.Reason)     {}
func (r *recorder) HeartbeatRTT(time.Duration) {}

func (r *recorder) closeErrs() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.closed...)
}

// testServer is a server serving on a loopback listener.
type testServer struct {
	*server.Server
	addr     string
	port     int
	served   chan struct{} // closed when Serve has returned
	serveErr error
	handlers *atomic.Int64 // handlers running now
}

// ServeErr waits (bounded) for Serve to return and gives its error.
func (ts *testServer) ServeErr(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-ts.served:
		return ts.serveErr
	case <-time.After(timeout):
		t.Fatalf("Serve did not return within %v", timeout)
		return nil
	}
}

// listenLoopback listens on 127.0.0.1 on a port the kernel chooses.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := netx.ListenConfig{}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startServer serves h with cfg on 127.0.0.1:0.
func startServer(t *testing.T, cfg server.Config, h server.Handler) *testServer {
	t.Helper()
	return serveOn(t, cfg, h, listenLoopback(t))
}

// serveOn serves h with cfg on ln, and closes the server in t.Cleanup
// (Close, then wait for Serve to return and for every handler to end).
func serveOn(t *testing.T, cfg server.Config, h server.Handler, ln net.Listener) *testServer {
	t.Helper()
	running := new(atomic.Int64)
	tracked := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		running.Add(1)
		defer running.Add(-1)
		return h.ServeTCP(ctx, req)
	})
	srv, err := server.New(cfg, tracked)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, addr: ln.Addr().String(), port: netx.PortOf(ln.Addr()), served: make(chan struct{}), handlers: running}
	go func() {
		ts.serveErr = srv.Serve(ln)
		close(ts.served)
	}()
	t.Cleanup(func() {
		srv.Close()
		select {
		case <-ts.served:
			if !errors.Is(ts.serveErr, server.ErrServerClosed) {
				t.Errorf("Serve returned %v, want server.ErrServerClosed", ts.serveErr)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of Close")
		}
		if !waitFor(t, 5*time.Second, func() bool { return running.Load() == 0 }) {
			t.Errorf("%d handlers still running after Close", running.Load())
		}
	})
	return ts
}

func echoMux() *server.Mux {
	m := server.NewMux()
	m.HandleFunc("echo", func(_ context.Context, req *server.Request) ([]byte, error) {
		return req.Body, nil
	})
	return m
}

// gate is a handler that ignores its context and blocks until released: it
// reports each request id it starts on Started and returns when Release is
// called.
type gate struct {
	Started chan uint64
	release chan struct{}
	once    sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{Started: make(chan uint64, 256), release: make(chan struct{})}
	t.Cleanup(g.Release) // tests also register it after starting the server, so it runs before the server's cleanup
	return g
}

func (g *gate) Release() { g.once.Do(func() { close(g.release) }) }

func (g *gate) ServeTCP(_ context.Context, req *server.Request) ([]byte, error) {
	g.Started <- req.ID
	<-g.release
	return []byte("released"), nil
}

// waitStarted waits for a gate to report a started request.
func (g *gate) waitStarted(t *testing.T, timeout time.Duration) uint64 {
	t.Helper()
	select {
	case id := <-g.Started:
		return id
	case <-time.After(timeout):
		t.Fatalf("handler did not start within %v", timeout)
		return 0
	}
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func call(t *testing.T, c *client.Client, method string, body []byte, opts ...client.CallOption) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Call(ctx, method, body, opts...)
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln := listenLoopback(t)
	defer ln.Close()
	return netx.PortOf(ln.Addr())
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// liveHeap is the heap a full collection found live: what the process
// really holds, garbage excluded (allocations made after the collection
// are not counted either). The second collection empties the sync.Pools,
// so buffers kept for reuse are not counted as held.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapSampler samples liveHeap every period until stopped, and keeps the
// largest value.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	peak atomic.Uint64
}

func sampleHeap(period time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			if v := liveHeap(); v > h.peak.Load() {
				h.peak.Store(v)
			}
			select {
			case <-h.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return h
}

// Stop stops sampling and returns the peak.
func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	<-h.done
	return h.peak.Load()
}

const mib = 1 << 20

// startChild starts this test binary again as a helper process, with env
// added to its environment (the variable that makes TestMain run the
// helper instead of the tests), its stderr this process's, and returns it
// with its stdin and stdout. The caller ends it (closing stdin) and waits
// for it.
func startChild(t *testing.T, env ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdin, stdout
}
