package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
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

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fastSession finds a dead peer within a second, and lingers little when
// connections close, so that tests about connection ends run quickly.
var fastSession = session.Config{
	HeartbeatInterval: 200 * time.Millisecond,
	HeartbeatTimeout:  time.Second,
	LingerTimeout:     200 * time.Millisecond,
}

// listenLoopback listens on 127.0.0.1 at a free port.
func listenLoopback(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := netx.ListenConfig{AllowEphemeralPort: true}.Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startServer serves h on 127.0.0.1 at a free port (or addr) and stops it
// at the end of the test.
func startServer(t *testing.T, addr string, cfg server.Config, h server.Handler) (*server.Server, string) {
	t.Helper()
	ln := listenLoopback(t, addr)
	return serveOn(t, ln, cfg, h), ln.Addr().String()
}

// serveOn serves h on ln and stops the server at the end of the test.
func serveOn(t *testing.T, ln net.Listener, cfg server.Config, h server.Handler) *server.Server {
	t.Helper()
	cfg.Logger = quiet
	if cfg.Session == (session.Config{}) {
		cfg.Session = fastSession
	}
	srv, err := server.New(cfg, h)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return srv
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.Logger = quiet
	if cfg.Session == (session.Config{}) {
		cfg.Session = fastSession
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var echo = server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
	return req.Body, nil
})

// counting wraps h and counts the requests it is given.
func counting(n *atomic.Int64, h server.Handler) server.Handler {
	return server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		n.Add(1)
		return h.ServeTCP(ctx, req)
	})
}

// refuseAll answers every request OVERLOADED (not processed).
var refuseAll = server.HandlerFunc(func(context.Context, *server.Request) ([]byte, error) {
	return nil, &server.Error{Code: wire.CodeOverloaded, Message: "refusing everything"}
})

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// within fails the test unless d is at most max.
func within(t *testing.T, what string, d, max time.Duration) {
	t.Helper()
	if d > max {
		t.Fatalf("%s took %v, want at most %v", what, d, max)
	}
}

// rawServer is a hand-written peer on loopback: it accepts connections and
// runs serve on each, on a goroutine of its own. At the end of the test it
// closes the listener and every connection, and waits for the goroutines.
type rawServer struct {
	ln   net.Listener
	addr string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startRaw(t *testing.T, serve func(nc net.Conn)) *rawServer {
	t.Helper()
	return startRawOn(t, listenLoopback(t, ""), serve)
}

func startRawOn(t *testing.T, ln net.Listener, serve func(nc net.Conn)) *rawServer {
	rs := &rawServer{ln: ln, addr: ln.Addr().String(), conns: make(map[net.Conn]struct{})}
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			rs.mu.Lock()
			rs.conns[nc] = struct{}{}
			rs.wg.Add(1)
			rs.mu.Unlock()
			go func() {
				defer rs.wg.Done()
				defer nc.Close()
				serve(nc)
			}()
		}
	}()
	t.Cleanup(rs.close)
	return rs
}

func (rs *rawServer) close() {
	rs.ln.Close()
	rs.mu.Lock()
	for nc := range rs.conns {
		nc.Close()
	}
	rs.mu.Unlock()
	rs.wg.Wait()
}

// rawHello is the HELLO a raw server sends: the defaults, no heartbeats.
var rawHello = wire.Hello{}

// serveFrames runs the server's HELLO exchange, then calls onFrame with
// each frame received, answering PINGs itself, until the connection ends
// or onFrame returns false.
func serveFrames(nc net.Conn, onFrame func(fr *wire.Framer, f wire.Frame) bool) {
	fr := wire.NewFramer(nc, nc)
	if _, err := fr.ServerHandshake(rawHello); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if f.Type == wire.TypePing {
			d, _ := wire.ParsePing(f.Payload)
			if fr.WritePong(d) != nil {
				return
			}
			continue
		}
		if !onFrame(fr, f) {
			return
		}
	}
}

// slowConn is a link of limited bandwidth in the client's sending
// direction: Write hands its bytes to the connection in steps of step
// bytes, paced at rate bytes per second (reads are not limited). The
// pacing is on a schedule: a step that leaves late does not delay the
// next ones, so a Write takes its size over the rate however the
// goroutine is scheduled; only an idle link (no Write) gives no credit.
// The pauses emulate the link; they synchronise nothing. Close ends a
// paused Write at once.
type slowConn struct {
	net.Conn
	rate, step int

	mu     sync.Mutex // one Write at a time
	next   time.Time  // when the next step may leave
	closed chan struct{}
	once   sync.Once
}

func newSlowConn(nc net.Conn, rate, step int) *slowConn {
	return &slowConn{Conn: nc, rate: rate, step: step, closed: make(chan struct{})}
}

func (c *slowConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); c.next.Before(now) {
		c.next = now // idle until now
	}
	n := 0
	for n < len(b) {
		if d := time.Until(c.next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.closed:
				t.Stop()
				return n, net.ErrClosed
			}
		}
		k := min(c.step, len(b)-n)
		m, err := c.Conn.Write(b[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
		c.next = c.next.Add(time.Duration(k) * time.Second / time.Duration(c.rate))
	}
	return n, nil
}

func (c *slowConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// pipeListener is a net.Listener whose connections are in-memory pipes:
// dial gives the client's end and queues the other for Accept.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context, _ string) (net.Conn, error) {
	cli, srv := net.Pipe()
	select {
	case l.conns <- srv:
		return cli, nil
	case <-l.closed:
		cli.Close()
		srv.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		cli.Close()
		srv.Close()
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
