package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

// testCA is a certificate authority made for one test, and a pool
// trusting it.
type testCA struct {
	ca   *tlsfiles.CA
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := tlsfiles.NewCA("tcppro test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &testCA{ca: ca, pool: pool}
}

// issue returns a certificate for cn signed by the CA: a server's for
// 127.0.0.1, or a client's.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	leaf := tlsfiles.Leaf{CommonName: cn, Server: server, Client: !server, ValidFor: time.Hour}
	if server {
		leaf.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	certPEM, keyPEM, err := ca.ca.Issue(leaf)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// peerNames records the common name of the certificate each TLS client
// connection of a client was shown.
type peerNames struct {
	mu    sync.Mutex
	names []string
}

func (p *peerNames) verify(cs tls.ConnectionState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.names = append(p.names, cs.PeerCertificates[0].Subject.CommonName)
	return nil
}

func (p *peerNames) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.names...)
}

// tlsMux answers echo, and whoami with the common name of the client's
// certificate ("" without one); it checks that requests come on TLS.
func tlsMux(t *testing.T) *server.Mux {
	m := echoMux()
	m.HandleFunc("whoami", func(_ context.Context, req *server.Request) ([]byte, error) {
		tc, ok := req.Conn.(*tls.Conn)
		if !ok {
			t.Errorf("req.Conn is a %T over TLS, want a *tls.Conn", req.Conn)
			return nil, nil
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			return []byte(certs[0].Subject.CommonName), nil
		}
		return nil, nil
	})
	return m
}

// TestTLS guards serving over TLS: calls work with Config.TLS on both
// sides, mutual TLS refuses a client without a certificate and names the
// client to handlers, GetCertificate changes the certificate of new
// connections without a restart, a handshake that never completes is cut
// at HandshakeTimeout, and BUSY reaches a TLS client typed.
func TestTLS(t *testing.T) {
	ca := newCA(t)
	srvCert := ca.issue(t, "server-a", true)

	t.Run("echo", func(t *testing.T) {
		cfg := baseConfig()
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}}
		ts := startServer(t, cfg, tlsMux(t))
		c := newClient(t, client.Config{Addrs: []string{ts.addr}, TLS: &tls.Config{RootCAs: ca.pool}})
		if resp, err := call(t, c, "echo", []byte("over TLS")); err != nil || string(resp) != "over TLS" {
			t.Fatalf("echo over TLS: %q, %v", resp, err)
		}
		if _, err := call(t, c, "whoami", nil); err != nil {
			t.Fatal(err)
		}
		if conns, _ := ts.Conns(0, -1); len(conns) != 1 || !conns[0].TLS {
			t.Errorf("connection table %+v, want one TLS connection", conns)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		cfg := baseConfig()
		cfg.TLS = &tls.Config{
			Certificates: []tls.Certificate{srvCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.pool,
		}
		ts := startServer(t, cfg, tlsMux(t))
		anon := newClient(t, client.Config{Addrs: []string{ts.addr}, TLS: &tls.Config{RootCAs: ca.pool}, MaxRetries: -1})
		if _, err := call(t, anon, "echo", []byte("x")); err == nil {
			t.Errorf("a client without a certificate was served under mutual TLS")
		}
		anon.Close()
		cert := ca.issue(t, "client-a", false)
		named := newClient(t, client.Config{Addrs: []string{ts.addr}, TLS: &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{cert}}})
		if resp, err := call(t, named, "whoami", nil); err != nil || string(resp) != "client-a" {
			t.Errorf("whoami with a client certificate: %q, %v; want client-a", resp, err)
		}
		if n := ts.Stats().Requests; n != 1 {
			t.Errorf("%d requests served, want 1 (the certified client's)", n)
		}
	})

	t.Run("certificate reload", func(t *testing.T) {
		var cur atomic.Pointer[tls.Certificate]
		cur.Store(&srvCert)
		cfg := baseConfig()
		cfg.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load(), nil }}
		ts := startServer(t, cfg, tlsMux(t))
		seen := &peerNames{}
		dial := func() *client.Client {
			return newClient(t, client.Config{Addrs: []string{ts.addr}, TLS: &tls.Config{RootCAs: ca.pool, VerifyConnection: seen.verify}})
		}
		first := dial()
		if _, err := call(t, first, "echo", []byte("a")); err != nil {
			t.Fatal(err)
		}
		next := ca.issue(t, "server-b", true)
		cur.Store(&next)
		second := dial()
		if _, err := call(t, second, "echo", []byte("b")); err != nil {
			t.Fatal(err)
		}
		if _, err := call(t, first, "echo", []byte("a again")); err != nil {
			t.Errorf("the connection made before the reload: %v", err)
		}
		if got := seen.get(); len(got) != 2 || got[0] != "server-a" || got[1] != "server-b" {
			t.Errorf("certificates shown %v, want [server-a server-b]", got)
		}
	})

	t.Run("handshake timeout", func(t *testing.T) {
		const hs = 200 * time.Millisecond
		rec := &recorder{}
		cfg := baseConfig()
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}}
		cfg.Session.HandshakeTimeout = hs
		cfg.Observer = rec
		ts := startServer(t, cfg, tlsMux(t))
		for _, first := range [][]byte{nil, {0x16, 0x03, 0x01}} { // silence; a TLS record header, then silence
			conn := dialTCP(t, ts.addr)
			if _, err := conn.Write(first); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := conn.Read(make([]byte, 1))
			elapsed := time.Since(start)
			conn.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a TLS handshake that never completes was not cut within 3s")
			}
			t.Logf("TIMING stalled TLS handshake (%d bytes sent) cut after %v", len(first), elapsed)
			if elapsed < hs-20*time.Millisecond || elapsed > hs+time.Second {
				t.Errorf("cut after %v, want ~HandshakeTimeout %v", elapsed, hs)
			}
		}
		if !waitFor(t, time.Second, func() bool { return len(rec.closeErrs()) == 2 }) {
			t.Fatalf("close reasons %v, want 2", rec.closeErrs())
		}
		for _, err := range rec.closeErrs() {
			if !errors.Is(err, session.ErrHandshakeTimeout) {
				t.Errorf("closed with %v, want session.ErrHandshakeTimeout", err)
			}
		}
	})

	t.Run("BUSY over TLS", func(t *testing.T) {
		cfg := baseConfig()
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}}
		cfg.MaxConns = 1
		ts := startServer(t, cfg, tlsMux(t))
		ccfg := client.Config{Addrs: []string{ts.addr}, TLS: &tls.Config{RootCAs: ca.pool}, MaxRetries: -1}
		held := newClient(t, ccfg)
		if _, err := call(t, held, "echo", []byte("hold")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := call(t, newClient(t, ccfg), "echo", []byte("over the cap"))
		t.Logf("TIMING BUSY over TLS after %v", time.Since(start))
		if !errors.Is(err, client.ErrServerBusy) {
			t.Errorf("call over the cap: %v, want errors.Is client.ErrServerBusy", err)
		}
		if got := ts.Stats().RejectedBusy; got != 1 {
			t.Errorf("RejectedBusy = %d, want 1", got)
		}
	})
}

// TestStopDuringTLSHandshake guards Close and Shutdown against peers that
// never finish their TLS handshake: neither waits for HandshakeTimeout.
func TestStopDuringTLSHandshake(t *testing.T) {
	ca := newCA(t)
	cfg := baseConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "server", true)}}
	cfg.Session.HandshakeTimeout = 10 * time.Second
	for _, stop := range []struct {
		name string
		do   func(*testServer) error
	}{
		{"Close", func(ts *testServer) error { return ts.Close() }},
		{"Shutdown", func(ts *testServer) error {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			return ts.Shutdown(ctx)
		}},
	} {
		t.Run(stop.name, func(t *testing.T) {
			ts := startServer(t, cfg, echoMux())
			var conns []*net.TCPConn
			for range 2 {
				c := dialTCP(t, ts.addr)
				defer c.Close()
				conns = append(conns, c)
			}
			if !waitFor(t, 2*time.Second, func() bool { return ts.Stats().Active == 2 }) {
				t.Fatalf("Active = %d, want the 2 connections in their handshake", ts.Stats().Active)
			}
			start := time.Now()
			err := stop.do(ts)
			took := time.Since(start)
			t.Logf("TIMING %s with 2 connections in their TLS handshake returned after %v", stop.name, took)
			if err != nil {
				t.Errorf("%s = %v", stop.name, err)
			}
			if took > time.Second {
				t.Errorf("%s took %v with connections in their TLS handshake, want < 1s (HandshakeTimeout %v)", stop.name, took, cfg.Session.HandshakeTimeout)
			}
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Errorf("the server wrote to a connection it stopped")
				} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("a connection in its handshake is still open after %s", stop.name)
				}
			}
		})
	}
}
