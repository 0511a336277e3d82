package admin_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/server"
)

// watchedListener tells a test when it has handed a connection to the
// plane and when the plane has closed it.
type watchedListener struct {
	net.Listener
	accepted  chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func watch(ln net.Listener) *watchedListener {
	return &watchedListener{Listener: ln, accepted: make(chan struct{}, 8), closed: make(chan struct{})}
}

func (l *watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- struct{}{}
	}
	return c, err
}

func (l *watchedListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.closed) })
	return err
}

// wait waits for ch, failing the test after 10 s.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting: %s", what)
	}
}

// dialAccepted opens a connection to a plane serving ln and waits until the
// plane has accepted it. The connection sends nothing.
func dialAccepted(t *testing.T, ln *watchedListener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	wait(t, ln.accepted, "the plane accepting a connection")
	return c
}

// send writes a request on c and reads its answer, which must close the
// connection (Connection: close, then EOF); with askClose the request asks
// for that, otherwise the plane must decide it.
func send(t *testing.T, c net.Conn, method, path string, askClose bool) response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
	if askClose {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s on a connection the plane had accepted: %v, want an answer", method, path, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	if !res.Close {
		t.Errorf("%s %s: the answer keeps the connection open (Connection: %q)", method, path, res.Header.Get("Connection"))
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("%s %s: after the answer read %d bytes, %v; want EOF", method, path, n, err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

// servingServer returns a business server that listens (so it is ready),
// closed when the test ends.
func servingServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.New(server.Config{Logger: quiet}, testHandler())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("business Serve: %v", err)
		}
	})
	<-srv.Listening() // Serve registers its listener on its own goroutine
	return srv
}

// startPlane serves a plane of srv on ln; the returned channel receives
// Serve's result.
func startPlane(t *testing.T, srv *server.Server, ln net.Listener) (*admin.Server, <-chan error) {
	t.Helper()
	a, err := admin.New(admin.Config{Logger: quiet}, srv)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ln) }()
	t.Cleanup(func() { a.Close() })
	return a, done
}

func shutdown(t *testing.T, a *admin.Server, served <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v, want http.ErrServerClosed", err)
	}
}

// TestShutdownAnswersAcceptedConnections: a connection the plane accepted
// before Shutdown has its request answered even when the request arrives
// after Shutdown began. (net/http's Server.Shutdown closes such a
// connection without an answer: the client reads EOF.)
func TestShutdownAnswersAcceptedConnections(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := watch(raw)
	a, served := startPlane(t, servingServer(t), ln)
	c := dialAccepted(t, ln)
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- a.Shutdown(ctx)
	}()
	wait(t, ln.closed, "Shutdown closing the listener") // Shutdown has begun
	if r := send(t, c, "GET", "/healthz", false); r.code != http.StatusOK || r.body != "ok\n" {
		t.Fatalf("GET /healthz during Shutdown: %d %q, want 200 ok", r.code, r.body)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v, want http.ErrServerClosed", err)
	}
}

// TestReplaced plays an upgrade's two processes: two planes share one
// listening socket (a descriptor each). When the old plane is told it has
// been replaced, it stops accepting; connects then wait in the socket's
// queue for the new plane. The connections the old plane had accepted are
// answered: /readyz says ready (the address is served, by the new
// process) although the old server has gone offline, and a mutating
// request is refused with 503 and Retry-After, so that its retry reaches
// the process that serves.
func TestReplaced(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := raw.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	newLn, err := net.FileListener(f) // the new process's descriptor
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	oldLn := watch(raw)
	oldSrv, newSrv := servingServer(t), servingServer(t)
	old, oldServed := startPlane(t, oldSrv, oldLn)

	probe := dialAccepted(t, oldLn)
	mutation := dialAccepted(t, oldLn)
	old.Replaced()
	select {
	case <-oldLn.closed:
	default:
		t.Fatal("Replaced returned with the old plane's listener open")
	}
	oldSrv.SetOffline(true) // as tcppro serve does after Replaced
	queued, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatalf("connect after the old plane stopped accepting: %v, want it queued for the new plane", err)
	}
	defer queued.Close()

	if r := send(t, probe, "GET", "/readyz", false); r.code != http.StatusOK || !strings.HasPrefix(r.body, "ready\n") || !strings.Contains(r.body, "replaced") {
		t.Errorf("GET /readyz answered by the replaced plane: %d %q, want 200 ready, saying it was replaced", r.code, r.body)
	}
	r := send(t, mutation, "POST", "/admin/offline", false)
	if r.code != http.StatusServiceUnavailable || r.hdr.Get("Retry-After") != "0" {
		t.Errorf("POST /admin/offline answered by the replaced plane: %d (Retry-After %q) %q, want 503 with Retry-After: 0", r.code, r.hdr.Get("Retry-After"), r.body)
	}
	shutdown(t, old, oldServed)

	nw, newServed := startPlane(t, newSrv, newLn)
	if r := send(t, queued, "GET", "/readyz", true); r.code != http.StatusOK || r.body != "ready\n" {
		t.Errorf("GET /readyz queued for the new plane: %d %q, want 200 ready", r.code, r.body)
	}
	if ready, reason := newSrv.Ready(); !ready {
		t.Errorf("the new server is not ready (%s): the replaced plane took it offline", reason)
	}
	shutdown(t, nw, newServed)
}
