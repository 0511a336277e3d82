package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// ---- tcppro server ----

// startTcpproServer serves ln with a tcppro server at its defaults
// (heartbeats on; every heartbeat interval when set, 5s by default) on the
// given transport (epoll: the event loop; auto, for TLS: a goroutine per
// connection; netconn: a goroutine per connection), over TLS
// when conf is set. MaxConns and Workers are raised to maxConns and
// inFlight where those are higher: the load offers that many connections
// and calls in flight, and a request beyond Workers is refused
// (OVERLOADED) where the other sides have no such bound. Its handler echoes every
// request body; with handler "sleep" it also serves the method "sleep",
// which sleeps for the duration in its body (time.ParseDuration syntax) and
// then echoes it, or returns early with the context's error when the
// request's context ends (cancel, deadline, connection closed).
func startTcpproServer(ln net.Listener, maxConns, inFlight int, handler string, conf *tls.Config, heartbeat time.Duration, transport netx.Transport) (stop func(), err error) {
	cfg := server.DefaultConfig()
	cfg.Transport = transport
	if heartbeat > 0 {
		cfg.Session.HeartbeatInterval = heartbeat
	}
	cfg.Addr = ln.Addr().String()
	cfg.AllowEphemeralPort = true // the harness listens on 127.0.0.1:0
	if cfg.MaxConns < maxConns {
		cfg.MaxConns = maxConns
	}
	if cfg.Workers < inFlight {
		cfg.Workers = inFlight
	}
	cfg.TLS = conf
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		return req.Body, nil
	})
	switch handler {
	case "":
	case "sleep":
		h = sleepHandler
	default:
		return nil, fmt.Errorf("unknown handler %q", handler)
	}
	srv, err := server.New(cfg, h)
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, server.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "tcppro server:", err)
			}
		case <-ctx.Done():
		}
	}, nil
}

func sleepHandler(ctx context.Context, req *server.Request) ([]byte, error) {
	if req.Method != "sleep" {
		return req.Body, nil
	}
	d, err := time.ParseDuration(string(req.Body))
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return req.Body, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ---- call-based load generators (tcppro, grpc) ----

// rpcConn is one connection of a call-based side: a tcppro client.Client
// (one connection) or a grpc.ClientConn (one connection).
type rpcConn interface {
	// call sends payload to the echo method and appends the answer to
	// buf[:0], as client.CallAppend does.
	call(ctx context.Context, payload, buf []byte) ([]byte, error)
	close() error
}

type tcpproConn struct{ cl *client.Client }

func (c tcpproConn) call(ctx context.Context, payload, buf []byte) ([]byte, error) {
	return c.cl.CallAppend(ctx, "echo", payload, buf[:0])
}

func (c tcpproConn) close() error { return c.cl.Close() }

// newRPCConns makes n connections of the given call-based side to addr,
// over TLS with conf if not nil; on error it closes those it made.
func newRPCConns(kind, addr string, n int, conf *tls.Config) ([]rpcConn, error) {
	conns := make([]rpcConn, 0, n)
	for i := range n {
		var c rpcConn
		var err error
		switch kind {
		case kindTcppro, kindTcpproNetConn:
			var cl *client.Client
			ccfg := client.DefaultConfig()
			ccfg.Transport = tcpproTransport(kind, conf != nil)
			ccfg.Addrs = []string{addr}
			ccfg.TLS = conf
			if cl, err = client.New(ccfg); err == nil {
				c = tcpproConn{cl}
			}
		case kindGrpc:
			c, err = newGrpcConn(addr, conf, nil)
		default:
			err = fmt.Errorf("%q is not a call-based side", kind)
		}
		if err != nil {
			closeRPCConns(conns)
			return nil, fmt.Errorf("%s client %d: %w", kind, i, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeRPCConns(conns []rpcConn) {
	for _, c := range conns {
		_ = c.close()
	}
}

// callLoad drives a call-based side: one connection per connection wanted,
// inflight goroutines calling on each.
type callLoad struct {
	conns    []rpcConn
	inflight int
	cancel   context.CancelFunc
	base
	latRecorder // with several in flight: one histogram per connection
}

func newCallLoad(kind, addr string, conns, inflight int, conf *tls.Config) (*callLoad, error) {
	l := &callLoad{inflight: inflight, cancel: func() {}}
	l.init(conns * inflight)
	if inflight > 1 {
		l.initLat(conns)
	}
	var err error
	if l.conns, err = newRPCConns(kind, addr, conns, conf); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *callLoad) start(hardDeadline time.Time, maxPerConn uint64) {
	ctx, cancel := context.WithDeadline(context.Background(), hardDeadline)
	l.cancel = cancel
	perCaller := maxPerConn/uint64(l.inflight) + 1
	for i, cl := range l.conns {
		for j := range l.inflight {
			id := i*l.inflight + j
			ctr := &l.counters[id]
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				var hist *latHist
				if l.hists != nil {
					hist = l.hists[i]
				}
				l.fail(rpcCaller(ctx, cl, id, ctr, perCaller, &l.stopped, l.win, hist))
			}()
		}
	}
}

// rpcCaller calls until max calls or stopped; with hist, it records the
// latency of the calls started in win's window.
func rpcCaller(ctx context.Context, cl rpcConn, id int, ctr *counter, max uint64, stopped *atomic.Bool, win *latWindow, hist *latHist) error {
	var payload [msgSize]byte
	// The answer goes into a buffer reused from call to call, as the raw
	// load generator reads into its own.
	resp := make([]byte, 0, msgSize)
	for seq := uint64(0); seq < max; seq++ {
		if stopped.Load() {
			return nil
		}
		fillMsg(payload[:], id, seq)
		var start int64
		if hist != nil {
			start = win.now()
		}
		var err error
		resp, err = cl.call(ctx, payload[:], resp[:0])
		if err != nil {
			return fmt.Errorf("caller %d seq %d: %w", id, seq, err)
		}
		if !bytes.Equal(resp, payload[:]) {
			return fmt.Errorf("caller %d seq %d: echo mismatch: %q", id, seq, resp)
		}
		if hist != nil && win.in(start) {
			hist.add(win.now() - start)
		}
		ctr.n.Add(1)
	}
	return nil
}

func (l *callLoad) stop() {
	l.stopOnce.Do(func() {
		l.stopped.Store(true)
		close(l.done)
		l.cancel()
	})
	l.wg.Wait()
}

func (l *callLoad) close() { closeRPCConns(l.conns) }

// ---- tcppro holder (memory scenario): a minimal frame-level peer ----

// tcpproHolder holds connections with wire.Framer: one reader goroutine per
// connection that answers the server's PINGs with PONGs (so the server's
// default heartbeats keep the connections alive) and hands RESPONSEs over.
type tcpproHolder struct {
	mu    sync.Mutex
	conns []*heldConn
}

type heldConn struct {
	c      net.Conn
	fr     *wire.Framer
	wmu    sync.Mutex // one writer at a time (PONGs vs the request)
	resp   chan heldResult
	closed atomic.Bool
}

type heldResult struct {
	id   uint64
	body []byte
	err  error
}

func newTcpproHolder() *tcpproHolder { return &tcpproHolder{} }

func (h *tcpproHolder) add(c net.Conn, i int) error {
	hc := &heldConn{c: c, fr: wire.NewFramer(c, c), resp: make(chan heldResult, 1)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := hc.fr.ClientHandshake(wire.Hello{}); err != nil {
		return fmt.Errorf("HELLO exchange: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	h.mu.Lock()
	for len(h.conns) <= i {
		h.conns = append(h.conns, nil)
	}
	h.conns[i] = hc
	h.mu.Unlock()
	go hc.readLoop()
	return nil
}

func (hc *heldConn) readLoop() {
	defer hc.closed.Store(true)
	for {
		f, err := hc.fr.ReadFrame()
		if err != nil {
			hc.deliver(heldResult{err: err})
			return
		}
		switch f.Type {
		case wire.TypePing:
			data, err := wire.ParsePing(f.Payload)
			if err == nil {
				hc.wmu.Lock()
				err = hc.fr.WritePong(data)
				hc.wmu.Unlock()
			}
			if err != nil {
				hc.deliver(heldResult{err: err})
				return
			}
		case wire.TypeResponse:
			hc.deliver(heldResult{id: f.ID, body: bytes.Clone(f.Payload)})
		case wire.TypeError:
			code, _, msg, _ := wire.ParseError(f.ID, f.Flags, f.Payload)
			hc.deliver(heldResult{id: f.ID, err: fmt.Errorf("ERROR frame id=%d %v: %s", f.ID, code, msg)})
		case wire.TypeGoAway:
			hc.deliver(heldResult{err: fmt.Errorf("GOAWAY from server")})
		}
	}
}

func (hc *heldConn) deliver(r heldResult) {
	select {
	case hc.resp <- r:
	default:
	}
}

func (h *tcpproHolder) requestAll() (ok, failed int, first string) {
	var mu sync.Mutex
	forEachLimited(len(h.conns), 128, func(i int) {
		hc := h.conns[i]
		var body [msgSize]byte
		fillMsg(body[:], i, 0)
		const id = 1
		hc.wmu.Lock()
		err := hc.fr.WriteRequest(id, false, 10_000, "echo", nil, body[:])
		hc.wmu.Unlock()
		if err == nil {
			select {
			case r := <-hc.resp:
				switch {
				case r.err != nil:
					err = r.err
				case r.id != id || !bytes.Equal(r.body, body[:]):
					err = fmt.Errorf("bad response id=%d body=%q", r.id, r.body)
				}
			case <-time.After(10 * time.Second):
				err = errors.New("no response within 10s")
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			if first == "" {
				first = fmt.Sprintf("conn %d: %v", i, err)
			}
			return
		}
		ok++
	})
	return ok, failed, first
}

func (h *tcpproHolder) alive() int {
	n := 0
	for _, hc := range h.conns {
		if !hc.closed.Load() {
			n++
		}
	}
	return n
}
