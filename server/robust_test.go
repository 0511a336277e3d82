package server_test

// Robustness end to end: restarts, the port policy, connection refusals
// (BUSY over the cap, SHUTTING_DOWN while offline) and heartbeats.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// TCP states as numbered in /proc/net/tcp.
const (
	tcpEstablished = 0x01
	tcpTimeWait    = 0x06
	tcpCloseWait   = 0x08
)

// countSockets counts the sockets in /proc/net/tcp (the IPv4 table: every
// test socket is on 127.0.0.1) with local port lport, remote port rport
// (unless 0) and the given state. Lines are filtered on the port's hex form
// before they are parsed, since hosts may hold many sockets.
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
// per read call, and small reads are slow on a host with many sockets.
func readProcTCP(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	b := make([]byte, 0, 1<<20)
	for {
		if cap(b)-len(b) < 256<<10 {
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

// TestRestartBindsAtOnce guards SO_REUSEADDR on the listener: a server
// restarted while its old connections sit in TIME_WAIT binds its port at
// once.
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

// TestPortPolicy guards the port policy of ListenAndServe: a port inside
// the ephemeral range is refused with a *netx.PortPolicyError naming the
// fix, unless reserved or explicitly allowed.
func TestPortPolicy(t *testing.T) {
	t.Run("ephemeral port refused", func(t *testing.T) {
		cfg := baseConfig()
		cfg.Addr = "127.0.0.1:40000"
		cfg.FS = portFixture(t, "32768\t60999", "")
		srv, err := server.New(cfg, echoMux())
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		res := make(chan error, 1)
		go func() { res <- srv.ListenAndServe() }()
		select {
		case err = <-res:
		case <-time.After(2 * time.Second):
			srv.Close()
			<-res
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
		for _, want := range []string{"40000", "32768-60999", "ip_local_reserved_ports=40000", "allow-ephemeral-port"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error message does not mention %q:\n%v", want, err)
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
		if err := netx.CheckPort(portFixture(t, rng, ""), port); !errors.Is(err, netx.ErrEphemeralPort) {
			t.Fatalf("fixture sanity: CheckPort(%d) in range %q = %v, want a policy error", port, rng, err)
		}
		cfg := baseConfig()
		cfg.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		cfg.FS = portFixture(t, rng, reserved)
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
		if !waitFor(t, 2*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", cfg.Addr, time.Second)
			conn = c
			return err == nil
		}) {
			t.Fatalf("server never listened on %s", cfg.Addr)
		}
		p := handshakeRaw(t, conn.(*net.TCPConn), true)
		p.echo(t, 1, "policy ok")
		p.Close()
	}
	t.Run("reserved port accepted", func(t *testing.T) { accepted(t, true, false) })
	t.Run("AllowEphemeralPort accepted", func(t *testing.T) { accepted(t, false, true) })
}

// refusal dials addr, sends HELLO and returns the connection-level ERROR
// the server answered instead of its HELLO; the connection must then end.
func refusal(t *testing.T, addr string) *wire.HandshakeError {
	t.Helper()
	conn := dialTCP(t, addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	fr := wire.NewFramer(conn, conn)
	_, err := fr.ClientHandshake(wire.Hello{})
	var he *wire.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("HELLO exchange: %v, want a connection-level ERROR instead of HELLO", err)
	}
	if _, err := fr.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the refusal: %v, want end of stream", err)
	}
	return he
}

// TestBusyRejection guards the connection cap: over MaxConns a connection
// gets ERROR BUSY (id 0) instead of HELLO at once, the client library sees
// a typed, retry-safe error within a bound, and a freed slot is reused.
func TestBusyRejection(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConns = 2
	ts := startServer(t, cfg, echoMux())

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

	if he := refusal(t, ts.addr); he.Code != wire.CodeBusy {
		t.Fatalf("refused with %v, want BUSY", he)
	}
	if got := ts.Stats().RejectedBusy; got != 1 {
		t.Errorf("RejectedBusy = %d after one refused connection, want 1", got)
	}

	// With the client library: a typed error, fast. Retries are off so that
	// the time measured is the refusal's.
	c3 := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: -1})
	start := time.Now()
	_, err := call(t, c3, "echo", []byte("third"))
	elapsed := time.Since(start)
	t.Logf("TIMING busy refusal after %v", elapsed)
	if !errors.Is(err, client.ErrServerBusy) || !session.RetrySafe(err) {
		t.Errorf("third client's call: %v (%T), want errors.Is client.ErrServerBusy, retry safe", err, err)
	}
	if elapsed > 250*time.Millisecond {
		t.Errorf("third client's call failed after %v, want within 250ms", elapsed)
	}
	c3.Close()
	if got := ts.Stats().Active; got != 2 {
		t.Errorf("Active = %d while rejecting, want 2", got)
	}

	held[0].Close()
	if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().Active == 1 }) {
		t.Fatalf("Active = %d after a held client closed, want 1", ts.Stats().Active)
	}
	p2 := dialRaw(t, ts.addr, true)
	p2.echo(t, 1, "accepted again")
}

// TestBusyRejectionAlwaysTyped repeats the client-library half of
// TestBusyRejection from several goroutines: every call refused at the
// connection cap must match client.ErrServerBusy, however the refusal
// races with the client's connection setup.
func TestBusyRejectionAlwaysTyped(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConns = 1
	// The loop below saturates the CPUs: long heartbeats keep the held
	// connection from being declared dead (which would free the slot).
	cfg.Session.HeartbeatInterval = 5 * time.Second
	cfg.Session.HeartbeatTimeout = 10 * time.Second
	ts := startServer(t, cfg, echoMux())
	held := newClient(t, client.Config{Addrs: []string{ts.addr}})
	if _, err := call(t, held, "echo", []byte("hold")); err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 8, 150
	var (
		wg       sync.WaitGroup
		untyped  atomic.Int64
		mu       sync.Mutex
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
					untyped.Add(1)
					mu.Lock()
					if firstBad == nil {
						firstBad = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if n := untyped.Load(); n > 0 {
		t.Errorf("%d of %d calls refused at the connection cap did not match client.ErrServerBusy; first: %v (%T)",
			n, workers*perWorker, firstBad, firstBad)
	}
}

// TestOfflineRefusal guards SetOffline: an offline server answers a new
// connection with ERROR SHUTTING_DOWN, id 0, instead of HELLO (retry safe
// for the client library), leaves open connections alone, and serves again
// once back online.
func TestOfflineRefusal(t *testing.T) {
	ts := startServer(t, baseConfig(), echoMux())
	open := dialRaw(t, ts.addr, true)
	open.echo(t, 1, "before")
	ts.SetOffline(true)
	if ready, why := ts.Ready(); ready || why != "offline" {
		t.Errorf("Ready() = %v, %q while offline", ready, why)
	}
	if he := refusal(t, ts.addr); he.Code != wire.CodeShuttingDown {
		t.Fatalf("offline refusal %v, want SHUTTING_DOWN", he)
	}
	c := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: -1})
	_, err := call(t, c, "echo", []byte("x"))
	if !errors.Is(err, session.ErrShuttingDown) || !session.RetrySafe(err) {
		t.Errorf("call to an offline server: %v, want errors.Is session.ErrShuttingDown, retry safe", err)
	}
	if got := ts.Stats().RejectedOffline; got < 2 {
		t.Errorf("RejectedOffline = %d, want >= 2", got)
	}
	open.echo(t, 2, "still served")
	ts.SetOffline(false)
	dialRaw(t, ts.addr, true).echo(t, 1, "online again")
}
