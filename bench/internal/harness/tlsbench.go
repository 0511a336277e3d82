package harness

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tcppro/tcppro/internal/tlsfiles"
)

// TLS scenario: when the run starts, a CA made for the run
// (internal/tlsfiles) issues an ECDSA P-256 certificate for 127.0.0.1,
// written to a temporary directory, which the server children read
// (childSpec.TLSDir) and which is removed when the run ends. Both sides use
// crypto/tls at its defaults (TLS 1.3).

const (
	tlsCertFile = "cert.pem"
	tlsKeyFile  = "key.pem"
)

// tlsMaterial is the run's certificate: where the children find it, and
// the load generator's client configuration trusting its CA.
type tlsMaterial struct {
	dir    string
	client *tls.Config
}

func newTLSMaterial() (*tlsMaterial, error) {
	ca, err := tlsfiles.NewCA("tcpprobench CA", 48*time.Hour)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tcpprobench-tls-")
	if err != nil {
		return nil, err
	}
	m := &tlsMaterial{dir: dir}
	leaf := tlsfiles.Leaf{
		CommonName: "tcpprobench 127.0.0.1",
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		Server:     true,
		ValidFor:   48 * time.Hour,
	}
	if err := ca.IssueFiles(leaf, filepath.Join(dir, tlsCertFile), filepath.Join(dir, tlsKeyFile)); err != nil {
		m.remove()
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	m.client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return m, nil
}

func (m *tlsMaterial) remove() { _ = os.RemoveAll(m.dir) }

// serverTLSConfig loads the certificate a server child serves.
func serverTLSConfig(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsCertFile), filepath.Join(dir, tlsKeyFile))
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// dialRaw dials one raw-side connection, over TLS when conf is set (the
// handshake done here, bounded, so that it is not in the measured window).
func dialRaw(addr string, conf *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil || conf == nil {
		return c, err
	}
	tc := tls.Client(c, conf)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}
