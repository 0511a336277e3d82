package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLS scenario: a self-signed ECDSA P-256 certificate for 127.0.0.1 is made
// when the run starts and written to a temporary directory, which the server
// children read (childSpec.TLSDir) and which is removed when the run ends.
// Both sides use crypto/tls at its defaults (TLS 1.3).

const (
	tlsCertFile = "cert.pem"
	tlsKeyFile  = "key.pem"
)

// tlsMaterial is the run's certificate: where the children find it, and
// the load generator's client configuration trusting it.
type tlsMaterial struct {
	dir    string
	client *tls.Config
}

func newTLSMaterial() (*tlsMaterial, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tcpprobench 127.0.0.1"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: it is its own root
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tcpprobench-tls-")
	if err != nil {
		return nil, err
	}
	m := &tlsMaterial{dir: dir}
	err = errors.Join(
		os.WriteFile(filepath.Join(dir, tlsCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(filepath.Join(dir, tlsKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600),
	)
	if err != nil {
		m.remove()
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
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
