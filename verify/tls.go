package verify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/wire"
)

// TLSServerName is the name in the lab servers' certificate, which every
// client of a TLS run verifies: lab addresses are assigned as the lab is
// built, so the certificate names the service rather than its addresses.
const TLSServerName = "service.tcppro-verify.test"

// TLSFiles are the PEM files of a TLS run (Options.TLS): a CA, and a
// server certificate it signed for TLSServerName with its key.
type TLSFiles struct {
	CA, Cert, Key string
}

// NewTLSFiles creates a throwaway CA and a server certificate in dir (which
// the caller removes after the run). The CA's key is never written.
func NewTLSFiles(dir string) (*TLSFiles, error) {
	ca, err := tlsfiles.NewCA("tcppro verify lab CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem")}
	if err := tlsfiles.WriteFile(f.CA, ca.CertPEM); err != nil {
		return nil, err
	}
	if err := ca.IssueFiles(tlsfiles.Leaf{CommonName: TLSServerName, DNSNames: []string{TLSServerName}, Server: true}, f.Cert, f.Key); err != nil {
		return nil, err
	}
	return f, nil
}

// serverConfig is the TLS configuration of the lab's servers.
func (f *TLSFiles) serverConfig() (*tls.Config, error) {
	c, err := tlsfiles.LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c}}, nil
}

// clientConfig is the TLS configuration of the lab's clients: they trust
// the lab's CA for TLSServerName.
func (f *TLSFiles) clientConfig() (*tls.Config, error) {
	pool, err := tlsfiles.LoadCertPool(f.CA)
	if err != nil {
		return nil, err
	}
	return clientConfigFor(pool), nil
}

func clientConfigFor(pool *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: TLSServerName}
}

// transport names the run's transport, for descriptions.
func (e *Env) transport() string {
	if e.opts.TLS != nil {
		return "TLS"
	}
	return "plain TCP"
}

// tlsConfigs loads the run's server and client TLS configurations once per
// scenario; both are nil in a plain run.
func (e *Env) tlsConfigs() (srv, cli *tls.Config, err error) {
	if e.opts.TLS == nil {
		return nil, nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srvTLS == nil {
		if e.srvTLS, err = e.opts.TLS.serverConfig(); err != nil {
			return nil, nil, err
		}
		if e.cliTLS, err = e.opts.TLS.clientConfig(); err != nil {
			return nil, nil, err
		}
	}
	return e.srvTLS, e.cliTLS, nil
}

// tlsSide is which end of a TLS session a connection plays.
type tlsSide bool

const (
	clientSide tlsSide = false // the raw clients and the baseline's connections
	serverSide tlsSide = true  // the raw peers that accept
)

// secure turns a raw connection into the run's transport: in a TLS run
// the given side of a TLS session (handshake done, within 5 s), else c
// itself. On error c is closed.
func (e *Env) secure(c net.Conn, s tlsSide) (net.Conn, error) {
	srv, cli, err := e.tlsConfigs()
	if err != nil || srv == nil {
		if err != nil {
			c.Close()
		}
		return c, err
	}
	var tc *tls.Conn
	if s == serverSide {
		tc = tls.Server(c, srv)
	} else {
		tc = tls.Client(c, cli)
	}
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %v: %w", c.RemoteAddr(), err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// rawPeer connects a raw client to a tcppro server at addr, as a minimal
// client in another language would: a plain net.Dialer on the kernel's
// defaults (ka, when not nil, turns keepalive on), TLS in a TLS run, then
// the HELLO exchange (docs/protocol.md §4). It announces no heartbeat and
// never sends one.
func (e *Env) rawPeer(ctx context.Context, h *faultnet.Host, addr netip.AddrPort, ka *net.KeepAliveConfig) (net.Conn, error) {
	c, err := plainDial(ctx, h, addr, ka)
	if err != nil {
		return nil, err
	}
	if c, err = e.secure(c, clientSide); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := wire.NewFramer(c, c).ClientHandshake(wire.Hello{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("raw peer: HELLO exchange with %v: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// plainConn connects from h to a raw echo server (startPlainServer) for a
// baseline: a plain net.Dialer on the kernel's defaults, in a TLS run with
// TLS on top and nothing else (no heartbeat, no timeout).
func (e *Env) plainConn(ctx context.Context, h *faultnet.Host, addr netip.AddrPort, ka *net.KeepAliveConfig) (net.Conn, error) {
	c, err := plainDial(ctx, h, addr, ka)
	if err != nil {
		return nil, err
	}
	return e.secure(c, clientSide)
}
