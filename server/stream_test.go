package server_test

// The byte stream end to end: the peer's FIN, slow and oversized frames,
// and a peer that stops reading.

import (
	"context"
	"errors"
	"io"
	"net"
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
	"github.com/tcppro/tcppro/wire"
)

// TestNoCloseWait guards the answer to the peer's FIN: the server closes
// its side at once (no socket left in CLOSE_WAIT), after answering what
// was in flight when the peer only half-closed.
func TestNoCloseWait(t *testing.T) {
	// Heartbeats are long here so that only the reaction to the peer's FIN
	// can close the connection within the test's bounds.
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = 10 * time.Second
	cfg.Session.HeartbeatTimeout = 20 * time.Second
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
		if !waitFor(t, time.Second, func() bool {
			return ts.Stats().Active == 0 && countSockets(t, ts.port, 0, tcpCloseWait) == 0
		}) {
			t.Fatalf("1s after the client closed: Active = %d, %d server sockets in CLOSE_WAIT",
				ts.Stats().Active, countSockets(t, ts.port, 0, tcpCloseWait))
		}
		if errs := rec.closeErrs(); len(errs) != 1 || errors.Is(errs[0], session.ErrPeerDead) {
			t.Errorf("close reasons %v, want one, not a dead peer", errs)
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
		// ESTABLISHED.
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

// TestRequestAndFINTogether guards the end of stream arriving with the
// last request's bytes: the request is answered, then the server's FIN
// follows promptly. Heartbeats are slow here, so only the reaction to the
// FIN can end these connections in time.
func TestRequestAndFINTogether(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = 5 * time.Second
	cfg.Session.HeartbeatTimeout = 10 * time.Second
	mux := echoMux()
	mux.HandleFunc("nap", func(context.Context, *server.Request) ([]byte, error) {
		time.Sleep(5 * time.Millisecond) // work in progress while the FIN arrives; synchronises nothing
		return []byte("rested"), nil
	})
	ts := startServer(t, cfg, mux)
	var worst time.Duration
	for i := range 10 {
		p := dialRaw(t, ts.addr, false)
		id := uint64(1)
		if i%2 == 1 {
			p.echo(t, 1, "warm")
			id = 2
		}
		p.request(t, id, 10_000, "nap", nil)
		start := time.Now()
		if err := p.conn.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if f := p.expect(t, 2*time.Second, wire.TypeResponse); f.ID != id {
			t.Fatalf("conn %d: response id %d, want %d", i, f.ID, id)
		}
		if _, err := p.next(time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("conn %d: want the server's FIN within 1 s of ours, got %v", i, err)
		}
		worst = max(worst, time.Since(start))
		p.Close()
	}
	t.Logf("TIMING worst FIN-to-FIN %v over 10 connections", worst)
}

// TestSlowLoris guards the frame progress timeout: a frame that stops
// arriving (header or payload) is cut FrameReadTimeout after its last
// byte, while a frame that keeps making progress, however slowly, and an
// idle connection between frames are never cut by it.
func TestSlowLoris(t *testing.T) {
	// Heartbeats are long here so that only the frame read timeout can close
	// a connection within the test's bounds.
	slowCfg := func(rec *recorder) server.Config {
		cfg := baseConfig()
		cfg.Session.HeartbeatInterval = 5 * time.Second
		cfg.Session.HeartbeatTimeout = 10 * time.Second
		cfg.Session.FrameReadTimeout = shortFrameRead
		cfg.Observer = rec
		return cfg
	}
	cut := func(t *testing.T, partial func(frame []byte) []byte) {
		rec := &recorder{}
		ts := startServer(t, slowCfg(rec), echoMux())
		p := dialRaw(t, ts.addr, false)
		f := wire.AppendRequest(nil, 1, false, 0, "echo", nil, []byte("body"))
		if err := p.writeRaw(partial(f)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		p.expectClosed(t, 3*time.Second)
		elapsed := time.Since(start)
		t.Logf("TIMING stalled frame cut after %v", elapsed)
		if elapsed < shortFrameRead-20*time.Millisecond {
			t.Errorf("closed after %v, before FrameReadTimeout %v", elapsed, shortFrameRead)
		}
		if elapsed > shortFrameRead+time.Second {
			t.Errorf("closed after %v, want within FrameReadTimeout %v (+1s)", elapsed, shortFrameRead)
		}
		if !waitFor(t, time.Second, func() bool { return len(rec.closeErrs()) == 1 }) {
			t.Fatalf("connection not reported closed")
		}
		if err := rec.closeErrs()[0]; !errors.Is(err, session.ErrFrameTimeout) {
			t.Errorf("closed with %v, want session.ErrFrameTimeout", err)
		}
	}
	t.Run("partial header", func(t *testing.T) {
		cut(t, func(f []byte) []byte { return f[:10] })
	})
	t.Run("partial payload", func(t *testing.T) {
		cut(t, func(f []byte) []byte { return f[:wire.HeaderLen+3] })
	})

	t.Run("trickle progresses", func(t *testing.T) {
		t.Parallel()
		// One byte every 20ms: the frame takes several FrameReadTimeouts
		// to arrive but never stalls that long; it must be served.
		rec := &recorder{}
		ts := startServer(t, slowCfg(rec), echoMux())
		p := dialRaw(t, ts.addr, false)
		f := wire.AppendRequest(nil, 1, false, 0, "echo", nil, []byte("a slow link, one byte at a time"))
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		start := time.Now()
		for i := range f {
			if err := p.writeRaw(f[i : i+1]); err != nil {
				t.Fatalf("byte %d: %v (close reasons %v)", i, err, rec.closeErrs())
			}
			<-tk.C
		}
		if took := time.Since(start); took < 3*shortFrameRead {
			t.Fatalf("the trickle took only %v: it proves nothing", took)
		}
		if body, ef := p.answer(t, 2*time.Second, 1); ef != nil || string(body) != "a slow link, one byte at a time" {
			t.Fatalf("trickled request answered %q, %v (close reasons %v)", body, ef, rec.closeErrs())
		}
	})

	t.Run("idle connection not cut", func(t *testing.T) {
		t.Parallel()
		// PINGs flow and are answered, but the silences between them are
		// longer than FrameReadTimeout: no frame is ever partial, so
		// FrameReadTimeout must never apply.
		cfg := baseConfig()
		cfg.Session.FrameReadTimeout = 100 * time.Millisecond
		cfg.Session.HeartbeatInterval = 250 * time.Millisecond
		cfg.Session.HeartbeatTimeout = 600 * time.Millisecond
		ts := startServer(t, cfg, echoMux())
		p := dialRaw(t, ts.addr, true)
		p.echo(t, 1, "before")
		if pings := stayOpen(t, p, 10*cfg.Session.FrameReadTimeout); pings < 2 {
			t.Errorf("%d PINGs answered while idle, want >= 2", pings)
		}
		p.echo(t, 2, "after")
	})
}

// TestOversizedFrame guards MAX_FRAME_SIZE: a header declaring a larger
// payload is answered ERROR FRAME_TOO_LARGE and closed before anything is
// read or buffered, while another client's calls go on unharmed.
func TestOversizedFrame(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.MaxFrameSize = wire.MinMaxFrameSize
	ts := startServer(t, cfg, echoMux())

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
		for i := 0; i < 100_000; i++ {
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
	if p.server.MaxFrameSize != wire.MinMaxFrameSize {
		t.Errorf("the server's HELLO announces MAX_FRAME_SIZE %d, want %d", p.server.MaxFrameSize, wire.MinMaxFrameSize)
	}
	hdr := wire.AppendHeader(nil, wire.Header{Length: 1 << 30, Type: wire.TypeRequest, ID: 1})
	if err := p.writeRaw(hdr); err != nil {
		t.Fatal(err)
	}
	p.expectError(t, time.Second, 0, wire.CodeFrameTooLarge)
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
}

// TestWriteTimeout guards the write progress timeout: a peer that keeps
// sending (requests, then PINGs) but never reads its answers is cut with
// ErrWriteTimeout once the server's output has made no progress for
// WriteTimeout, and not by the heartbeat.
func TestWriteTimeout(t *testing.T) {
	rec := &recorder{}
	cfg := baseConfig()
	cfg.Observer = rec
	// Small buffers so that a few hundred KiB fill them; the write queue
	// (1 MiB by default) fills behind them.
	cfg.Socket.SendBuffer = 64 << 10
	cfg.Session.WriteTimeout = shortWrite
	// Only the write timeout is under test: the other timers are long
	// enough that a loaded machine cannot end the connection first.
	cfg.Session.FrameReadTimeout = 2 * time.Second
	cfg.Session.HeartbeatInterval = time.Second
	cfg.Session.HeartbeatTimeout = 2 * time.Second
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
	fr := wire.NewFramer(conn, conn)
	if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
		t.Fatal(err)
	}

	// The writer pipelines requests, never reads, and keeps sending PINGs
	// so that the server's heartbeat sees it alive: only the stalled
	// output can end the connection.
	const n, size = 48, 60 << 10 // about 3 MiB of answers
	body := make([]byte, size)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(writerDone)
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for id := uint64(1); id <= n; id++ {
			if fr.WriteRequest(id, false, 0, "echo", nil, body) != nil {
				return
			}
		}
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for seq := uint64(1); seq < 1000; seq++ {
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

	if !waitFor(t, shortWrite+3*time.Second, func() bool { return ts.Stats().WriteTimeouts >= 1 }) {
		t.Fatalf("the server never cut the stalled connection (Stats %+v, close reasons %v)", ts.Stats(), rec.closeErrs())
	}
	elapsed := time.Since(start)
	t.Logf("TIMING write-stalled connection cut %v after the first request", elapsed)
	if elapsed < shortWrite {
		t.Errorf("cut after %v, before WriteTimeout %v", elapsed, shortWrite)
	}
	if elapsed > shortWrite+1500*time.Millisecond {
		t.Errorf("cut after %v, want within WriteTimeout %v (+1.5s) of the stall", elapsed, shortWrite)
	}
	if errs := rec.closeErrs(); len(errs) != 1 || !errors.Is(errs[0], session.ErrWriteTimeout) {
		t.Errorf("close reasons %v, want one session.ErrWriteTimeout", errs)
	}
	if d := ts.Stats().DeadPeers; d != 0 {
		t.Errorf("DeadPeers = %d: the heartbeat, not the write timeout, ended it", d)
	}
	if got := ts.Stats().MemoryHeld; got != 0 {
		t.Errorf("MemoryHeld = %d after the connection was cut, want 0", got)
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
