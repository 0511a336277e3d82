package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/sysinfo"
)

// pki is a CA and certificates written to a test's temporary directory.
type pki struct {
	dir                   string
	ca                    *tlsfiles.CA
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	// A client certificate from a CA the server does not trust.
	strangerCert, strangerKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsfiles.NewCA("tcppro test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsfiles.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.pem")}
	if err := tlsfiles.WriteFile(p.caFile, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	p.serverCert, p.serverKey = p.issueServer(t, "server one")
	p.clientCert, p.clientKey = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := ca.IssueFiles(tlsfiles.Leaf{CommonName: "client one", Client: true}, p.clientCert, p.clientKey); err != nil {
		t.Fatal(err)
	}
	p.strangerCert, p.strangerKey = filepath.Join(dir, "stranger.crt"), filepath.Join(dir, "stranger.key")
	if err := other.IssueFiles(tlsfiles.Leaf{CommonName: "stranger", Client: true}, p.strangerCert, p.strangerKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// issueServer (re)writes the server's certificate files, for localhost and
// 127.0.0.1, with common name cn.
func (p *pki) issueServer(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(p.dir, "server.crt"), filepath.Join(p.dir, "server.key")
	err := p.ca.IssueFiles(tlsfiles.Leaf{CommonName: cn, DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

// servedName is the common name of the certificate a new TLS connection
// to addr is served.
func servedName(addr string, pool *x509.CertPool) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// callOutput runs `tcppro call` and returns its combined output and error.
func callOutput(args ...string) (string, error) {
	out, err := tcppro(append([]string{"call"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestServeAndCallOverTLS: serve with a certificate, call with the CA that
// signed it; metadata goes out with the call and comes back with the echo's
// answer (printed with -v). A client that does not trust the CA, or speaks
// plain TCP, gets nothing through.
func TestServeAndCallOverTLS(t *testing.T) {
	p := newPKI(t)
	s := startServe(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey)

	out, err := callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--metadata", "trace-id=abc123", "--metadata", "tenant=blue", "-v", "hello")
	if err != nil {
		t.Fatalf("call over TLS: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Split(lines[0], "\t"); len(f) != 4 || f[0] != "1" || f[1] != "ok" || f[3] != "hello" {
		t.Fatalf("first line %q, want 1 ok TIME hello\n%s", lines[0], out)
	}
	for _, want := range []string{"1\tmetadata\ttrace-id=abc123", "1\tmetadata\ttenant=blue"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("call -v did not print %q:\n%s", want, out)
		}
	}
	// Without -v the output is the plain one: no metadata lines.
	out, err = callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--metadata", "trace-id=abc123", "hello")
	if err != nil || strings.Contains(out, "metadata") {
		t.Errorf("call without -v: %v\n%s", err, out)
	}
	// The environment works as for every flag.
	cmd := tcppro("call", "--addr", s.addr, "-v", "x")
	cmd.Env = append(cmd.Env, "TCPPRO_TLS_CA="+p.caFile, "TCPPRO_METADATA=from=env")
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "1\tmetadata\tfrom=env\n") {
		t.Errorf("call configured from the environment: %v\n%s", err, b)
	}
	// The certificate's names are checked: 127.0.0.1 is in it, not.example
	// is not.
	if out, err := callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--tls-server-name", "not.example", "--timeout", "2s", "x"); err == nil ||
		!strings.Contains(out, "not.example") {
		t.Errorf("a server name the certificate does not hold was accepted: %v\n%s", err, out)
	}
	// The system's roots do not include the test CA.
	if out, err := callOutput("--addr", s.addr, "--tls", "--timeout", "2s", "x"); err == nil || !strings.Contains(out, "unknown authority") {
		t.Errorf("a call trusting only the system's CAs: %v\n%s", err, out)
	}
	// A plain client is not served.
	if out, err := callOutput("--addr", s.addr, "--timeout", "2s", "x"); err == nil {
		t.Errorf("a plain TCP call to a TLS server succeeded:\n%s", out)
	}
}

// TestMutualTLS: with --tls-client-ca, a client without a certificate, or
// with one from another CA, is refused; one with a certificate the CA
// signed is served.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	s := startServe(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)

	out, err := callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--timeout", "3s", "no certificate")
	if err == nil {
		t.Fatalf("a client without a certificate was served:\n%s", out)
	}
	if !strings.Contains(out, "certificate required") {
		t.Errorf("the refusal does not say a certificate is required:\n%s", out)
	}
	out, err = callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--tls-cert", p.strangerCert, "--tls-key", p.strangerKey, "--timeout", "3s", "stranger")
	if err == nil {
		t.Fatalf("a client certificate from an untrusted CA was accepted:\n%s", out)
	}
	// Go's client does not present a certificate that no CA the server
	// names has signed: the server then finds none.
	if !strings.Contains(out, "unknown certificate authority") && !strings.Contains(out, "bad certificate") && !strings.Contains(out, "certificate required") {
		t.Errorf("the refusal of a stranger's certificate does not say why:\n%s", out)
	}
	out, err = callOutput("--addr", s.addr, "--tls-ca", p.caFile, "--tls-cert", p.clientCert, "--tls-key", p.clientKey, "trusted")
	if err != nil || !strings.Contains(out, "\tok\t") {
		t.Fatalf("a client with a trusted certificate: %v\n%s", err, out)
	}
	if !strings.Contains(s.logs.String(), "client_auth=required") {
		t.Errorf("mutual TLS is not in the start-up log:\n%s", s.logs)
	}
}

// TestServeReloadsCertificate replaces the certificate files under a
// running server: new connections are served the new certificate within
// the reload check (1 s, bounded here at 10 s), the connection opened
// before keeps working, and the process is the same one.
func TestServeReloadsCertificate(t *testing.T) {
	p := newPKI(t)
	s := startServe(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey)
	pool := p.pool()
	if cn, err := servedName(s.addr, pool); err != nil || cn != "server one" {
		t.Fatalf("before the reload: %q %v", cn, err)
	}
	c, err := client.New(client.Config{Addrs: []string{s.addr}, TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "echo", []byte("x"))
		return err
	}
	if err := call(); err != nil {
		t.Fatal(err)
	}

	// A broken replacement first: the key is not a key. The server keeps
	// its certificate and says why.
	if err := tlsfiles.WriteFile(p.serverKey, []byte("not a key\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logs.String(), "keeping the current certificate") {
		if time.Now().After(deadline) {
			t.Fatalf("a broken key file was not reported within 10 s:\n%s", s.logs)
		}
		if _, err := servedName(s.addr, pool); err != nil {
			t.Fatalf("a broken replacement broke the handshake: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the server's log
	}

	p.issueServer(t, "server two")
	start := time.Now()
	for {
		cn, err := servedName(s.addr, pool)
		if err != nil {
			t.Fatalf("during the reload: %v", err)
		}
		if cn == "server two" {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the new certificate was not served within 10 s (still %q)\n%s", cn, s.logs)
		}
		time.Sleep(50 * time.Millisecond) // polling the served certificate
	}
	t.Logf("new certificate served %v after the files were replaced", time.Since(start).Round(time.Millisecond))
	// The log line travels through the child's stderr pipe: it may reach
	// s.logs after the new certificate reached the test.
	for logged := time.Now(); !strings.Contains(s.logs.String(), "certificate reloaded"); {
		if time.Since(logged) > 5*time.Second {
			t.Errorf("the reload was not logged:\n%s", s.logs)
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the child's log
	}
	if err := call(); err != nil {
		t.Errorf("the connection opened before the reload failed: %v", err)
	}
	if st := c.Stats(); st.Dials != 1 {
		t.Errorf("the client dialled %d times, want 1: the old connection should live on", st.Dials)
	}
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("serve exited during the reload: %v\n%s", err, s.logs)
	default:
	}
	if out, err := callOutput("--addr", s.addr, "--tls-ca", p.caFile, "after"); err != nil {
		t.Fatalf("a call after the reload: %v\n%s", err, out)
	}
}

// usageFailure runs tcppro with args and extra environment, and checks
// that it exits with status 2 and prints every want.
func usageFailure(t *testing.T, env []string, args []string, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "TCPPRO_TEST_MAIN=1"), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("tcppro %q (env %q): %v, want exit status 2\n%s", args, env, err, out)
		return
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("tcppro %q (env %q) does not say %q:\n%s", args, env, w, out)
		}
	}
}

// TestServeFlagValidation: every bad setting, from a flag or from the
// environment, stops serve before it listens, naming the flag at fault.
func TestServeFlagValidation(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.dir, "missing.pem")
	base := []string{"serve", "--listen", "127.0.0.1:1", "--admin", ""}
	ephemeral := ephemeralPort(t)
	for _, c := range []struct {
		env  []string
		args []string
		want []string
	}{
		{nil, []string{"--heartbeat-interval", "10s"}, []string{"--heartbeat-timeout=10s", "must exceed --heartbeat-interval (10s)"}},
		{[]string{"TCPPRO_HEARTBEAT_TIMEOUT=1s"}, nil, []string{"--heartbeat-timeout=1s", "--heartbeat-interval (5s)"}},
		{nil, []string{"--max-frame-size", "1KiB"}, []string{"--max-frame-size=1KiB", "must be within [16384, 16777215]"}},
		{nil, []string{"--max-frame-size", "lots"}, []string{"-max-frame-size", "lots", "not a number of bytes"}},
		{[]string{"TCPPRO_MAX_MESSAGE_SIZE=5GiB"}, nil, []string{"TCPPRO_MAX_MESSAGE_SIZE", "outside"}},
		{nil, []string{"--conn-memory", "1MiB"}, []string{"--conn-memory=1MiB", "at least --max-message-size"}},
		{nil, []string{"--max-queued-control", "-1"}, []string{"--max-queued-control=-1", "must be positive"}},
		{nil, []string{"--handshake-timeout", "-1s"}, []string{"--handshake-timeout=-1s"}},
		{nil, []string{"--memory-budget", "-2"}, []string{"-memory-budget", "outside"}},
		{nil, []string{"--write-queue-size", "-1"}, []string{"-write-queue-size", "outside"}},
		{nil, []string{"--tls-cert", p.serverCert}, []string{"--tls-cert needs --tls-key"}},
		{[]string{"TCPPRO_TLS_KEY=" + p.serverKey}, nil, []string{"--tls-key needs --tls-cert"}},
		{nil, []string{"--tls-client-ca", p.caFile}, []string{"--tls-client-ca needs --tls-cert"}},
		{nil, []string{"--tls-cert", missing, "--tls-key", p.serverKey}, []string{"--tls-cert " + missing, "no such file"}},
		{nil, []string{"--tls-cert", p.serverCert, "--tls-key", garbage}, []string{"--tls-key " + garbage, "no PEM block"}},
		{nil, []string{"--tls-cert", p.serverCert, "--tls-key", p.clientKey}, []string{"--tls-cert and --tls-key do not make a pair"}},
		{nil, []string{"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", garbage}, []string{"--tls-client-ca " + garbage, "no PEM block"}},
		{nil, []string{"--listen", "bogus"}, []string{"--listen=bogus", "missing port"}},
		{nil, []string{"--drain-delay", "-1s"}, []string{"--drain-delay=-1s", "must not be negative"}},
		{nil, []string{"--listen", "127.0.0.1:no-such-port"}, []string{"--listen=127.0.0.1:no-such-port", "unknown port"}},
		{nil, []string{"--listen", ephemeral}, []string{"--listen=" + ephemeral, "inside the ephemeral port range", "--allow-ephemeral-port"}},
	} {
		usageFailure(t, c.env, append(append([]string{}, base...), c.args...), c.want...)
	}
}

// ephemeralPort is a loopback address whose port is inside this host's
// ephemeral range and not reserved: the port policy refuses it.
func ephemeralPort(t *testing.T) string {
	t.Helper()
	var fs sysinfo.FS
	r, err := fs.LocalPortRange()
	if err != nil {
		t.Fatal(err)
	}
	reserved, err := fs.ReservedPorts()
	if err != nil {
		t.Fatal(err)
	}
	for port := r.Lo; port <= r.Hi; port++ {
		if !reserved.Contains(port) {
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	t.Skip("every port of the ephemeral range is reserved: no port for the policy to refuse")
	return ""
}

// TestCallFlagValidation: bad metadata and TLS flags stop call before it
// connects, naming the flag.
func TestCallFlagValidation(t *testing.T) {
	p := newPKI(t)
	base := []string{"call", "--addr", "127.0.0.1:1"}
	for _, c := range []struct {
		env  []string
		args []string
		want []string
	}{
		{nil, []string{"--metadata", "novalue"}, []string{"-metadata", `"novalue" is not key=value`}},
		{nil, []string{"--metadata", "Upper=1"}, []string{"-metadata", "Upper"}},
		{nil, []string{"--metadata", "tcppro-x=1"}, []string{"-metadata", "tcppro-"}},
		{nil, []string{"--metadata", "k=1", "--metadata", "k=2"}, []string{"--metadata", `"k"`}},
		{[]string{"TCPPRO_METADATA=bad key=1"}, nil, []string{"TCPPRO_METADATA"}},
		{nil, []string{"--tls-cert", p.clientCert}, []string{"--tls-cert needs --tls-key"}},
		{nil, []string{"--tls-ca", filepath.Join(p.dir, "missing.pem")}, []string{"--tls-ca", "no such file"}},
		{nil, []string{"--tls-ca", p.serverKey}, []string{"--tls-ca " + p.serverKey, "no PEM block"}},
	} {
		usageFailure(t, c.env, append(append(append([]string{}, base...), c.args...), "x"), c.want...)
	}
}
