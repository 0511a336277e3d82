package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// requireTools reports whether a missing browser or promtool fails the
// test instead of skipping it (CI sets TCPPRO_ADMIN_REQUIRE_BROWSER=1).
func requireTools() bool { return os.Getenv("TCPPRO_ADMIN_REQUIRE_BROWSER") == "1" }

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireTools() {
		t.Fatal(msg + " (TCPPRO_ADMIN_REQUIRE_BROWSER=1)")
	}
	t.Skip(msg)
}

// exercise drives the server through the events every metric counts: calls
// that succeed, fail and name no method; a connection refused over the
// cap; one reset by the peer; answered heartbeats.
func exercise(t *testing.T, e *env) *client.Client {
	t.Helper()
	c := e.client(client.Config{MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if _, err := c.Call(ctx, "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Call(ctx, "fail", nil); err == nil {
		t.Fatal("fail did not fail")
	}
	if _, err := c.Call(ctx, "no-such-method", nil); err == nil {
		t.Fatal("an unknown method did not fail")
	}
	// A peer that resets its connection: a TCP error.
	raw := e.rawConns(1)[0]
	if err := raw.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	select {
	case err := <-e.obs.closed:
		if admin.DeadPeerCause(err) != admin.CauseTCPError {
			t.Fatalf("a reset connection ended with %v, classified %q", err, admin.DeadPeerCause(err))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reset connection did not close")
	}
	// Over the cap (MaxConns 2 in these tests: the client and one more).
	e.rawConns(1)
	readReject(t, e.svcAddr)
	// A heartbeat answered.
	select {
	case <-e.obs.rtt:
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat round trip")
	}
	e.m.ConnRejected(server.RejectPortPolicy)
	return c
}

func metricsEnv(t *testing.T) *env {
	return startEnv(t, envOpts{server: func(c *server.Config) {
		c.MaxConns = 2
		// PINGs at once, so that the client answers one soon; the raw
		// peers never answer, and must outlive the test.
		c.Session.HeartbeatInterval = 20 * time.Millisecond
		c.Session.HeartbeatTimeout = time.Minute
	}})
}

func TestMetrics(t *testing.T) {
	e := metricsEnv(t)
	c := exercise(t, e)
	e.m.Registry().MustRegister(admin.ClientCollector(c))
	r := e.get("/metrics")
	e.expect(r, 200, "text/plain")
	if !strings.Contains(r.hdr.Get("Content-Type"), "version=0.0.4") {
		t.Fatalf("Content-Type %q", r.hdr.Get("Content-Type"))
	}
	body := r.body
	for _, want := range []string{
		"tcppro_connections_open 2",
		"tcppro_connections_accepted_total 3",
		`tcppro_connections_rejected_total{reason="busy"} 1`,
		`tcppro_connections_rejected_total{reason="offline"} 0`,
		`tcppro_connections_rejected_total{reason="accept_error"} 0`,
		`tcppro_connections_rejected_total{reason="port_policy"} 1`,
		`tcppro_dead_peers_total{cause="heartbeat"} 0`,
		`tcppro_dead_peers_total{cause="write_timeout"} 0`,
		`tcppro_dead_peers_total{cause="control_flood"} 0`,
		`tcppro_dead_peers_total{cause="tcp_error"} 1`,
		`tcppro_client_dead_peers_total{cause="heartbeat"} 0`,
		`tcppro_client_dead_peers_total{cause="write_timeout"} 0`,
		"tcppro_client_ejections_total 0",
		"tcppro_client_ejection_returns_total 0",
		`tcppro_client_endpoints{state="ready"} 1`,
		`tcppro_client_endpoints{state="ejected"} 0`,
		"tcppro_client_balancer_panic 0",
		"tcppro_client_endpoint_ejected",
		"tcppro_client_endpoint_in_flight",
		"tcppro_client_endpoint_latency_seconds",
		"tcppro_client_endpoint_calls_total",
		`tcppro_frames_total{direction="in"}`,
		`tcppro_frames_total{direction="out"}`,
		`tcppro_bytes_total{direction="in"}`,
		`tcppro_bytes_total{direction="out"}`,
		"tcppro_calls_in_flight 0",
		"tcppro_requests_total 6",
		"tcppro_requests_overloaded_total 0",
		`tcppro_requests_refused_total{reason="workers"} 0`,
		`tcppro_requests_refused_total{reason="in_flight"} 0`,
		`tcppro_requests_refused_total{reason="memory"} 0`,
		"tcppro_memory_held_bytes",
		"tcppro_memory_budget_bytes",
		"tcppro_workers_busy 0",
		"tcppro_workers 1024",
		"tcppro_goaways_sent_total 0",
		"tcppro_ready 1",
		`tcppro_readiness_state{state="ready"} 1`,
		`tcppro_readiness_state{state="offline"} 0`,
		`tcppro_handler_duration_seconds_count{code="OK",method="echo"} 4`,
		`tcppro_handler_duration_seconds_count{code="APPLICATION",method="fail"} 1`,
		`tcppro_handler_duration_seconds_count{code="UNKNOWN_METHOD",method="unknown"} 1`,
		`tcppro_handler_duration_seconds_bucket{code="OK",method="echo",le="+Inf"} 4`,
		"tcppro_heartbeat_rtt_seconds_bucket",
		"tcppro_connection_duration_seconds_count 1",
		"tcppro_client_dials_total 1",
		"tcppro_client_dial_failures_total 0",
		"tcppro_client_reconnects_total 0",
		"tcppro_client_goaways_received_total 0",
		"tcppro_client_retries_total 0",
		"tcppro_client_retries_throttled_total 0",
		"go_goroutines",
		"process_open_fds",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") && !strings.Contains(body, want+"{") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(body, "tcppro_"))
	}
	if strings.Contains(body, "promhttp_") {
		t.Error("the handler instruments itself (promhttp_*): not wanted")
	}

	// Readiness follows the state, and GOAWAYs are counted.
	e.expect(e.post("/admin/offline?drain=true"), 200, "application/json")
	body = e.get("/metrics").body
	for _, want := range []string{"tcppro_ready 0", `tcppro_readiness_state{state="draining"} 1`, `tcppro_readiness_state{state="ready"} 0`, "tcppro_goaways_sent_total 2"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("after drain, /metrics lacks %q", want)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPromtool has Prometheus's own linter check the exposition.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		skipOrFail(t, "promtool not found (Debian package: prometheus)")
	}
	e := metricsEnv(t)
	c := exercise(t, e)
	e.m.Registry().MustRegister(admin.ClientCollector(c))
	body := e.get("/metrics").body
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestDeadPeerCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{session.ErrPeerDead, admin.CauseHeartbeat},
		{fmt.Errorf("wrapped: %w", session.ErrPeerDead), admin.CauseHeartbeat},
		{session.ErrWriteTimeout, admin.CauseWriteTimeout},
		{session.ErrControlFlood, admin.CauseControlFlood},
		{fmt.Errorf("%w: read: %w", session.ErrConnClosed, syscall.ECONNRESET), admin.CauseTCPError},
		{fmt.Errorf("%w: read: %w", session.ErrConnClosed, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}), admin.CauseTCPError},
		{fmt.Errorf("%w: write: %w", session.ErrConnClosed, &net.OpError{Op: "write", Err: syscall.EPIPE}), admin.CauseTCPError},
		{fmt.Errorf("%w: read: %v", session.ErrConnClosed, syscall.ECONNRESET), ""}, // the errno is not wrapped: text is not parsed
		{fmt.Errorf("%w: by the peer", session.ErrConnClosed), ""},
		{session.ErrConnClosed, ""},
		{server.ErrMaxAge, ""},
		{errors.New("connection reset by peer"), ""}, // not a connection's error
	} {
		if got := admin.DeadPeerCause(tc.err); got != tc.want {
			t.Errorf("DeadPeerCause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestMethodLabelsAreBounded(t *testing.T) {
	m := admin.NewMetrics(nil)
	ic := m.Interceptor()
	ok := server.HandlerFunc(func(context.Context, *server.Request) ([]byte, error) { return nil, nil })
	for i := range admin.MaxMethodLabels + 50 {
		if _, err := ic(context.Background(), &server.Request{Method: fmt.Sprintf("m%d", i)}, ok); err != nil {
			t.Fatal(err)
		}
	}
	series := handlerSeries(t, m)
	if len(series) != admin.MaxMethodLabels+1 {
		t.Fatalf("%d method series, want %d (+ other)", len(series), admin.MaxMethodLabels)
	}
	if series["other/OK"] != 50 || series["m0/OK"] != 1 || series["m99/OK"] != 1 {
		t.Fatalf("series: other %d, m0 %d, m99 %d; want 50, 1, 1", series["other/OK"], series["m0/OK"], series["m99/OK"])
	}
}

// handlerSeries returns the counts of tcppro_handler_duration_seconds by
// "method/code".
func handlerSeries(t *testing.T, m *admin.Metrics) map[string]uint64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "tcppro_handler_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["method"]+"/"+labels["code"]] = s.GetHistogram().GetSampleCount()
		}
	}
	return out
}

// TestInterceptorOutcomes: the code label is the code the client is
// answered with, an unknown method is "unknown" whatever its name, and a
// handler's panic is recorded as INTERNAL and still reaches the server's
// recovery.
func TestInterceptorOutcomes(t *testing.T) {
	m := admin.NewMetrics(nil)
	ic := m.Interceptor()
	ctx := context.Background()
	for _, tc := range []struct {
		method string
		err    error
	}{
		{"a", nil},
		{"a", errors.New("plain")},
		{"a", fmt.Errorf("wrapped: %w", context.DeadlineExceeded)},
		{"a", server.Errorf(wire.CodeOverloaded, "refused by the handler")},
		{"invented-1", server.Errorf(wire.CodeUnknownMethod, "no such method")},
		{"invented-2", server.Errorf(wire.CodeUnknownMethod, "no such method")},
	} {
		h := server.HandlerFunc(func(context.Context, *server.Request) ([]byte, error) { return nil, tc.err })
		if _, err := ic(ctx, &server.Request{Method: tc.method}, h); !errors.Is(err, tc.err) {
			t.Fatalf("the interceptor changed the error: %v, want %v", err, tc.err)
		}
	}
	boom := server.HandlerFunc(func(context.Context, *server.Request) ([]byte, error) { panic("boom") })
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}()
		_, _ = ic(ctx, &server.Request{Method: "b"}, boom)
	}()
	want := map[string]uint64{"a/OK": 1, "a/APPLICATION": 1, "a/TIMEOUT": 1, "a/OVERLOADED": 1, "unknown/UNKNOWN_METHOD": 2, "b/INTERNAL": 1}
	got := handlerSeries(t, m)
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("series %v, want %v", got, want)
		}
	}
}

// TestRegistries: metrics on a caller's registry, and two clients told
// apart by a label.
func TestRegistries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := admin.NewMetrics(reg)
	if m.Registry() != admin.Registry(reg) {
		t.Fatal("Registry() is not the registry given")
	}
	e := startEnv(t, envOpts{})
	for _, name := range []string{"a", "b"} {
		c, err := client.New(client.Config{Addrs: []string{e.svcAddr}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		prometheus.WrapRegistererWith(prometheus.Labels{"client": name}, reg).MustRegister(admin.ClientCollector(c))
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "tcppro_client_dials_total" {
			n = len(mf.GetMetric())
		}
		if strings.HasPrefix(mf.GetName(), "go_") {
			t.Fatalf("a caller's registry got %s", mf.GetName())
		}
	}
	if n != 2 {
		t.Fatalf("%d tcppro_client_dials_total series, want 2", n)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering the server metrics twice did not panic")
		}
	}()
	admin.NewMetrics(reg)
}
