package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// readers counts the goroutines reading a connection of the net.Conn
// transport.
func readers() int {
	buf := make([]byte, 8<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "internal/netconn.(*Conn).Run(")
}

// TestTransportSelection: on the event loop (epoll, and auto for plain
// TCP) the server's connections have no reader goroutine; with
// TransportNetConn each has one. All serve.
func TestTransportSelection(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop needs Linux")
	}
	const conns = 20
	for _, tc := range []struct {
		transport netx.Transport
		readers   int
	}{
		{netx.TransportEpoll, 0},
		{netx.TransportAuto, 0}, // plain TCP on Linux: the event loop
		{netx.TransportNetConn, conns},
	} {
		t.Run(string(tc.transport), func(t *testing.T) {
			t.Setenv(netx.TransportEnv, "") // auto is the default here
			cfg := baseConfig()
			cfg.Transport = tc.transport
			before := readers()
			ts := startServer(t, cfg, echoMux())
			var peers []*rawPeer
			for range conns {
				peers = append(peers, dialRaw(t, ts.addr, true))
			}
			for i, p := range peers {
				p.write(t, "a request", func(fr *wire.Framer) error { return fr.WriteRequest(1, false, 0, "echo", nil, []byte("x")) })
				if body, ef := p.answer(t, 5*time.Second, 1); ef != nil || string(body) != "x" {
					t.Fatalf("peer %d: answer %q, error frame %v", i, body, ef)
				}
			}
			if got := readers() - before; got != tc.readers {
				t.Errorf("%d connections on %s: %d reader goroutines, want %d", conns, tc.transport, got, tc.readers)
			}
		})
	}
}

// TestTransportValidation: an unknown transport, and the event loop with
// TLS, are configuration errors naming Transport.
func TestTransportValidation(t *testing.T) {
	for _, cfg := range []server.Config{
		{Transport: "io_uring"},
		{Transport: netx.TransportEpoll, TLS: &tls.Config{Certificates: []tls.Certificate{{}}}},
	} {
		var ce *session.ConfigError
		if _, err := server.New(cfg, echoMux()); !errors.As(err, &ce) || ce.Field != "Transport" {
			t.Errorf("New(Transport %q, TLS %v) = %v, want a ConfigError naming Transport", cfg.Transport, cfg.TLS != nil, err)
		}
	}
}

// TestEventLoopConnStandsIn: a handler's Request.Conn on the event loop
// has the connection's addresses, fails reads and deadlines, and its Close
// closes the connection.
func TestEventLoopConnStandsIn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop needs Linux")
	}
	m := echoMux()
	got := make(chan net.Conn, 1)
	m.HandleFunc("close", func(_ context.Context, req *server.Request) ([]byte, error) {
		got <- req.Conn
		return nil, req.Conn.Close()
	})
	cfg := baseConfig()
	cfg.Transport = netx.TransportEpoll
	ts := startServer(t, cfg, m)
	p := dialRaw(t, ts.addr, true)
	p.write(t, "a request", func(fr *wire.Framer) error { return fr.WriteRequest(1, false, 0, "close", nil, nil) })
	c := <-got
	if c.RemoteAddr().String() != p.conn.LocalAddr().String() || c.LocalAddr().String() != ts.addr {
		t.Errorf("Request.Conn addresses %v → %v, want %v → %v", c.RemoteAddr(), c.LocalAddr(), p.conn.LocalAddr(), ts.addr)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a read on Request.Conn succeeded")
	}
	if err := c.SetDeadline(time.Now()); err == nil {
		t.Error("a deadline on Request.Conn was accepted")
	}
	p.expectEnd(t, 5*time.Second, true)
}
