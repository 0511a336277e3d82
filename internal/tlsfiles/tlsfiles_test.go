package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/syncbuf"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time              { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration)     { c.t.Add(int64(d)) }
func newFakeClock() *fakeClock                   { c := &fakeClock{}; c.t.Store(time.Now().UnixNano()); return c }
func commonName(c *tls.Certificate) string       { return c.Leaf.Subject.CommonName }
func writeFile(t *testing.T, p string, b []byte) { t.Helper(); must(t, os.WriteFile(p, b, 0o600)) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// files issues a certificate named cn into dir/{cert,key}.pem.
func files(t *testing.T, ca *CA, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, ca.IssueFiles(Leaf{CommonName: cn, DNSNames: []string{"localhost"}}, certFile, keyFile))
	return certFile, keyFile
}

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("tlsfiles test CA", time.Hour)
	must(t, err)
	return ca
}

// newPair loads a Pair on a fake clock, logging into the returned buffer.
func newPair(t *testing.T, certFile, keyFile string) (*Pair, *fakeClock, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	clk := newFakeClock()
	p, err := LoadPair(certFile, keyFile, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	must(t, err)
	p.now = clk.now
	p.nextCheck.Store(clk.now().Add(p.interval).UnixNano())
	return p, clk, logs
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certFile, keyFile := files(t, ca, dir, "a")
	otherCert, otherKey := filepath.Join(dir, "o.crt"), filepath.Join(dir, "o.key")
	must(t, ca.IssueFiles(Leaf{CommonName: "other"}, otherCert, otherKey))
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM at all\n"))

	for _, c := range []struct {
		name       string
		cert, key  string
		what, path string
		is         error
	}{
		{"missing certificate", missing, keyFile, WhatCert, missing, fs.ErrNotExist},
		{"missing key", certFile, missing, WhatKey, missing, fs.ErrNotExist},
		{"certificate without PEM", garbage, keyFile, WhatCert, garbage, ErrNoPEM},
		{"key without PEM", certFile, garbage, WhatKey, garbage, ErrNoPEM},
		{"key given as the certificate", keyFile, keyFile, WhatCert, keyFile, ErrNoPEM},
		{"key of another certificate", certFile, otherKey, WhatPair, certFile, nil},
	} {
		_, err := LoadPair(c.cert, c.key, Options{})
		var fe *FileError
		if !errors.As(err, &fe) || fe.What != c.what || fe.Path != c.path {
			t.Errorf("%s: %v, want a FileError about the %s %s", c.name, err, c.what, c.path)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: %v does not match %v", c.name, err, c.is)
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %q does not name the file", c.name, err)
		}
	}
}

func TestLoadCertPool(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.CertPEM)
	pool, err := LoadCertPool(caFile)
	must(t, err)
	certPEM, _, err := ca.Issue(Leaf{CommonName: "s", DNSNames: []string{"s.test"}, Server: true})
	must(t, err)
	crt := parseCert(t, certPEM)
	if _, err := crt.Verify(x509.VerifyOptions{Roots: pool, DNSName: "s.test"}); err != nil {
		t.Fatalf("a certificate issued by the CA does not verify against its pool: %v", err)
	}

	var fe *FileError
	if _, err := LoadCertPool(filepath.Join(dir, "nope")); !errors.As(err, &fe) || fe.What != WhatCA || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	if _, err := LoadCertPool(garbage); !errors.Is(err, ErrNoPEM) {
		t.Errorf("a CA file holding no certificate: %v, want ErrNoPEM", err)
	}
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	must(t, err)
	return crt
}

func TestReloadAfterInterval(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certFile, keyFile := files(t, ca, dir, "first")
	p, clk, logs := newPair(t, certFile, keyFile)
	if got := commonName(p.Certificate()); got != "first" {
		t.Fatalf("loaded %q, want first", got)
	}
	files(t, ca, dir, "second")
	if got := commonName(p.Certificate()); got != "first" {
		t.Fatalf("the files were looked at before the interval passed: %q", got)
	}
	clk.advance(DefaultCheckInterval)
	c, err := p.GetCertificate(&tls.ClientHelloInfo{})
	must(t, err)
	if got := commonName(c); got != "second" {
		t.Fatalf("after the interval: %q, want second", got)
	}
	if !strings.Contains(logs.String(), "certificate reloaded") || !strings.Contains(logs.String(), "CN=second") {
		t.Errorf("the reload was not logged with the new subject:\n%s", logs)
	}
	cc, err := p.GetClientCertificate(&tls.CertificateRequestInfo{})
	must(t, err)
	if commonName(cc) != "second" {
		t.Errorf("GetClientCertificate: %q", commonName(cc))
	}
}

// TestBadReplacementKeepsTheCurrentPair: a half-written or mismatched pair
// is not served; the old one is, and the failure is logged once; the next
// good version is picked up.
func TestBadReplacementKeepsTheCurrentPair(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certFile, keyFile := files(t, ca, dir, "good")
	p, clk, logs := newPair(t, certFile, keyFile)

	// A new certificate whose key has not been written yet.
	newCert, _, err := ca.Issue(Leaf{CommonName: "half"})
	must(t, err)
	must(t, WriteFile(certFile, newCert))
	clk.advance(DefaultCheckInterval)
	if got := commonName(p.Certificate()); got != "good" {
		t.Fatalf("a certificate without its key was served: %q", got)
	}
	if n := strings.Count(logs.String(), "cannot be loaded"); n != 1 || !strings.Contains(logs.String(), "keeping the current certificate") {
		t.Fatalf("the failed reload was logged %d times, want once, with the reason:\n%s", n, logs)
	}
	clk.advance(DefaultCheckInterval)
	p.Certificate()
	if n := strings.Count(logs.String(), "cannot be loaded"); n != 1 {
		t.Errorf("an unchanged bad pair was tried and logged again (%d lines)", n)
	}

	// An unreadable key: the same.
	must(t, os.Remove(keyFile))
	clk.advance(DefaultCheckInterval)
	if got := commonName(p.Certificate()); got != "good" {
		t.Fatalf("served %q with the key file gone", got)
	}
	if !strings.Contains(logs.String(), "no such file") {
		t.Errorf("the missing key is not in the logs:\n%s", logs)
	}

	files(t, ca, dir, "fixed")
	clk.advance(DefaultCheckInterval)
	if got := commonName(p.Certificate()); got != "fixed" {
		t.Fatalf("the repaired pair was not loaded: %q", got)
	}
}

func TestNegativeIntervalNeverReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certFile, keyFile := files(t, ca, dir, "once")
	p, err := LoadPair(certFile, keyFile, Options{CheckInterval: -1})
	must(t, err)
	files(t, ca, dir, "later")
	p.now = func() time.Time { return time.Now().Add(time.Hour) }
	if got := commonName(p.Certificate()); got != "once" {
		t.Fatalf("reloaded with a negative interval: %q", got)
	}
}

// TestReloadUnderHandshakes serves real TLS handshakes on loopback while the
// files are replaced: every handshake succeeds with one of the two
// certificates (never a torn pair), and the new one is served once the
// check interval has passed.
func TestReloadUnderHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certFile, keyFile := files(t, ca, dir, "old")
	p, err := LoadPair(certFile, keyFile, Options{CheckInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: p.GetCertificate})
	must(t, err)
	var srv sync.WaitGroup
	srv.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			srv.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	defer func() { ln.Close(); srv.Wait() }()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	served := func() (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	var clients sync.WaitGroup
	stop := make(chan struct{})
	var bad atomic.Value
	for range 4 {
		clients.Go(func() {
			for i := 0; i < 500; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if cn, err := served(); err != nil || (cn != "old" && cn != "new") {
					bad.Store(errors.Join(err, errors.New("served "+cn)))
					return
				}
			}
		})
	}
	files(t, ca, dir, "new")
	deadline := time.Now().Add(10 * time.Second)
	for {
		cn, err := served()
		must(t, err)
		if cn == "new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced certificate was never served")
		}
		time.Sleep(5 * time.Millisecond) // polling the served certificate
	}
	close(stop)
	clients.Wait()
	if e, ok := bad.Load().(error); ok {
		t.Fatalf("a handshake during the reload failed: %v", e)
	}
}
