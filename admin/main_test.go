package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/syncbuf"

	"go.uber.org/goleak"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestMain fails the package if a test leaves a goroutine behind. Run
// with probeEnv set, the test binary is instead the isolation test's
// outside prober (see probeMain).
func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) != "" {
		os.Exit(probeMain())
	}
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.DiscardHandler)

// notifier is an Observer that tells a test when the server has acted, so
// that no test waits by sleeping. The tests install the admin Metrics
// next to it (Metrics.Install), which tells the Metrics first: once the
// notifier has heard of an event, the Metrics have recorded it.
type notifier struct {
	opened chan net.Addr
	closed chan error
	rtt    chan time.Duration
}

func newNotifier() *notifier {
	return &notifier{opened: make(chan net.Addr, 4096), closed: make(chan error, 4096), rtt: make(chan time.Duration, 4096)}
}

func (n *notifier) ConnOpened(a net.Addr) {
	select {
	case n.opened <- a:
	default:
	}
}

func (n *notifier) ConnClosed(a net.Addr, err error, age time.Duration) {
	select {
	case n.closed <- err:
	default:
	}
}

func (n *notifier) ConnRejected(string)    {}
func (n *notifier) GoAwaySent(wire.Reason) {}

func (n *notifier) HeartbeatRTT(d time.Duration) {
	select {
	case n.rtt <- d:
	default:
	}
}

// env is a business server and its admin plane, both on 127.0.0.1.
type env struct {
	t       *testing.T
	srv     *server.Server
	adm     *admin.Server
	m       *admin.Metrics
	obs     *notifier
	svcAddr string
	base    string // http://127.0.0.1:PORT
	hc      *http.Client
	logs    *syncbuf.Buffer
}

type envOpts struct {
	server  func(*server.Config)
	admin   func(*admin.Config)
	handler server.Handler
	noServe bool // do not start the business listener
}

// testHandler answers echo, and block (waits until the request's context
// ends).
func testHandler() server.Handler {
	mux := server.NewMux()
	mux.HandleFunc("echo", func(ctx context.Context, req *server.Request) ([]byte, error) { return req.Body, nil })
	mux.HandleFunc("fail", func(ctx context.Context, req *server.Request) ([]byte, error) {
		return nil, errors.New("failed on purpose")
	})
	return mux
}

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := admin.NewMetrics(nil)
	obs := newNotifier()
	cfg := server.Config{Logger: quiet, Observer: obs, RejectLinger: 50 * time.Millisecond}
	if o.server != nil {
		o.server(&cfg)
	}
	m.Install(&cfg)
	h := o.handler
	if h == nil {
		h = testHandler()
	}
	srv, err := server.New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	acfg := admin.Config{Metrics: m, Logger: log}
	if o.admin != nil {
		o.admin(&acfg)
	}
	adm, err := admin.New(acfg, srv)
	if err != nil {
		t.Fatal(err)
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admDone := make(chan error, 1)
	go func() { admDone <- adm.Serve(aln) }()
	e := &env{t: t, srv: srv, adm: adm, m: m, obs: obs, base: "http://" + aln.Addr().String(), logs: logs,
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
	var svcDone chan error
	if !o.noServe {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.svcAddr = ln.Addr().String()
		svcDone = make(chan error, 1)
		go func() { svcDone <- srv.Serve(ln) }()
		// Serve registers its listener on its own goroutine: readiness
		// depends on it.
		select {
		case <-srv.Listening():
		case err := <-svcDone:
			t.Fatalf("the business server never started serving: %v", err)
		}
	}
	t.Cleanup(func() {
		srv.Close()
		if svcDone != nil {
			if err := <-svcDone; !errors.Is(err, server.ErrServerClosed) {
				t.Errorf("business Serve: %v", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := adm.Shutdown(ctx); err != nil {
			t.Errorf("admin Shutdown: %v", err)
		}
		if err := <-admDone; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("admin Serve: %v", err)
		}
		e.hc.CloseIdleConnections()
	})
	return e
}

// client returns a client of the business server that has made one call,
// so the server is accepting and the connection is open.
func (e *env) client(cfg client.Config) *client.Client {
	e.t.Helper()
	cfg.Addrs = []string{e.svcAddr}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	c, err := client.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "echo", []byte("hello")); err != nil {
		e.t.Fatalf("echo: %v", err)
	}
	e.waitOpened(1) // the client's connection: later waits count only theirs
	return c
}

// rawConns opens n connections to the business server that complete the
// HELLO exchange and then send nothing, and waits until the server has
// taken each.
func (e *env) rawConns(n int) []net.Conn {
	e.t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, _ := e.rawPeer(nil)
		conns = append(conns, c)
	}
	e.waitOpened(n)
	return conns
}

// rawPeer opens a connection to the business server (with dialer, if
// not nil) and runs the client's side of the HELLO exchange; it returns
// the connection and a Framer on it. The connection is closed when the
// test ends.
func (e *env) rawPeer(dialer *net.Dialer) (net.Conn, *wire.Framer) {
	e.t.Helper()
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	c, err := dialer.Dial("tcp", e.svcAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	fr := wire.NewFramer(c, c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
		e.t.Fatalf("HELLO exchange: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, fr
}

// waitOpened waits for n ConnOpened events.
func (e *env) waitOpened(n int) {
	e.t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for range n {
		select {
		case <-e.obs.opened:
		case <-timeout.C:
			e.t.Fatalf("the server did not take %d connections", n)
		}
	}
}

type response struct {
	code int
	hdr  http.Header
	body string
}

func (e *env) do(method, path string, hdr map[string]string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

func (e *env) get(path string) response  { return e.do("GET", path, nil) }
func (e *env) post(path string) response { return e.do("POST", path, nil) }

func (e *env) expect(r response, code int, ctype string) {
	e.t.Helper()
	if r.code != code {
		e.t.Fatalf("status %d, want %d; body: %s", r.code, code, r.body)
	}
	if ct := r.hdr.Get("Content-Type"); ctype != "" && !strings.HasPrefix(ct, ctype) {
		e.t.Fatalf("Content-Type %q, want %q", ct, ctype)
	}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
	return v
}

// readReject opens a connection that the server refuses, and returns the
// code of the connection-level ERROR it sends instead of HELLO.
func readReject(t *testing.T, addr string) wire.Code {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = wire.NewFramer(c, c).ClientHandshake(wire.Hello{})
	var he *wire.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("a refused connection's handshake: %v, want a *wire.HandshakeError", err)
	}
	return he.Code
}
