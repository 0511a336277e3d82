package admin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/syncbuf"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/server"
)

// TestInstall: Install makes the Metrics the Observer (beside one already
// set) and appends its Interceptor without writing into an array another
// configuration shares; installing again changes nothing; and admin.New
// warns about a server the Metrics were not installed in.
func TestInstall(t *testing.T) {
	m := admin.NewMetrics(nil)
	var cfg server.Config
	m.Install(&cfg)
	if cfg.Observer != server.Observer(m) || len(cfg.Interceptors) != 1 {
		t.Fatalf("Install into an empty configuration: Observer %T, %d interceptors", cfg.Observer, len(cfg.Interceptors))
	}
	m.Install(&cfg)
	if cfg.Observer != server.Observer(m) || len(cfg.Interceptors) != 1 {
		t.Fatalf("a second Install changed the configuration: %d interceptors", len(cfg.Interceptors))
	}

	// An Observer and an interceptor of the embedder's own, in a slice
	// with room to grow in place.
	own := newNotifier()
	pass := func(ctx context.Context, req *server.Request, next server.Handler) ([]byte, error) {
		return next.ServeTCP(ctx, req)
	}
	shared := make([]server.Interceptor, 1, 4)
	shared[0] = pass
	m2 := admin.NewMetrics(nil)
	cfg = server.Config{Logger: quiet, Observer: own, Interceptors: shared}
	m2.Install(&cfg)
	m2.Install(&cfg)
	if len(cfg.Interceptors) != 2 {
		t.Fatalf("%d interceptors, want the embedder's and the Metrics'", len(cfg.Interceptors))
	}
	if shared[:2][1] != nil {
		t.Fatal("Install wrote into the embedder's array")
	}
	if cfg.Observer == server.Observer(own) || cfg.Observer == server.Observer(m2) {
		t.Fatalf("Observer %T: want both the embedder's and the Metrics", cfg.Observer)
	}
	// Both are told.
	cfg.Observer.ConnOpened(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	select {
	case <-own.opened:
	default:
		t.Fatal("the embedder's Observer was not told")
	}
	cfg.Observer.ConnRejected(server.RejectPortPolicy)
	if !strings.Contains(gather(t, m2), `tcppro_connections_rejected_total{reason="port_policy"} 1`) {
		t.Fatal("the Metrics were not told")
	}

	// admin.New attaches the Metrics and warns when they are not installed.
	for _, tc := range []struct {
		name    string
		install func(*admin.Metrics, *server.Config)
		warn    []string
	}{
		{"installed", (*admin.Metrics).Install, nil},
		{"observer only", func(m *admin.Metrics, c *server.Config) { c.Observer = m }, []string{"Interceptor is not installed"}},
		{"interceptor only", func(m *admin.Metrics, c *server.Config) {
			c.Interceptors = append(c.Interceptors, m.Interceptor())
		}, []string{"not the server's Observer"}},
		{"neither", func(*admin.Metrics, *server.Config) {}, []string{"not the server's Observer", "Interceptor is not installed"}},
	} {
		m := admin.NewMetrics(nil)
		cfg := server.Config{Logger: quiet}
		tc.install(m, &cfg)
		srv, err := server.New(cfg, testHandler())
		if err != nil {
			t.Fatal(err)
		}
		var logs syncbuf.Buffer
		a, err := admin.New(admin.Config{Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, srv)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		srv.Close()
		if n := strings.Count(logs.String(), "level=WARN"); n != len(tc.warn) {
			t.Errorf("%s: %d warnings, want %d:\n%s", tc.name, n, len(tc.warn), logs.String())
		}
		for _, w := range tc.warn {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("%s: no warning %q:\n%s", tc.name, w, logs.String())
			}
		}
	}
}

// gather returns the exposition of m's registry, as /metrics serves it.
func gather(t *testing.T, m *admin.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("gathering: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestConnzTLS: a connection served over TLS says so in /connz and on the
// status page.
func TestConnzTLS(t *testing.T) {
	cert, pool := serverCert(t)
	e := startEnv(t, envOpts{server: func(c *server.Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	}})
	e.client(client.Config{TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}})
	cz := decode[admin.ConnzJSON](t, e.get("/connz"))
	if len(cz.Connections) != 1 || !cz.Connections[0].TLS || cz.Connections[0].TCP == nil {
		t.Fatalf("connz over TLS: %+v", cz.Connections)
	}
	if r := e.get("/connz"); !strings.Contains(r.body, `"tls": true`) {
		t.Fatalf("connz JSON lacks \"tls\": true: %s", r.body)
	}
	cells := firstRowCells(t, e.get("/").body)
	if got := cells[len(cells)-2]; got != "yes" {
		t.Fatalf("the status page's TLS cell is %q, want yes (row %q)", got, cells)
	}
}

// serverCert returns a certificate for 127.0.0.1, issued by a CA made for
// the test, and a pool trusting that CA.
func serverCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca, err := tlsfiles.NewCA("tcppro admin test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tlsfiles.Leaf{CommonName: "tcppro admin test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return cert, pool
}
