package server_test

// Protocol version 2 end to end: the HELLO exchange and version refusal,
// MAX_IN_FLIGHT, CANCEL, chunked bodies, and control frames ahead of
// everything else.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestVersionRefused guards the refusal of version 1 peers: a first frame
// that is not HELLO (a v1 client's REQUEST, even one larger than
// MAX_FRAME_SIZE) and a HELLO carrying version 1 are each answered ERROR
// UNSUPPORTED_VERSION with id 0, and the connection is closed.
func TestVersionRefused(t *testing.T) {
	ts := startServer(t, baseConfig(), echoMux())
	refused := func(t *testing.T, first []byte) {
		t.Helper()
		conn := dialTCP(t, ts.addr)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(first); err != nil {
			t.Fatal(err)
		}
		fr := wire.NewFramer(nil, conn)
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer to a v1 first frame: %v", err)
		}
		got := frame{Type: f.Type, Flags: f.Flags, ID: f.ID, Payload: f.Payload}
		code, msg := errorCode(t, got)
		if code != wire.CodeUnsupportedVersion || f.ID != 0 {
			t.Fatalf("got %v, want ERROR UNSUPPORTED_VERSION id 0", got)
		}
		if !strings.Contains(msg, "version 2") {
			t.Errorf("refusal message %q does not say which version the server speaks", msg)
		}
		if _, err := fr.ReadFrame(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("after the refusal: %v, want the end of the stream", err)
		}
	}
	t.Run("v1 REQUEST first", func(t *testing.T) {
		refused(t, wire.AppendRequest(nil, 1, false, 1000, "echo", nil, []byte("hi")))
	})
	t.Run("v1 REQUEST larger than MAX_FRAME_SIZE", func(t *testing.T) {
		hdr := wire.AppendHeader(nil, wire.Header{Length: 8 << 20, Type: wire.TypeRequest, ID: 1})
		refused(t, append(hdr, 0, 0, 3, 0xe8, 4, 'e', 'c', 'h', 'o'))
	})
	t.Run("HELLO version 1", func(t *testing.T) {
		conn := dialTCP(t, ts.addr)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err := wire.NewFramer(conn, conn).ClientHandshake(wire.Hello{Version: 1})
		var he *wire.HandshakeError
		if !errors.As(err, &he) || he.Code != wire.CodeUnsupportedVersion {
			t.Fatalf("HELLO version 1: %v, want a refusal with UNSUPPORTED_VERSION", err)
		}
	})
}

// TestInFlightLimitRaw guards MAX_IN_FLIGHT (issue case 1, raw peer): the
// server announces it in HELLO, answers a request beyond it OVERLOADED at
// once, and keeps reading: a PING sent after it is answered while the
// first two requests are still being handled.
func TestInFlightLimitRaw(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.MaxInFlight = 2
	g := newGate(t)
	m := echoMux()
	m.Handle("hold", g)
	ts := startServer(t, cfg, m)
	t.Cleanup(g.Release)
	p := dialRaw(t, ts.addr, true)
	if p.server.MaxInFlight != 2 {
		t.Errorf("the server's HELLO announces MAX_IN_FLIGHT %d, want 2", p.server.MaxInFlight)
	}
	p.request(t, 1, 0, "hold", nil)
	p.request(t, 2, 0, "hold", nil)
	g.waitStarted(t, time.Second)
	g.waitStarted(t, time.Second)
	start := time.Now()
	p.request(t, 3, 0, "hold", nil)
	p.expectError(t, time.Second, 3, wire.CodeOverloaded)
	t.Logf("TIMING request beyond MAX_IN_FLIGHT refused after %v", time.Since(start))
	p.ping(t, 42)
	p.expectPong(t, time.Second, 42)
	if !waitFor(t, time.Second, func() bool { return ts.Stats().RefusedInFlight == 1 }) {
		t.Errorf("RefusedInFlight = %d, want 1", ts.Stats().RefusedInFlight)
	}
	g.Release()
	for range 2 {
		if f := p.expect(t, time.Second, wire.TypeResponse); f.ID != 1 && f.ID != 2 {
			t.Fatalf("got %v, want the answers to 1 and 2", f)
		}
	}
}

// TestAbandonedCallsFreeSlots guards CANCEL end to end (issue case 1): a
// client that gives up on calls to a handler that ignores its context
// sends CANCEL, the server stops counting them in flight, so the next call
// on the same connection is served at once instead of being refused
// beyond MAX_IN_FLIGHT.
func TestAbandonedCallsFreeSlots(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.MaxInFlight = 2
	g := newGate(t) // ignores its context, blocked until the test ends
	m := echoMux()
	m.Handle("ignore", g)
	ts := startServer(t, cfg, m)
	t.Cleanup(g.Release)
	c := newClient(t, client.Config{Addrs: []string{ts.addr}})
	if _, err := call(t, c, "echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := c.Call(ctx, "ignore", nil)
		cancel()
		if !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("call %d to a handler that never returns: %v, want errors.Is client.ErrTimeout", i, err)
		}
	}
	if n := len(g.Started); n != 2 {
		t.Fatalf("%d handlers started, want 2", n)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, "echo", []byte("next"))
	elapsed := time.Since(start)
	t.Logf("TIMING echo after two abandoned calls answered in %v", elapsed)
	if err != nil || string(resp) != "next" {
		t.Fatalf("echo after two abandoned calls: %q, %v", resp, err)
	}
	if elapsed > 500*time.Millisecond {
		t.Errorf("echo took %v, want it served at once", elapsed)
	}
	st := ts.Stats()
	if st.RefusedInFlight != 0 {
		t.Errorf("RefusedInFlight = %d: the abandoned calls still counted in flight", st.RefusedInFlight)
	}
	if st.WorkersBusy != 2 {
		t.Errorf("WorkersBusy = %d, want the 2 abandoned handlers still running", st.WorkersBusy)
	}
}

// TestCancel guards CANCEL on the server: a request being handled has its
// context cancelled (context.Canceled) and gets no answer; a request whose
// DATA is still arriving is dropped before any handler runs; either way
// the connection serves on.
func TestCancel(t *testing.T) {
	errs := make(chan error, 2)
	started := make(chan struct{}, 2)
	m := echoMux()
	m.HandleFunc("wait", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		errs <- context.Cause(ctx)
		return []byte("late answer"), nil
	})
	ts := startServer(t, baseConfig(), m)
	held := func() int {
		conns, _ := ts.Conns(0, -1)
		if len(conns) != 1 {
			return -1
		}
		return conns[0].MemoryHeld
	}

	t.Run("while handled", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		p.request(t, 1, 0, "wait", []byte("body"))
		<-started
		p.cancel(t, 1)
		select {
		case err := <-errs:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled handler's context: %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("CANCEL did not cancel the handler's context")
		}
		// Nothing is held once the handler's (dropped) answer is through.
		if !waitFor(t, time.Second, func() bool { return held() == 0 }) {
			t.Fatalf("connection holds %d bytes after the cancelled request ended", held())
		}
		p.echo(t, 2, "after cancel") // fails on any frame for request 1 first
	})

	t.Run("while receiving", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		p.write(t, "REQUEST", func(fr *wire.Framer) error {
			return fr.WriteRequest(1, true, 0, "wait", nil, []byte("first chunk"))
		})
		p.cancel(t, 1)
		p.write(t, "DATA", func(fr *wire.Framer) error { return fr.WriteData(1, false, []byte("last chunk")) })
		p.echo(t, 2, "after cancel")
		if n := ts.Stats().WorkersBusy; n != 0 {
			t.Errorf("WorkersBusy = %d: the request cancelled while arriving was handed to a handler", n)
		}
		if n := len(started); n != 0 {
			t.Errorf("the handler ran for a request cancelled while arriving")
		}
	})
}

// TestChunkedBodies guards chunking: a body larger than a frame goes both
// ways in DATA frames (through the client library, and by hand), and PINGs
// sent between the chunks of a request are answered while it is still
// incomplete.
func TestChunkedBodies(t *testing.T) {
	ts := startServer(t, baseConfig(), echoMux())
	body := bytes.Repeat([]byte("0123456789abcdef"), 3*mib/16)

	t.Run("client library, 3 MiB", func(t *testing.T) {
		c := newClient(t, client.Config{Addrs: []string{ts.addr}})
		resp, err := call(t, c, "echo", body)
		if err != nil || !bytes.Equal(resp, body) {
			t.Fatalf("3 MiB echo: %d bytes, %v", len(resp), err)
		}
	})

	t.Run("PINGs between chunks", func(t *testing.T) {
		p := dialRaw(t, ts.addr, true)
		chunk := int(p.server.MaxFrameSize) / 2
		body := body[:5*chunk]
		p.write(t, "REQUEST", func(fr *wire.Framer) error {
			return fr.WriteRequest(1, true, 0, "echo", nil, body[:chunk])
		})
		for i := 1; i < 5; i++ {
			p.ping(t, uint64(i))
			p.expectPong(t, time.Second, uint64(i))
			p.write(t, "DATA", func(fr *wire.Framer) error {
				return fr.WriteData(1, i < 4, body[i*chunk:(i+1)*chunk])
			})
		}
		got, ef := p.answer(t, 2*time.Second, 1)
		if ef != nil || !bytes.Equal(got, body) {
			t.Fatalf("chunked echo: %d bytes, error frame %v", len(got), ef)
		}
	})
}

// TestPongBehindSlowHandler guards control frames against slow handlers
// (issue case 6): a PING sent while a request's handler is still running
// on a warm connection is answered at once, and another request is served
// meanwhile. The worst of 20 rounds is bounded; the benchmark measures the
// distribution precisely.
func TestPongBehindSlowHandler(t *testing.T) {
	started := make(chan uint64, 1)
	proceed := make(chan struct{})
	m := echoMux()
	m.HandleFunc("slow", func(_ context.Context, req *server.Request) ([]byte, error) {
		started <- req.ID
		<-proceed // the handler's slow work, ended by the test
		return []byte("done"), nil
	})
	ts := startServer(t, baseConfig(), m)
	p := dialRaw(t, ts.addr, true)
	id := uint64(1)
	for ; id <= 5; id++ {
		p.echo(t, id, "warm")
	}
	var worst time.Duration
	for round := range 20 {
		p.request(t, id, 0, "slow", nil)
		select {
		case <-started:
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: the slow handler did not start", round)
		}
		sent := time.Now()
		p.ping(t, uint64(round))
		p.expectPong(t, time.Second, uint64(round))
		worst = max(worst, time.Since(sent))
		p.echo(t, id+1, "meanwhile") // other requests are served meanwhile too
		proceed <- struct{}{}
		if body, ef := p.answer(t, time.Second, id); ef != nil || string(body) != "done" {
			t.Fatalf("round %d: answer %q, %v", round, body, ef)
		}
		id += 2
	}
	t.Logf("TIMING worst PONG behind a running handler over 20 rounds: %v", worst)
	if worst > 50*time.Millisecond {
		t.Errorf("a PONG took %v while a handler ran, want < 50ms", worst)
	}
}

// TestPongAheadOfLargeAnswer guards the order of the write queue: a PONG
// queued while a large answer is being written goes out ahead of the
// answer's remaining chunks (behind at most what the socket buffers
// already hold), not after the whole answer.
func TestPongAheadOfLargeAnswer(t *testing.T) {
	const size = 3 * mib
	m := echoMux()
	m.HandleFunc("big", func(context.Context, *server.Request) ([]byte, error) {
		return make([]byte, size), nil
	})
	cfg := baseConfig()
	cfg.Socket.SendBuffer = 64 << 10
	cfg.Session.HeartbeatInterval = 5 * time.Second // no PING of the server's in the way
	cfg.Session.HeartbeatTimeout = 10 * time.Second
	ts := startServer(t, cfg, m)

	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := wire.NewFramer(nc, nc)
	if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteRequest(1, false, 0, "big", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The answer is queued and stuck behind the full socket buffers.
	if !waitFor(t, 2*time.Second, func() bool {
		conns, _ := ts.Conns(0, -1)
		return len(conns) == 1 && conns[0].MemoryHeld > size/2
	}) {
		t.Fatal("the answer was never queued")
	}
	if err := fr.WritePing(7); err != nil {
		t.Fatal(err)
	}
	total := size / wire.DefaultMaxFrameSize // chunks of this client's MAX_FRAME_SIZE
	before := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d frames of the answer: %v", before, err)
		}
		if f.Type == wire.TypePong {
			break
		}
		if f.ID != 1 || (f.Type != wire.TypeResponse && f.Type != wire.TypeData) {
			t.Fatalf("got %v, want the answer's frames or the PONG", f.Header)
		}
		if !f.More() {
			t.Fatalf("the whole answer (%d frames) came before the PONG", before+1)
		}
		before++
	}
	t.Logf("the PONG came after %d of the answer's ~%d frames", before, total)
	if before > total/3 {
		t.Errorf("the PONG came after %d of the answer's ~%d frames, want it ahead of most of them", before, total)
	}
}
