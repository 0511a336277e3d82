package server_test

// End-to-end tests of the server's robustness behaviours, over real TCP
// sockets on 127.0.0.1. Raw peers speak the protocol with wire.Framer over a
// plain net.Conn, so they do exactly what a test tells them and nothing
// else: in particular they answer PINGs only when asked to, which is how a
// silent (dead or frozen) peer is built.
//
// Timers are short (see baseConfig) so that the package runs in a few
// seconds; upper bounds on timings carry generous slack because the machines
// running these tests are small and loaded.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/sysinfo"
	"github.com/tcppro/tcppro/wire"
)

// The short timers every test server uses unless a test says otherwise.
const (
	hbInterval       = 100 * time.Millisecond
	hbTimeout        = 100 * time.Millisecond
	frameReadTimeout = 200 * time.Millisecond
	writeTimeout     = 300 * time.Millisecond
	lingerTimeout    = 200 * time.Millisecond
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

// ---------------------------------------------------------------------------
// Helpers

// waitFor polls cond until it holds or timeout passes, and reports whether
// it held. It is the only way these tests wait for the server to act.
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
func (r *recorder) ConnRejected(string)                          {}
func (r *recorder) RequestDone(string, wire.Code, time.Duration) {}
func (r *recorder) GoAwaySent(wire.Reason)                       {}
func (r *recorder) HeartbeatRTT(time.Duration)                   {}

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

// startServer serves h with cfg on 127.0.0.1:0.
func startServer(t *testing.T, cfg server.Config, h server.Handler) *testServer {
	t.Helper()
	ln, err := netx.ListenConfig{}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, cfg, h, ln)
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
	g := &gate{Started: make(chan uint64, 16), release: make(chan struct{})}
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

func call(t *testing.T, c *client.Client, method string, body []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Call(ctx, method, body)
}

// frame is a copy of a received frame (Framer payloads are reused).
type frame struct {
	Type    wire.Type
	ID      uint64
	Payload []byte
}

func (f frame) String() string {
	s := fmt.Sprintf("%v id=%d len=%d", f.Type, f.ID, len(f.Payload))
	switch f.Type {
	case wire.TypeError:
		if code, msg, err := wire.ParseError(f.Payload); err == nil {
			s += fmt.Sprintf(" code=%v msg=%q", code, msg)
		}
	case wire.TypeGoAway:
		if last, reason, _, err := wire.ParseGoAway(f.Payload); err == nil {
			s += fmt.Sprintf(" last=%d reason=%v", last, reason)
		}
	}
	return s
}

var errNoFrame = errors.New("no frame within the timeout")

// rawPeer is a client speaking the protocol by hand. Its reader goroutine
// answers PINGs only if autoPong; every other frame (and, without autoPong,
// every PING too) is handed to the test.
type rawPeer struct {
	conn     *net.TCPConn
	fr       *wire.Framer
	wmu      sync.Mutex
	autoPong bool
	frames   chan frame
	pings    atomic.Int64
	done     chan struct{} // closed when the reader stops
	readErr  error         // valid after done
	stop     chan struct{}
	stopOnce sync.Once
}

func dialRaw(t *testing.T, addr string, autoPong bool) *rawPeer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return startRaw(t, nc.(*net.TCPConn), autoPong)
}

func startRaw(t *testing.T, conn *net.TCPConn, autoPong bool) *rawPeer {
	p := &rawPeer{
		conn:     conn,
		fr:       wire.NewFramer(conn, conn),
		autoPong: autoPong,
		frames:   make(chan frame, 4096),
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
	}
	go p.read()
	t.Cleanup(func() {
		p.Close()
		<-p.done
	})
	return p
}

func (p *rawPeer) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.conn.Close()
}

func (p *rawPeer) read() {
	defer close(p.done)
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.readErr = err
			return
		}
		if f.Type == wire.TypePing {
			p.pings.Add(1)
			if p.autoPong {
				data, _ := wire.ParsePing(f.Payload)
				p.wmu.Lock()
				_ = p.fr.WritePong(data)
				p.wmu.Unlock()
				continue
			}
		}
		c := frame{Type: f.Type, ID: f.ID, Payload: append([]byte(nil), f.Payload...)}
		select {
		case p.frames <- c:
		case <-p.stop:
			p.readErr = net.ErrClosed
			return
		}
	}
}

// next returns the next frame, or the error that ended the stream once
// every frame before it was returned, or errNoFrame after timeout.
func (p *rawPeer) next(timeout time.Duration) (frame, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case f := <-p.frames:
		return f, nil
	case <-p.done:
		select {
		case f := <-p.frames:
			return f, nil
		default:
			return frame{}, p.readErr
		}
	case <-tm.C:
		return frame{}, errNoFrame
	}
}

// expect returns the next frame that is not a PING and fails unless it has
// type want.
func (p *rawPeer) expect(t *testing.T, timeout time.Duration, want wire.Type) frame {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := p.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %v: %v", want, err)
		}
		if f.Type == wire.TypePing && want != wire.TypePing {
			continue
		}
		if f.Type != want {
			t.Fatalf("got frame %v, want %v", f, want)
		}
		return f
	}
}

// expectEOF fails unless the stream ends cleanly (io.EOF) within timeout,
// with no frame other than PINGs before it.
func (p *rawPeer) expectEOF(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.expectEnd(t, timeout, false)
}

// expectClosed is expectEOF that also accepts a reset: a peer that keeps
// sending while the server closes gets a reset for the bytes the server
// never read.
func (p *rawPeer) expectClosed(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.expectEnd(t, timeout, true)
}

func (p *rawPeer) expectEnd(t *testing.T, timeout time.Duration, resetOK bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := p.next(time.Until(deadline))
		if err == nil {
			if f.Type == wire.TypePing {
				continue
			}
			t.Fatalf("got frame %v, want the end of the stream", f)
		}
		switch {
		case errors.Is(err, io.EOF):
		case resetOK && errors.Is(err, syscall.ECONNRESET):
		case resetOK:
			t.Fatalf("want the connection closed (EOF or reset), got %v", err)
		default:
			t.Fatalf("want end of stream (EOF), got %v", err)
		}
		return
	}
}

func (p *rawPeer) request(t *testing.T, id uint64, timeoutMillis uint32, method string, body []byte) {
	t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.fr.WriteRequest(id, timeoutMillis, method, body); err != nil {
		t.Fatalf("write REQUEST %d: %v", id, err)
	}
}

func (p *rawPeer) ping(t *testing.T, data uint64) {
	t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.fr.WritePing(data); err != nil {
		t.Fatalf("write PING: %v", err)
	}
}

func (p *rawPeer) writeRaw(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// echo sends an echo request and checks its answer.
func (p *rawPeer) echo(t *testing.T, id uint64, body string) {
	t.Helper()
	p.request(t, id, 0, "echo", []byte(body))
	f := p.expect(t, 2*time.Second, wire.TypeResponse)
	if f.ID != id || string(f.Payload) != body {
		t.Fatalf("echo %d: got %v %q", id, f, f.Payload)
	}
}

func parseErrorFrame(t *testing.T, f frame) (wire.Code, string) {
	t.Helper()
	code, msg, err := wire.ParseError(f.Payload)
	if err != nil {
		t.Fatalf("ERROR payload: %v", err)
	}
	return code, string(msg)
}

// TCP states as numbered in /proc/net/tcp.
const (
	tcpEstablished = 0x01
	tcpTimeWait    = 0x06
	tcpCloseWait   = 0x08
)

// countSockets counts the sockets in /proc/net/tcp (the IPv4 table: every
// test socket is on 127.0.0.1) with local port lport, remote port rport
// (unless 0) and the given state. Hosts running these tests may hold tens
// of thousands of sockets, so lines are filtered on the port's hex form
// before they are parsed.
func countSockets(t *testing.T, lport, rport, state int) int {
	t.Helper()
	b := readProcTCP(t)
	needle := []byte(fmt.Sprintf(":%04X ", lport))
	port := func(s string) int {
		i := strings.LastIndexByte(s, ':')
		n, err := strconv.ParseUint(s[i+1:], 16, 16)
		if err != nil {
			t.Fatalf("/proc/net/tcp: bad address %q", s)
		}
		return int(n)
	}
	n := 0
	for {
		i := bytes.Index(b, needle)
		if i < 0 {
			break
		}
		start := bytes.LastIndexByte(b[:i], '\n') + 1
		end := bytes.IndexByte(b[i:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += i
		}
		line := b[start:end]
		b = b[end:]
		f := strings.Fields(string(line))
		if len(f) < 4 {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			t.Fatalf("/proc/net/tcp: bad state in %q", line)
		}
		if port(f[1]) == lport && (rport == 0 || port(f[2]) == rport) && int(st) == state {
			n++
		}
	}
	return n
}

// readProcTCP reads /proc/net/tcp in large chunks: the table is generated
// per read call, and small reads (os.ReadFile starts at 512 bytes) are slow
// on a host with tens of thousands of sockets.
func readProcTCP(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 0, 8<<20)
	for {
		if cap(b)-len(b) < 1<<20 {
			b = append(b, make([]byte, 1<<20)...)[:len(b)]
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF || (err == nil && n == 0) {
			return b
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := netx.ListenConfig{}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netx.PortOf(ln.Addr())
}

// ---------------------------------------------------------------------------
// 1. Restart binds at once

func TestRestartBindsAtOnce(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The port came from the kernel's ephemeral range: allow it explicitly.
	lc := netx.ListenConfig{AllowEphemeralPort: true}
	ln1, err := lc.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := netx.ReuseAddr(ln1); err != nil || !ok {
		t.Fatalf("netx.ReuseAddr(first listener) = %v, %v; want true", ok, err)
	}
	ts1 := serveOn(t, baseConfig(), echoMux(), ln1)

	var clients []*client.Client
	for i := range 3 {
		c := newClient(t, client.Config{Addrs: []string{addr}})
		clients = append(clients, c)
		for j := range 2 {
			body := fmt.Sprintf("c%d-%d", i, j)
			if resp, err := call(t, c, "echo", []byte(body)); err != nil || string(resp) != body {
				t.Fatalf("call: %q, %v", resp, err)
			}
		}
	}
	if got := ts1.Stats().Active; got != 3 {
		t.Fatalf("Active = %d, want 3", got)
	}

	// The server closes first, so the TIME_WAIT sockets are on its side, on
	// the service port.
	ts1.Close()
	if err := ts1.ServeErr(t, 5*time.Second); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	for _, c := range clients {
		c.Close()
	}
	if !waitFor(t, 3*time.Second, func() bool { return countSockets(t, port, 0, tcpTimeWait) >= 1 }) {
		t.Fatalf("no TIME_WAIT socket with local port %d after the server closed first", port)
	}

	// Contrast: a socket without SO_REUSEADDR cannot bind the port while
	// TIME_WAIT remains.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	berr := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	unix.Close(fd)
	if !errors.Is(berr, unix.EADDRINUSE) {
		t.Errorf("bind without SO_REUSEADDR while TIME_WAIT remains: %v, want EADDRINUSE", berr)
	}
	tw := countSockets(t, port, 0, tcpTimeWait)
	if tw == 0 {
		t.Fatalf("TIME_WAIT vanished before the restart: the test proves nothing")
	}

	// The restart binds at once.
	ln2, err := lc.Listen(context.Background(), addr)
	if err != nil {
		t.Fatalf("listen again on %s with %d TIME_WAIT sockets: %v", addr, tw, err)
	}
	if ok, err := netx.ReuseAddr(ln2); err != nil || !ok {
		t.Errorf("netx.ReuseAddr(second listener) = %v, %v; want true", ok, err)
	}
	ts2 := serveOn(t, baseConfig(), echoMux(), ln2)
	p := dialRaw(t, ts2.addr, true)
	p.echo(t, 1, "after restart")
}

// ---------------------------------------------------------------------------
// 2. Port policy

// portFixture writes a fixture /proc with the given ephemeral range and
// reserved ports.
func portFixture(t *testing.T, portRange, reserved string) sysinfo.FS {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "proc/sys/net/ipv4")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ip_local_port_range"), []byte(portRange+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ip_local_reserved_ports"), []byte(reserved+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sysinfo.FS{Root: root}
}

// listenAndServeResult runs ListenAndServe and returns its result, or closes the
// server and fails if it is still serving after timeout.
func listenAndServeResult(t *testing.T, srv *server.Server, timeout time.Duration) (returned bool, err error) {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- srv.ListenAndServe() }()
	select {
	case err := <-res:
		return true, err
	case <-time.After(timeout):
		srv.Close()
		<-res
		return false, nil
	}
}

func TestPortPolicy(t *testing.T) {
	t.Run("ephemeral port refused", func(t *testing.T) {
		fs := portFixture(t, "32768\t60999", "")
		cfg := baseConfig()
		cfg.Addr = "127.0.0.1:40000"
		cfg.FS = fs
		srv, err := server.New(cfg, echoMux())
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		returned, err := listenAndServeResult(t, srv, 2*time.Second)
		if !returned {
			t.Fatal("ListenAndServe on an unreserved port inside the ephemeral range is serving; want a port policy error")
		}
		if !errors.Is(err, netx.ErrEphemeralPort) {
			t.Fatalf("ListenAndServe = %v, want errors.Is netx.ErrEphemeralPort", err)
		}
		var pe *netx.PortPolicyError
		if !errors.As(err, &pe) {
			t.Fatalf("ListenAndServe = %T %v, want a *netx.PortPolicyError", err, err)
		}
		if pe.Port != 40000 || pe.Range != (sysinfo.PortRange{Lo: 32768, Hi: 60999}) {
			t.Errorf("PortPolicyError = %+v, want port 40000 range 32768-60999", *pe)
		}
		msg := err.Error()
		for _, want := range []string{"40000", "32768-60999", "ip_local_reserved_ports", "ip_local_reserved_ports=40000", "allow-ephemeral-port"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error message does not mention %q:\n%s", want, msg)
			}
		}
	})

	accepted := func(t *testing.T, reserve, allow bool) {
		port := freePort(t)
		rng := fmt.Sprintf("%d\t%d", port-10, port+10)
		reserved := ""
		if reserve {
			reserved = strconv.Itoa(port)
		}
		fs := portFixture(t, rng, reserved)
		// The fixture's range holds the port: without the reservation or the
		// flag it would be refused.
		if err := netx.CheckPort(portFixture(t, rng, ""), port); !errors.Is(err, netx.ErrEphemeralPort) {
			t.Fatalf("fixture sanity: CheckPort(%d) in range %q = %v, want a policy error", port, rng, err)
		}
		cfg := baseConfig()
		cfg.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		cfg.FS = fs
		cfg.AllowEphemeralPort = allow
		srv, err := server.New(cfg, echoMux())
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 1)
		go func() { res <- srv.ListenAndServe() }()
		defer func() {
			srv.Close()
			select {
			case err := <-res:
				if !errors.Is(err, server.ErrServerClosed) {
					t.Errorf("ListenAndServe = %v after Close, want ErrServerClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("ListenAndServe did not return after Close")
			}
		}()
		var conn net.Conn
		ok := waitFor(t, 2*time.Second, func() bool {
			select {
			case err := <-res:
				t.Fatalf("ListenAndServe = %v, want it serving", err)
			default:
			}
			c, err := net.DialTimeout("tcp", cfg.Addr, time.Second)
			if err != nil {
				return false
			}
			conn = c
			return true
		})
		if !ok {
			t.Fatalf("server never listened on %s", cfg.Addr)
		}
		p := startRaw(t, conn.(*net.TCPConn), true)
		p.echo(t, 1, "policy ok")
		p.Close()
	}
	t.Run("reserved port accepted", func(t *testing.T) { accepted(t, true, false) })
	t.Run("AllowEphemeralPort accepted", func(t *testing.T) { accepted(t, false, true) })
}

// ---------------------------------------------------------------------------
// 3. Busy rejection

func TestBusyRejection(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConns = 2
	ts := startServer(t, cfg, echoMux())

	// Two connections held open (client library connections answer PINGs).
	var held []*client.Client
	for range 2 {
		c := newClient(t, client.Config{Addrs: []string{ts.addr}})
		if _, err := call(t, c, "echo", []byte("hold")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if !waitFor(t, time.Second, func() bool { return ts.Stats().Active == 2 }) {
		t.Fatalf("Active = %d, want 2", ts.Stats().Active)
	}

	// A raw third connection: ERROR BUSY with id 0, then end of stream.
	p := dialRaw(t, ts.addr, false)
	f := p.expect(t, time.Second, wire.TypeError)
	if code, msg := parseErrorFrame(t, f); code != wire.CodeBusy || f.ID != 0 {
		t.Fatalf("got %v (%q), want ERROR BUSY id 0", f, msg)
	}
	p.expectEOF(t, time.Second)
	p.Close()
	if got := ts.Stats().RejectedBusy; got != 1 {
		t.Errorf("RejectedBusy = %d after one refused connection, want 1", got)
	}

	// With the client library: a typed error, fast.
	c3 := newClient(t, client.Config{Addrs: []string{ts.addr}})
	start := time.Now()
	_, err := call(t, c3, "echo", []byte("third"))
	elapsed := time.Since(start)
	t.Logf("TIMING busy refusal after %v", elapsed)
	if !errors.Is(err, client.ErrServerBusy) {
		t.Errorf("third client's call: %v (%T), want errors.Is client.ErrServerBusy", err, err)
	}
	if elapsed > 100*time.Millisecond {
		t.Errorf("third client's call failed after %v, want within 100ms", elapsed)
	}
	c3.Close()
	if got := ts.Stats().RejectedBusy; got < 2 {
		t.Errorf("RejectedBusy = %d, want >= 2", got)
	}
	if got := ts.Stats().Active; got != 2 {
		t.Errorf("Active = %d while rejecting, want 2", got)
	}

	// One held connection closes: a new one is accepted.
	held[0].Close()
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().Active == 1 }) {
		t.Fatalf("Active = %d after a held client closed, want 1", ts.Stats().Active)
	}
	p2 := dialRaw(t, ts.addr, true)
	p2.echo(t, 1, "accepted again")
	if got := ts.Stats().Active; got != 2 {
		t.Errorf("Active = %d, want 2", got)
	}
}

// TestBusyRejectionAlwaysTyped repeats the client-library half of
// TestBusyRejection many times, from several goroutines: every call refused
// at the connection cap must match client.ErrServerBusy. A call that starts
// just after the BUSY frame closed its connection (before the client takes
// the connection out of service) is retried on the closed connection, and
// the client returns the bare *session.RemoteError, which matches nothing;
// see the report in the test failure.
func TestBusyRejectionAlwaysTyped(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConns = 1
	// The loop below saturates the CPUs: long heartbeats keep the held
	// connection from being declared dead (which would free the slot).
	cfg.Session.HeartbeatInterval = 5 * time.Second
	cfg.Session.HeartbeatTimeout = 5 * time.Second
	ts := startServer(t, cfg, echoMux())
	held := newClient(t, client.Config{Addrs: []string{ts.addr}})
	if _, err := call(t, held, "echo", []byte("hold")); err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 8, 150
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		untyped  int
		firstBad error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				c, err := client.New(client.Config{Addrs: []string{ts.addr}, Logger: quiet})
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err = c.Call(ctx, "echo", []byte("refused"))
				cancel()
				c.Close()
				if err == nil {
					t.Errorf("a call was served over the connection cap (Stats %+v)", ts.Stats())
					return
				}
				if !errors.Is(err, client.ErrServerBusy) {
					mu.Lock()
					untyped++
					if firstBad == nil {
						firstBad = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if untyped > 0 {
		t.Errorf("%d of %d calls refused at the connection cap did not match client.ErrServerBusy; first: %v (%T)\n"+
			"BUG (client): Client.Call retried on a connection already closed by the ERROR BUSY frame; "+
			"clientConn.roundTrip returns SendRequest's error (the raw *session.RemoteError) without connError, "+
			"so errors.Is(err, client.ErrServerBusy) is false",
			untyped, workers*perWorker, firstBad, firstBad)
	}
}

// ---------------------------------------------------------------------------
// 4. Heartbeat: a silent peer is detected by the server

func TestHeartbeatSilentPeerClosed(t *testing.T) {
	ts := startServer(t, baseConfig(), echoMux())
	p := dialRaw(t, ts.addr, false) // reads, never answers PINGs
	start := time.Now()
	p.request(t, 1, 0, "echo", []byte("one"))
	if f := p.expect(t, time.Second, wire.TypeResponse); f.ID != 1 {
		t.Fatalf("got %v", f)
	}
	p.expectEOF(t, 3*time.Second)
	elapsed := time.Since(start)
	bound := hbInterval + hbTimeout
	t.Logf("TIMING silent peer closed after %v (bound %v)", elapsed, bound)
	if elapsed < bound-20*time.Millisecond {
		t.Errorf("closed %v after the last frame, before the heartbeat bound %v", elapsed, bound)
	}
	if elapsed > 3*bound {
		t.Errorf("silent peer closed after %v, want within %v (3×(interval+timeout))", elapsed, 3*bound)
	}
	if p.pings.Load() == 0 {
		t.Errorf("the server sent no PING before declaring the peer dead")
	}
	if !waitFor(t, time.Second, func() bool { return ts.Stats().DeadPeers == 1 }) {
		t.Errorf("DeadPeers = %d, want 1", ts.Stats().DeadPeers)
	}
	if a := ts.Stats().Active; a != 0 {
		t.Errorf("Active = %d, want 0", a)
	}
}

// stayOpen answers PINGs on p for d and fails if the stream ends meanwhile.
// It returns the number of PINGs answered.
func stayOpen(t *testing.T, p *rawPeer, d time.Duration) int64 {
	t.Helper()
	before := p.pings.Load()
	f, err := p.next(d) // only non-PING frames or the end of the stream come out
	if err == nil {
		t.Fatalf("unexpected frame while idle: %v", f)
	}
	if !errors.Is(err, errNoFrame) {
		t.Fatalf("connection ended while idle and answering PINGs: %v", err)
	}
	return p.pings.Load() - before
}

func TestHeartbeatAnsweringPeerStays(t *testing.T) {
	t.Parallel()
	ts := startServer(t, baseConfig(), echoMux())
	p := dialRaw(t, ts.addr, true)
	p.echo(t, 1, "before")
	window := 5 * (hbInterval + hbTimeout)
	pings := stayOpen(t, p, window)
	// PINGs come every interval+tick of silence: several in the window.
	if pings < 3 {
		t.Errorf("only %d PINGs answered in %v: heartbeats are not running", pings, window)
	}
	p.echo(t, 2, "after")
	if d := ts.Stats().DeadPeers; d != 0 {
		t.Errorf("DeadPeers = %d, want 0", d)
	}
}

// ---------------------------------------------------------------------------
// 5. Heartbeat: a silent server is detected by the client

func TestHeartbeatSilentServerDetectedByClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   []net.Conn
		gotByte atomic.Int64
	)
	wg.Add(1)
	go func() { // accepts and reads, never writes
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, _ := io.Copy(io.Discard, c)
				gotByte.Add(n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})

	c := newClient(t, client.Config{
		Addrs:   []string{ln.Addr().String()},
		Session: session.Config{HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Call(ctx, "echo", []byte("anyone?"))
	elapsed := time.Since(start)
	t.Logf("TIMING silent server detected after %v", elapsed)
	if !errors.Is(err, client.ErrPeerDead) {
		t.Errorf("call to a silent server: %v, want errors.Is client.ErrPeerDead", err)
	}
	if elapsed >= time.Second {
		t.Errorf("silent server detected after %v, want < 1s (interval+timeout = %v)", elapsed, hbInterval+hbTimeout)
	}
	if elapsed < hbInterval {
		t.Errorf("call failed after only %v: not the heartbeat", elapsed)
	}
	c.Close()
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n == 0 {
		t.Errorf("the client never connected to the silent server")
	}
}

// ---------------------------------------------------------------------------
// 6. No CLOSE_WAIT

func TestNoCloseWait(t *testing.T) {
	// Heartbeats are long here so that only the reaction to the peer's FIN
	// can close the connection within the test's bounds.
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = 10 * time.Second
	cfg.Session.HeartbeatTimeout = 10 * time.Second
	// WriteTimeout also bounds how long in-flight requests may still finish
	// after the peer's FIN: long, so that a slow socket-table read below
	// cannot run into it.
	cfg.Session.WriteTimeout = 5 * time.Second

	t.Run("client closes", func(t *testing.T) {
		rec := &recorder{}
		cfg := cfg
		cfg.Observer = rec
		ts := startServer(t, cfg, echoMux())
		c := newClient(t, client.Config{Addrs: []string{ts.addr}})
		if _, err := call(t, c, "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		ok := waitFor(t, time.Second, func() bool {
			return ts.Stats().Active == 0 && countSockets(t, ts.port, 0, tcpCloseWait) == 0
		})
		if !ok {
			t.Fatalf("1s after the client closed: Active = %d, %d server sockets in CLOSE_WAIT",
				ts.Stats().Active, countSockets(t, ts.port, 0, tcpCloseWait))
		}
		if errs := rec.closeErrs(); len(errs) != 1 || !errors.Is(errs[0], session.ErrConnClosed) || errors.Is(errs[0], session.ErrPeerDead) {
			t.Errorf("close reasons %v, want one ErrConnClosed (by the peer)", errs)
		}
	})

	t.Run("half-close with a call in flight", func(t *testing.T) {
		g := newGate(t)
		m := echoMux()
		m.Handle("hold", g)
		ts := startServer(t, cfg, m)
		t.Cleanup(g.Release)
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 0, "hold", nil)
		g.waitStarted(t, time.Second)
		if err := p.conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		// The server's kernel has our FIN once its socket has left
		// ESTABLISHED (CLOSE_WAIT, or gone if the server closed at once).
		rport := netx.PortOf(p.conn.LocalAddr())
		if !waitFor(t, time.Second, func() bool { return countSockets(t, ts.port, rport, tcpEstablished) == 0 }) {
			t.Fatalf("the server never received the FIN")
		}
		g.Release()
		released := time.Now()
		f := p.expect(t, time.Second, wire.TypeResponse)
		if f.ID != 1 || string(f.Payload) != "released" {
			t.Fatalf("got %v %q, want the RESPONSE to request 1", f, f.Payload)
		}
		// Closed at once after answering: well within a second, while the
		// in-flight-after-FIN bound (WriteTimeout) is 5s.
		p.expectEOF(t, time.Second)
		if d := time.Since(released); d >= cfg.Session.WriteTimeout {
			t.Errorf("the server closed %v after answering, want at once", d)
		}
		if !waitFor(t, time.Second, func() bool {
			return ts.Stats().Active == 0 && countSockets(t, ts.port, 0, tcpCloseWait) == 0
		}) {
			t.Errorf("Active = %d, %d sockets in CLOSE_WAIT", ts.Stats().Active, countSockets(t, ts.port, 0, tcpCloseWait))
		}
	})
}

// ---------------------------------------------------------------------------
// 7. Slow-loris

func TestSlowLoris(t *testing.T) {
	// Heartbeats are long here so that only the frame read timeout can close
	// a connection within the test's bounds.
	slowCfg := func(rec *recorder) server.Config {
		cfg := baseConfig()
		cfg.Session.HeartbeatInterval = 5 * time.Second
		cfg.Session.HeartbeatTimeout = 5 * time.Second
		cfg.Observer = rec
		return cfg
	}
	checkFrameTimeout := func(t *testing.T, ts *testServer, rec *recorder, p *rawPeer, start time.Time) {
		t.Helper()
		p.expectClosed(t, 3*time.Second)
		elapsed := time.Since(start)
		t.Logf("TIMING slow-loris closed after %v", elapsed)
		if elapsed < frameReadTimeout-20*time.Millisecond {
			t.Errorf("closed after %v, before FrameReadTimeout %v", elapsed, frameReadTimeout)
		}
		if elapsed > frameReadTimeout+800*time.Millisecond {
			t.Errorf("closed after %v, want within FrameReadTimeout %v (+slack)", elapsed, frameReadTimeout)
		}
		if !waitFor(t, time.Second, func() bool { return len(rec.closeErrs()) == 1 }) {
			t.Fatalf("connection not reported closed")
		}
		if err := rec.closeErrs()[0]; !errors.Is(err, session.ErrFrameTimeout) {
			t.Errorf("closed with %v, want session.ErrFrameTimeout", err)
		}
	}

	t.Run("partial header", func(t *testing.T) {
		rec := &recorder{}
		ts := startServer(t, slowCfg(rec), echoMux())
		p := dialRaw(t, ts.addr, false)
		hdr := wire.AppendRequest(nil, 1, 0, "echo", []byte("body"))
		start := time.Now()
		if err := p.writeRaw(hdr[:10]); err != nil {
			t.Fatal(err)
		}
		checkFrameTimeout(t, ts, rec, p, start)
	})

	t.Run("trickle", func(t *testing.T) {
		// One byte every 30ms: the frame makes progress but never
		// completes within FrameReadTimeout.
		rec := &recorder{}
		ts := startServer(t, slowCfg(rec), echoMux())
		p := dialRaw(t, ts.addr, false)
		frame := wire.AppendRequest(nil, 1, 0, "echo", []byte("body"))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(30 * time.Millisecond)
			defer tk.Stop()
			for i := range frame {
				if p.writeRaw(frame[i:i+1]) != nil {
					return
				}
				select {
				case <-tk.C:
				case <-stop:
					return
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		checkFrameTimeout(t, ts, rec, p, time.Now())
	})

	t.Run("idle connection not cut", func(t *testing.T) {
		t.Parallel()
		// PINGs flow and are answered, but the silences between them are
		// longer than FrameReadTimeout: a timeout that also ran between
		// frames would cut the connection. No frame is ever partial, so
		// FrameReadTimeout must never apply.
		cfg := baseConfig()
		cfg.Session.FrameReadTimeout = 100 * time.Millisecond
		cfg.Session.HeartbeatInterval = 250 * time.Millisecond
		cfg.Session.HeartbeatTimeout = 250 * time.Millisecond
		ts := startServer(t, cfg, echoMux())
		p := dialRaw(t, ts.addr, true)
		p.echo(t, 1, "before")
		pings := stayOpen(t, p, 10*cfg.Session.FrameReadTimeout)
		if pings < 2 {
			t.Errorf("%d PINGs answered while idle, want >= 2", pings)
		}
		p.echo(t, 2, "after")
	})
}

// ---------------------------------------------------------------------------
// 8. Oversized frame

func TestOversizedFrame(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.MaxFrameSize = 1024
	ts := startServer(t, cfg, echoMux())

	// Another client keeps calling throughout.
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})
	if _, err := call(t, c, "echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	var (
		ok, failed atomic.Int64
		errMu      sync.Mutex
		firstErr   error
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := c.Call(ctx, "echo", []byte("still here"))
			cancel()
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			} else {
				ok.Add(1)
			}
		}
	}()

	p := dialRaw(t, ts.addr, true)
	hdr := wire.AppendHeader(nil, wire.Header{Length: 1 << 30, Type: wire.TypeRequest, ID: 1})
	if err := p.writeRaw(hdr); err != nil {
		t.Fatal(err)
	}
	f := p.expect(t, time.Second, wire.TypeError)
	if code, msg := parseErrorFrame(t, f); code != wire.CodeFrameTooLarge || f.ID != 0 {
		t.Fatalf("got %v (%q), want ERROR FRAME_TOO_LARGE id 0", f, msg)
	}
	p.expectEOF(t, time.Second)
	p.Close()

	before := ok.Load()
	if !waitFor(t, 2*time.Second, func() bool { return ok.Load() >= before+5 }) {
		t.Errorf("the other client's calls stopped succeeding")
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of the other client's calls failed, first: %v", n, firstErr)
	}
	if n := ok.Load(); n == 0 {
		t.Errorf("the other client made no call")
	}
}

// ---------------------------------------------------------------------------
// 9. Write timeout

func TestWriteTimeout(t *testing.T) {
	rec := &recorder{}
	cfg := baseConfig()
	cfg.Observer = rec
	// Small buffers so that a few hundred KiB fill them; the write queue
	// (1 MiB by default) fills behind them.
	cfg.Socket.SendBuffer = 64 << 10
	// Only the write timeout is under test: the other timers are long
	// enough that a loaded machine (64 KiB frames arriving slowly, the
	// writer's PINGs delayed) cannot end the connection first.
	cfg.Session.FrameReadTimeout = 2 * time.Second
	cfg.Session.HeartbeatInterval = time.Second
	cfg.Session.HeartbeatTimeout = time.Second
	ts := startServer(t, cfg, echoMux())

	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10)
		})
		if err == nil {
			err = serr
		}
		return err
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := nc.(*net.TCPConn)
	defer conn.Close()

	// The writer pipelines requests, never reads, and keeps sending PINGs so
	// that the server's heartbeat sees it alive: only the stalled output can
	// end the connection.
	const n, size = 48, 64 << 10 // 3 MiB of responses
	body := make([]byte, size)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(writerDone)
		fr := wire.NewFramer(conn, nil)
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for id := uint64(1); id <= n; id++ {
			if fr.WriteRequest(id, 0, "echo", body) != nil {
				return
			}
		}
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for seq := uint64(1); ; seq++ {
			if fr.WritePing(seq) != nil {
				return
			}
			select {
			case <-tk.C:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); conn.Close(); <-writerDone }()

	if !waitFor(t, writeTimeout+3*time.Second, func() bool { return ts.Stats().WriteTimeouts >= 1 }) {
		t.Fatalf("the server never cut the stalled connection (Stats %+v, close reasons %v)", ts.Stats(), rec.closeErrs())
	}
	elapsed := time.Since(start)
	t.Logf("TIMING write-stalled connection cut %v after the first request", elapsed)
	if elapsed < writeTimeout {
		t.Errorf("cut after %v, before WriteTimeout %v", elapsed, writeTimeout)
	}
	if elapsed > writeTimeout+1500*time.Millisecond {
		t.Errorf("cut after %v, want within WriteTimeout %v (+slack) of the stall", elapsed, writeTimeout)
	}
	if got := ts.Stats().WriteTimeouts; got != 1 {
		t.Errorf("WriteTimeouts = %d, want 1", got)
	}
	if errs := rec.closeErrs(); len(errs) != 1 || !errors.Is(errs[0], session.ErrWriteTimeout) {
		t.Errorf("close reasons %v, want one session.ErrWriteTimeout", errs)
	}
	if d := ts.Stats().DeadPeers; d != 0 {
		t.Errorf("DeadPeers = %d: the heartbeat, not the write timeout, ended it", d)
	}

	// The connection is gone: draining what was delivered ends in EOF or a
	// reset, not in a wait.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("raw connection still open after the cut")
	}
}

// ---------------------------------------------------------------------------
// 10. Shutdown

func TestShutdownGraceful(t *testing.T) {
	g := newGate(t)
	var echoed atomic.Int64
	m := server.NewMux()
	m.Handle("hold", g)
	m.HandleFunc("echo", func(_ context.Context, req *server.Request) ([]byte, error) {
		echoed.Add(1)
		return req.Body, nil
	})
	ts := startServer(t, baseConfig(), m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "hold", nil)
	g.waitStarted(t, time.Second)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()

	f := p.expect(t, time.Second, wire.TypeGoAway)
	last, reason, _, err := wire.ParseGoAway(f.Payload)
	if err != nil || last != 1 || reason != wire.ReasonShutdown {
		t.Fatalf("GOAWAY last=%d reason=%v (%v), want last=1 SHUTDOWN", last, reason, err)
	}
	// A request after the GOAWAY is above its last id: never processed.
	p.request(t, 2, 0, "echo", []byte("too late"))
	// New connections are not accepted any more.
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after Shutdown began")
	}

	g.Release()
	f = p.expect(t, time.Second, wire.TypeResponse)
	if f.ID != 1 || string(f.Payload) != "released" {
		t.Fatalf("got %v %q, want the RESPONSE to request 1", f, f.Payload)
	}
	p.expectEOF(t, time.Second) // nothing for request 2
	p.Close()
	if n := echoed.Load(); n != 0 {
		t.Errorf("request 2, sent after GOAWAY(last=1), was processed")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := ts.ServeErr(t, time.Second); !errors.Is(err, server.ErrServerClosed) {
		t.Errorf("Serve = %v, want server.ErrServerClosed", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	g := newGate(t) // ignores its context
	m := echoMux()
	m.Handle("stuck", g)
	ts := startServer(t, baseConfig(), m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	p.request(t, 1, 0, "stuck", nil)
	g.waitStarted(t, time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- ts.Shutdown(ctx) }()
	var err error
	select {
	case err = <-shut:
	case <-time.After(3 * time.Second):
		g.Release() // let Shutdown return before the test ends
		<-shut
		t.Fatalf("Shutdown with a 100ms deadline did not return within 3s")
	}
	elapsed := time.Since(start)
	t.Logf("TIMING Shutdown(100ms) returned after %v", elapsed)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if elapsed < 90*time.Millisecond || elapsed > 600*time.Millisecond {
		t.Errorf("Shutdown returned after %v, want ~100ms", elapsed)
	}
	p.expect(t, time.Second, wire.TypeGoAway)
	// The deadline closes the connection outright: a PONG of the peer's
	// still in flight then turns the close into a reset.
	p.expectClosed(t, time.Second)
	if a := ts.Stats().Active; a != 0 {
		t.Errorf("Active = %d after the Shutdown deadline, want 0", a)
	}
	if err := ts.ServeErr(t, time.Second); !errors.Is(err, server.ErrServerClosed) {
		t.Errorf("Serve = %v, want server.ErrServerClosed", err)
	}
	g.Release()
	if !waitFor(t, time.Second, func() bool { return ts.handlers.Load() == 0 }) {
		t.Errorf("the stuck handler did not return after release")
	}
}

// ---------------------------------------------------------------------------
// 11. Accept backoff

// failingListener fails its first fails Accepts with EMFILE, then blocks
// until closed. It records when each Accept was called.
type failingListener struct {
	fails  int
	mu     sync.Mutex
	calls  []time.Time
	closed chan struct{}
	once   sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	n := len(l.calls)
	l.mu.Unlock()
	if n <= l.fails {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *failingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *failingListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
}

func (l *failingListener) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.calls...)
}

func TestAcceptBackoff(t *testing.T) {
	ln := &failingListener{fails: 5, closed: make(chan struct{})}
	ts := serveOn(t, baseConfig(), echoMux(), ln)
	if !waitFor(t, 3*time.Second, func() bool { return len(ln.times()) == 6 }) {
		t.Fatalf("Accept called %d times, want 6", len(ln.times()))
	}
	calls := ln.times()
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].Sub(calls[i-1]).Round(100*time.Microsecond))
	}
	t.Logf("TIMING accept gaps %v", gaps)
	want := []time.Duration{5, 10, 20, 40, 80}
	for i, w := range want {
		gap := calls[i+1].Sub(calls[i])
		if gap < w*time.Millisecond {
			t.Errorf("gap after accept error %d = %v, want >= %v", i+1, gap, w*time.Millisecond)
		}
	}
	if got := ts.Stats().AcceptErrors; got != 5 {
		t.Errorf("AcceptErrors = %d, want 5", got)
	}
}

// ---------------------------------------------------------------------------
// 12. Worker pool isolation / overload

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

	// The client library: refused at once, typed, even with time to wait.
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Connect first, so the timing below measures the refusal only.
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().Active == 2 }) {
		t.Fatalf("client did not connect")
	}
	start := time.Now()
	_, err := c.Call(ctx, "echo", []byte("x"))
	elapsed := time.Since(start)
	t.Logf("TIMING overloaded refusal after %v", elapsed)
	if !errors.Is(err, client.ErrOverloaded) {
		t.Errorf("call with every worker busy: %v, want errors.Is client.ErrOverloaded", err)
	}
	if elapsed > 200*time.Millisecond {
		t.Errorf("overloaded call failed after %v, want at once", elapsed)
	}

	// The raw connection that holds the worker: another request is refused
	// with its id; a PING is still answered.
	p.request(t, 2, 0, "echo", []byte("y"))
	f := p.expect(t, time.Second, wire.TypeError)
	if code, msg := parseErrorFrame(t, f); code != wire.CodeOverloaded || f.ID != 2 {
		t.Fatalf("got %v (%q), want ERROR OVERLOADED id 2", f, msg)
	}
	p.ping(t, 0xfeed)
	f = p.expect(t, time.Second, wire.TypePong)
	if data, err := wire.ParsePing(f.Payload); err != nil || data != 0xfeed {
		t.Fatalf("PONG %x (%v), want feed", data, err)
	}
	if ts.Stats().Overloaded < 2 {
		t.Errorf("Overloaded = %d, want >= 2", ts.Stats().Overloaded)
	}

	g.Release()
	if f := p.expect(t, time.Second, wire.TypeResponse); f.ID != 1 {
		t.Fatalf("got %v, want RESPONSE 1", f)
	}
	// The worker is released just after the response is queued.
	if !waitFor(t, time.Second, func() bool { return ts.Stats().WorkersBusy == 0 }) {
		t.Fatalf("WorkersBusy = %d after the handler returned", ts.Stats().WorkersBusy)
	}
	if resp, err := call(t, c, "echo", []byte("free")); err != nil || string(resp) != "free" {
		t.Errorf("call after the worker freed: %q, %v", resp, err)
	}
}

// ---------------------------------------------------------------------------
// 13. Handler context

type ctxReport struct {
	err         error
	deadline    time.Time
	hasDeadline bool
	waited      time.Duration
}

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
			ctx.Done() // arms the context's timer and close hook
		case "expired":
			for ctx.Err() == nil { // polls: Done would arm the context
				time.Sleep(time.Millisecond)
			}
		}
		kept <- ctx
		return nil, nil
	})
	ts := startServer(t, baseConfig(), m)
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

	t.Run("connection dies", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 0, "wait", nil)
		<-started
		p.Close()
		closed := time.Now()
		r := waitReport(t, 2*time.Second)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("ctx.Err() = %v, want context.Canceled", r.err)
		}
		if r.hasDeadline {
			t.Errorf("a request without timeout has a deadline %v", r.deadline)
		}
		if d := time.Since(closed); d > time.Second {
			t.Errorf("context cancelled %v after the client closed", d)
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
		f := p.expect(t, time.Second, wire.TypeError)
		if code, msg := parseErrorFrame(t, f); code != wire.CodeTimeout || f.ID != 1 {
			t.Errorf("got %v (%q), want ERROR TIMEOUT id 1", f, msg)
		}
	})
}

// TestHugeHandlerTimeout: a HandlerTimeout of the largest duration, a
// common way to say "no limit", gives handlers a far deadline, not one
// that has passed already.
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

// ---------------------------------------------------------------------------
// 14. Maximum connection age

func TestMaxConnAge(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConnAge = 200 * time.Millisecond
	cfg.MaxConnAgeJitter = 0.1
	cfg.MaxConnAgeGrace = time.Second
	ts := startServer(t, cfg, echoMux())
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})

	const callers = 4
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		errs       []error
		wg         sync.WaitGroup
	)
	end := time.Now().Add(time.Second)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(fmt.Sprintf("caller %d", i))
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := c.Call(ctx, "echo", body)
				cancel()
				if err == nil && string(resp) != string(body) {
					err = fmt.Errorf("wrong response %q", resp)
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	st := ts.Stats()
	cs := c.Stats()
	t.Logf("calls ok=%d failed=%d; server %+v; client %+v", ok.Load(), failed.Load(), st, cs)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls failed across connection ageing; first errors: %v", n, errs)
	}
	if st.GoAways < 1 {
		t.Errorf("server GoAways = %d, want >= 1", st.GoAways)
	}
	if st.Accepted < 2 || cs.GoAways < 1 {
		t.Errorf("client did not move to a fresh connection: accepted %d, client GoAways %d", st.Accepted, cs.GoAways)
	}
	if ok.Load() == 0 {
		t.Errorf("no call succeeded")
	}
}
