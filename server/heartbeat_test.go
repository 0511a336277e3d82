package server_test

// Liveness end to end: the server's heartbeat finds silent peers and keeps
// answering ones; the client's finds silent servers.

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestHeartbeatSilentPeerClosed guards the server's heartbeat: a peer that
// reads but never answers PINGs is pinged after the interval and closed
// once the heartbeat timeout has passed since its last bytes.
func TestHeartbeatSilentPeerClosed(t *testing.T) {
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = shortInterval
	cfg.Session.HeartbeatTimeout = shortTimeout
	ts := startServer(t, cfg, echoMux())
	p := dialRaw(t, ts.addr, false) // reads, never answers PINGs
	p.request(t, 1, 0, "echo", []byte("one"))
	start := time.Now() // the peer's last bytes
	if f := p.expect(t, time.Second, wire.TypeResponse); f.ID != 1 {
		t.Fatalf("got %v", f)
	}
	p.expectEOF(t, 3*time.Second)
	elapsed := time.Since(start)
	t.Logf("TIMING silent peer closed %v after its last bytes (timeout %v)", elapsed, shortTimeout)
	if elapsed < shortTimeout-20*time.Millisecond {
		t.Errorf("closed %v after the last bytes, before the heartbeat timeout %v", elapsed, shortTimeout)
	}
	if elapsed > shortTimeout+time.Second {
		t.Errorf("silent peer closed after %v, want within the heartbeat timeout %v (+1s)", elapsed, shortTimeout)
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

// TestHeartbeatCountsPartialFrames guards the liveness rule of protocol
// v2 that any bytes received prove the peer alive, parts of a frame
// included: a peer on a slow link that trickles one large frame for
// several heartbeat timeouts, answering no PING meanwhile, is not declared
// dead, and its request is served.
func TestHeartbeatCountsPartialFrames(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	// A piece every tenth of the timeout: the test goroutine may be
	// held off for most of a timeout (a loaded machine) without a gap
	// that long between two pieces.
	const timeout = time.Second
	cfg.Session.HeartbeatInterval = shortInterval
	cfg.Session.HeartbeatTimeout = timeout
	cfg.Session.FrameReadTimeout = 10 * time.Second // not under test
	ts := startServer(t, cfg, echoMux())
	p := dialRaw(t, ts.addr, false) // answers no PING
	body := make([]byte, 4<<10)
	f := wire.AppendRequest(nil, 1, false, 0, "echo", nil, body)
	const pieces = 35
	tk := time.NewTicker(timeout / 10)
	defer tk.Stop()
	start := time.Now()
	for i := range pieces {
		if err := p.writeRaw(f[i*len(f)/pieces : (i+1)*len(f)/pieces]); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		<-tk.C
	}
	if took := time.Since(start); took < 3*timeout {
		t.Fatalf("the frame took only %v to send: it proves nothing", took)
	}
	if got, ef := p.answer(t, 2*time.Second, 1); ef != nil || len(got) != len(body) {
		t.Fatalf("trickled request: %d bytes, %v (dead peers: %d)", len(got), ef, ts.Stats().DeadPeers)
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

// TestHeartbeatAnsweringPeerStays guards against false deaths: an idle peer
// that answers every PING stays connected for many heartbeat timeouts.
func TestHeartbeatAnsweringPeerStays(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = shortInterval
	cfg.Session.HeartbeatTimeout = 6 * shortInterval
	ts := startServer(t, cfg, echoMux())
	p := dialRaw(t, ts.addr, true)
	p.echo(t, 1, "before")
	window := 3 * cfg.Session.HeartbeatTimeout
	if pings := stayOpen(t, p, window); pings < 3 {
		t.Errorf("only %d PINGs answered in %v: heartbeats are not running", pings, window)
	}
	p.echo(t, 2, "after")
	if d := ts.Stats().DeadPeers; d != 0 {
		t.Errorf("DeadPeers = %d, want 0", d)
	}
}

// silentServer accepts connections and reads them, never writing; with
// hello it first answers the client's HELLO. It stops with the test.
func silentServer(t *testing.T, hello bool) string {
	t.Helper()
	ln := listenLoopback(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
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
				if hello {
					if _, err := wire.NewFramer(c, c).ServerHandshake(wire.Hello{}); err != nil {
						return
					}
				}
				_, _ = io.Copy(io.Discard, c)
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
	return ln.Addr().String()
}

// TestSilentServerDetectedByClient guards the client's liveness checks
// against a server that goes silent: after the HELLO exchange the heartbeat
// fails the call with ErrPeerDead; before it, the handshake timeout fails
// it with ErrHandshakeTimeout. Neither waits for the call's own deadline.
func TestSilentServerDetectedByClient(t *testing.T) {
	t.Run("after HELLO", func(t *testing.T) {
		c := newClient(t, client.Config{
			Addrs:   []string{silentServer(t, true)},
			Session: session.Config{HeartbeatInterval: shortInterval, HeartbeatTimeout: shortTimeout},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Call(ctx, "echo", []byte("anyone?"))
		elapsed := time.Since(start)
		t.Logf("TIMING silent server detected after %v", elapsed)
		if !errors.Is(err, client.ErrPeerDead) {
			t.Errorf("call to a silent server: %v, want errors.Is client.ErrPeerDead", err)
		}
		if elapsed > shortTimeout+1500*time.Millisecond {
			t.Errorf("silent server detected after %v, want within the heartbeat timeout %v (+1.5s), well before the call's 10s", elapsed, shortTimeout)
		}
	})
	t.Run("before HELLO", func(t *testing.T) {
		const hs = 200 * time.Millisecond
		c := newClient(t, client.Config{
			Addrs:      []string{silentServer(t, false)},
			MaxRetries: -1,
			Session:    session.Config{HandshakeTimeout: hs},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Call(ctx, "echo", []byte("anyone?"))
		elapsed := time.Since(start)
		t.Logf("TIMING server without HELLO detected after %v", elapsed)
		if !errors.Is(err, session.ErrHandshakeTimeout) {
			t.Errorf("call to a server that never says HELLO: %v, want errors.Is session.ErrHandshakeTimeout", err)
		}
		if elapsed < hs-20*time.Millisecond || elapsed > hs+time.Second {
			t.Errorf("failed after %v, want ~HandshakeTimeout %v", elapsed, hs)
		}
	})
}
