package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestOverPipe: the client works over any net.Conn — here in-memory pipes,
// with no socket at all, served by a server through a listener of pipes.
func TestOverPipe(t *testing.T) {
	pl := newPipeListener()
	serveOn(t, pl, server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{"pipe:1"}, Dial: pl.dial})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				want := fmt.Sprintf("g%d-%d", g, i)
				if got, err := c.Call(context.Background(), "echo", []byte(want)); err != nil || string(got) != want {
					t.Errorf("Call = %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	big := make([]byte, 200<<10) // in chunks, both ways
	for i := range big {
		big[i] = byte(i)
	}
	if got, err := c.Call(context.Background(), "echo", big); err != nil || string(got) != string(big) {
		t.Fatalf("a %d-byte echo over a pipe: %d bytes, %v", len(big), len(got), err)
	}
}

// testPKI is a private CA and a certificate it issued for "localhost".
type testPKI struct {
	roots *x509.CertPool
	cert  tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	ca, err := tlsfiles.NewCA("tcppro test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tlsfiles.Leaf{CommonName: "localhost", DNSNames: []string{"localhost"}, Server: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return testPKI{roots: roots, cert: cert}
}

// TestOverTLS: with Config.TLS the client speaks TLS, verifying the server
// against the given roots and, with ServerName empty, the name in each
// address: "localhost:port" is accepted, "127.0.0.1:port" (for which the
// certificate was not issued) and an unknown CA are refused.
func TestOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	sawTLS := make(chan bool, 1)
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		_, ok := req.Conn.(*tls.Conn)
		select {
		case sawTLS <- ok:
		default:
		}
		return req.Body, nil
	})
	_, addr := startServer(t, "", server.Config{TLS: &tls.Config{Certificates: []tls.Certificate{pki.cert}}}, h)
	_, port, _ := net.SplitHostPort(addr)
	// "localhost" is resolved here, so that no resolver is involved.
	dial := func(ctx context.Context, a string) (net.Conn, error) {
		host, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, err
		}
		if host == "localhost" {
			a = net.JoinHostPort("127.0.0.1", p)
		}
		return netx.Dialer{}.DialContext(ctx, a)
	}
	c := newClient(t, client.Config{Addrs: []string{net.JoinHostPort("localhost", port)}, Dial: dial, TLS: &tls.Config{RootCAs: pki.roots}})
	if got, err := c.Call(context.Background(), "echo", []byte("over TLS")); err != nil || string(got) != "over TLS" {
		t.Fatalf("Call over TLS = %q, %v", got, err)
	}
	if !<-sawTLS {
		t.Fatal("the handler's connection is not a *tls.Conn")
	}
	big := make([]byte, 300<<10)
	if got, err := c.Call(context.Background(), "echo", big); err != nil || len(got) != len(big) {
		t.Fatalf("a %d-byte echo over TLS: %d bytes, %v", len(big), len(got), err)
	}

	wrongName := newClient(t, client.Config{Addrs: []string{addr}, Dial: dial, TLS: &tls.Config{RootCAs: pki.roots}})
	_, err := wrongName.Call(context.Background(), "echo", nil)
	var he x509.HostnameError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &he) || he.Host != "127.0.0.1" {
		t.Fatalf("a certificate for localhost at 127.0.0.1: %v, want ErrUnavailable with an x509.HostnameError", err)
	}
	unknownCA := newClient(t, client.Config{Addrs: []string{net.JoinHostPort("localhost", port)}, Dial: dial, TLS: &tls.Config{RootCAs: x509.NewCertPool()}})
	_, err = unknownCA.Call(context.Background(), "echo", nil)
	var ua x509.UnknownAuthorityError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ua) {
		t.Fatalf("a server certificate from an unknown CA: %v, want ErrUnavailable with an x509.UnknownAuthorityError", err)
	}
}

// TestVersion1Server: a server speaking protocol version 1 refuses the
// client's HELLO (an unknown frame type to it) with ERROR PROTOCOL and
// closes; the call fails at once with a typed error, not at its deadline.
func TestVersion1Server(t *testing.T) {
	raw := startRaw(t, func(nc net.Conn) {
		fr := wire.NewFramer(nc, nc)
		if _, err := fr.ReadFrame(); err == nil {
			fr.WriteError(0, wire.CodeProtocol, nil, "unknown frame type 7")
		}
	})
	c := newClient(t, client.Config{Addrs: []string{raw.addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
	var ce *client.CallError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ce) || ce.Code != wire.CodeProtocol || !ce.Conn {
		t.Fatalf("err = %v, want ErrUnavailable with the server's connection-level ERROR PROTOCOL", err)
	}
	if !errors.Is(err, client.ErrConnClosed) {
		t.Fatalf("err = %v does not match ErrConnClosed", err)
	}
	within(t, "a call to a version 1 server", el, time.Second)
	t.Logf("a call to a version 1 server: %v", err)
}

// blackHole returns the address of a listener whose accept queue is full
// and never drained: the kernel drops further SYNs, as a black hole does.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for i := 0; i < 8; i++ { // fill the accept queue
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

// TestDialTimeoutBlackHole: a connect into a black hole fails at the dial
// timeout, and calls then fail fast (ErrUnavailable) instead of waiting
// for their deadline — through the default dialer and through a Dial hook
// that hangs until its context ends alike.
func TestDialTimeoutBlackHole(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	t.Run("dialer", func(t *testing.T) {
		addr := blackHole(t)
		if c, err := net.DialTimeout("tcp", addr, timeout); err == nil {
			c.Close()
			t.Skip("the kernel accepted past a full backlog (tcp_abort_on_overflow or syncookies): no black hole here")
		}
		c := newClient(t, client.Config{Addrs: []string{addr}, DialTimeout: timeout})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
		var de *netx.DialError
		if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &de) || !de.Timeout {
			t.Fatalf("err = %v, want ErrUnavailable with a DialError that timed out", err)
		}
		if el < timeout-50*time.Millisecond || el > timeout+slack {
			t.Fatalf("the call failed after %v, want at the dial timeout %v", el, timeout)
		}
	})
	t.Run("hook", func(t *testing.T) {
		c := newClient(t, client.Config{Addrs: []string{"198.18.0.1:7420"}, DialTimeout: timeout, Dial: func(ctx context.Context, _ string) (net.Conn, error) {
			<-ctx.Done() // a connect that never completes
			return nil, ctx.Err()
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		el, err := timed(func() error { _, err := c.Call(ctx, "echo", nil); return err })
		var de *netx.DialError
		if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &de) || !de.Timeout {
			t.Fatalf("err = %v, want ErrUnavailable with a DialError that timed out", err)
		}
		if errors.Is(err, client.ErrTimeout) {
			t.Fatalf("err = %v: a failed connect taken for the call's deadline", err)
		}
		if el < timeout-50*time.Millisecond || el > timeout+slack {
			t.Fatalf("the call failed after %v, want at the dial timeout %v", el, timeout)
		}
	})
}
