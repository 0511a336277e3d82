package admin_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/syncbuf"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

func TestHealthz(t *testing.T) {
	e := startEnv(t, envOpts{})
	r := e.get("/healthz")
	e.expect(r, 200, "text/plain")
	if r.body != "ok\n" {
		t.Fatalf("body %q", r.body)
	}
	if r.hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control %q", r.hdr.Get("Cache-Control"))
	}
	// HEAD is a GET without a body.
	e.expect(e.do("HEAD", "/healthz", nil), 200, "text/plain")
	// Liveness holds while not ready.
	e.srv.SetOffline(true)
	e.expect(e.get("/healthz"), 200, "text/plain")
}

func TestReadyzNotListening(t *testing.T) {
	e := startEnv(t, envOpts{noServe: true})
	r := e.get("/readyz")
	e.expect(r, 503, "text/plain")
	if r.body != "not ready: not listening\n" {
		t.Fatalf("body %q", r.body)
	}
}

func TestOfflineOnline(t *testing.T) {
	e := startEnv(t, envOpts{})
	c := e.client(client.Config{})
	r := e.get("/readyz")
	e.expect(r, 200, "text/plain")
	if r.body != "ready\n" {
		t.Fatalf("body %q", r.body)
	}

	// Offline: readiness flips at once, new connections are refused, the
	// open one is left alone.
	r = e.post("/admin/offline")
	e.expect(r, 200, "application/json")
	st := decode[map[string]any](t, r)
	if st["action"] != "offline" || st["ready"] != false || st["reason"] != "offline" {
		t.Fatalf("offline answered %v", st)
	}
	r = e.get("/readyz")
	e.expect(r, 503, "text/plain")
	if r.body != "not ready: offline\n" {
		t.Fatalf("body %q", r.body)
	}
	if code := readReject(t, e.svcAddr); code != wire.CodeShuttingDown {
		t.Fatalf("a new connection while offline got %v, want SHUTTING_DOWN", code)
	}
	if st := e.srv.Stats(); st.RejectedOffline != 1 || st.GoAways != 0 || st.Active != 1 {
		t.Fatalf("stats after offline: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "echo", nil); err != nil {
		t.Fatalf("the open connection should still serve: %v", err)
	}

	// Online again.
	r = e.post("/admin/online")
	e.expect(r, 200, "application/json")
	if st := decode[map[string]any](t, r); st["action"] != "online" || st["ready"] != true {
		t.Fatalf("online answered %v", st)
	}
	e.expect(e.get("/readyz"), 200, "text/plain")

	// Offline with drain: the open connection is told with GOAWAY.
	r = e.post("/admin/offline?drain=true")
	e.expect(r, 200, "application/json")
	r = e.get("/readyz")
	e.expect(r, 503, "text/plain")
	if r.body != "not ready: draining\n" {
		t.Fatalf("body %q", r.body)
	}
	if st := e.srv.Stats(); st.GoAways != 1 {
		t.Fatalf("GOAWAYs sent %d, want 1", st.GoAways)
	}
	e.expect(e.post("/admin/offline?drain=maybe"), 400, "text/plain")
	e.expect(e.post("/admin/online"), 200, "application/json")
	e.expect(e.get("/readyz"), 200, "text/plain")
}

func TestDrain(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.client(client.Config{})
	e.rawConns(2)
	waitActive(t, e, 3) // the client's connection and the two raw ones

	// A drain with a delay: not ready at once, GOAWAY later; online
	// before the delay is over cancels it.
	r := e.post("/admin/drain?delay=1h")
	e.expect(r, 202, "application/json")
	st := decode[map[string]any](t, r)
	if st["action"] != "drain" || st["ready"] != false || st["goaway_in_seconds"] != 3600.0 {
		t.Fatalf("drain answered %v", st)
	}
	e.expect(e.get("/readyz"), 503, "text/plain")
	e.expect(e.post("/admin/online"), 200, "application/json")
	e.expect(e.get("/readyz"), 200, "text/plain")
	if n := e.srv.Stats().GoAways; n != 0 {
		t.Fatalf("GOAWAYs %d after a cancelled drain", n)
	}

	// A drain without delay: GOAWAY on every connection at once.
	r = e.post("/admin/drain")
	e.expect(r, 202, "application/json")
	r = e.get("/readyz")
	if r.code != 503 || r.body != "not ready: draining\n" {
		t.Fatalf("readyz after drain: %d %q", r.code, r.body)
	}
	if n := e.srv.Stats().GoAways; n != 3 {
		t.Fatalf("GOAWAYs %d, want 3", n)
	}
	cz := decode[admin.ConnzJSON](t, e.get("/connz"))
	for _, c := range cz.Connections {
		if !c.GoingAway {
			t.Fatalf("connection %s not going away after a drain", c.Remote)
		}
	}

	// A short delay: the GOAWAY follows by itself.
	e.expect(e.post("/admin/online"), 200, "application/json")
	before := e.srv.Stats().Accepted
	e.rawConns(1)
	// The ConnOpened event rawConns waits for may be an earlier one (the
	// client's): wait for this connection itself before draining.
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().Accepted == before {
		if time.Now().After(deadline) {
			t.Fatal("the new connection was never accepted")
		}
		pollPause()
	}
	e.expect(e.post("/admin/drain?delay=20ms"), 202, "application/json")
	r = e.get("/readyz")
	if r.code != 503 {
		t.Fatalf("readyz during the drain delay: %d %q", r.code, r.body)
	}
	deadline = time.Now().Add(5 * time.Second)
	for e.srv.Stats().GoAways < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no GOAWAY after the drain delay: %+v", e.srv.Stats())
		}
		pollPause()
	}

	for _, bad := range []string{"-1s", "soon", "2h"} {
		r := e.post("/admin/drain?delay=" + bad)
		e.expect(r, 400, "text/plain")
		if !strings.Contains(r.body, "delay") {
			t.Fatalf("error %q does not name the parameter", r.body)
		}
	}
}

// pollPause is the pause between two checks of a condition that the test
// waits for with a deadline (a timer firing on its own in the code under
// test, which nothing else can signal).
// waitActive waits until the server holds n connections.
func waitActive(t *testing.T, e *env, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().Active != n {
		if time.Now().After(deadline) {
			t.Fatalf("the server holds %d connections, want %d", e.srv.Stats().Active, n)
		}
		pollPause()
	}
}

func pollPause() {
	t := time.NewTimer(2 * time.Millisecond)
	<-t.C
}

func TestMutatingEndpointsArePOSTOnly(t *testing.T) {
	e := startEnv(t, envOpts{})
	for _, p := range []string{"/admin/offline", "/admin/online", "/admin/drain"} {
		for _, m := range []string{"GET", "HEAD", "PUT", "DELETE"} {
			r := e.do(m, p, nil)
			if r.code != http.StatusMethodNotAllowed {
				t.Fatalf("%s %s: %d, want 405", m, p, r.code)
			}
			if allow := r.hdr.Get("Allow"); allow != "POST" {
				t.Fatalf("%s %s: Allow %q", m, p, allow)
			}
		}
	}
	if ready, _ := e.srv.Ready(); !ready {
		t.Fatal("a refused GET changed the state")
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/connz", "/statusz", "/"} {
		if r := e.post(p); r.code != http.StatusMethodNotAllowed {
			t.Fatalf("POST %s: %d, want 405", p, r.code)
		}
	}
	e.expect(e.get("/nothing-here"), 404, "")
}

func TestCrossOriginAndHostChecks(t *testing.T) {
	e := startEnv(t, envOpts{})
	// A browser page of another site cannot take the instance offline.
	r := e.do("POST", "/admin/offline", map[string]string{"Sec-Fetch-Site": "cross-site"})
	if r.code != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d, want 403", r.code)
	}
	r = e.do("POST", "/admin/offline", map[string]string{"Origin": "http://evil.example"})
	if r.code != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d, want 403", r.code)
	}
	if ready, _ := e.srv.Ready(); !ready {
		t.Fatal("a cross-origin POST changed the state")
	}
	// DNS rebinding: a loopback plane answers loopback names only.
	r = e.do("GET", "/connz", map[string]string{"Host": "evil.example:7421"})
	if r.code != http.StatusMisdirectedRequest {
		t.Fatalf("Host evil.example: %d, want 421", r.code)
	}
	for _, h := range []string{"localhost:7421", "127.0.0.1:7421", "[::1]:7421", "LOCALHOST", "status.localhost:7421"} {
		if r := e.do("GET", "/healthz", map[string]string{"Host": h}); r.code != 200 {
			t.Fatalf("Host %s: %d, want 200", h, r.code)
		}
	}
}

const goodToken = "s3cret-t0ken-0123456789abcdef"

func TestTokenRules(t *testing.T) {
	srv, err := server.New(server.Config{Logger: quiet}, testHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	// Not loopback without a token: refused.
	for _, addr := range []string{"0.0.0.0:7421", ":7421", "192.0.2.10:7421", "[::]:7421", "admin.example:7421"} {
		_, err := admin.New(admin.Config{Addr: addr, Logger: quiet}, srv)
		var ce *session.ConfigError
		if !errors.Is(err, admin.ErrTokenRequired) || !errors.As(err, &ce) || ce.Field != "Token" {
			t.Fatalf("Addr %s without a token: %v, want ErrTokenRequired naming Token", addr, err)
		}
	}
	// Loopback without a token: fine.
	for _, addr := range []string{"127.0.0.1:7421", "[::1]:7421", "localhost:7421", "127.1.2.3:7421"} {
		a, err := admin.New(admin.Config{Addr: addr, Logger: quiet, Metrics: admin.NewMetrics(nil)}, srv)
		if err != nil {
			t.Fatalf("Addr %s: %v", addr, err)
		}
		a.Close()
	}
	// Bad tokens are refused without being shown.
	for _, tok := range []string{"short", "has a space in it, 123456", "tab\there-0123456789"} {
		_, err := admin.New(admin.Config{Addr: "0.0.0.0:7421", Token: tok, Logger: quiet}, srv)
		var ce *session.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Token" {
			t.Fatalf("token %q: %v, want an error naming Token", tok, err)
		}
		if strings.Contains(err.Error(), tok) {
			t.Fatalf("the error shows the token: %v", err)
		}
	}
	// Not loopback with a token: fine.
	a, err := admin.New(admin.Config{Addr: "0.0.0.0:7421", Token: goodToken, Logger: quiet, Metrics: admin.NewMetrics(nil)}, srv)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	// A listener handed to Serve is checked too.
	a, err = admin.New(admin.Config{Logger: quiet, Metrics: admin.NewMetrics(nil)}, srv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Serve(publicListener{ln})
	if !errors.Is(err, admin.ErrTokenRequired) {
		t.Fatalf("Serve on a public listener without a token: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the refused listener was not closed: %v", err)
	}
	a.Close()
}

// publicListener is a loopback listener that says it listens on a public
// address.
type publicListener struct{ net.Listener }

func (publicListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 7421} }

func TestTokenRequiredOnMutatingEndpoints(t *testing.T) {
	e := startEnv(t, envOpts{admin: func(c *admin.Config) { c.Token = goodToken }})
	e.client(client.Config{})
	for _, p := range []string{"/admin/offline", "/admin/online", "/admin/drain"} {
		for name, hdr := range map[string]map[string]string{
			"no token":     nil,
			"wrong token":  {"Authorization": "Bearer not-the-token-0123456789"},
			"prefix":       {"Authorization": "Bearer " + goodToken[:len(goodToken)-1]},
			"basic scheme": {"Authorization": "Basic " + goodToken},
			"bare token":   {"Authorization": goodToken},
		} {
			r := e.do("POST", p, hdr)
			if r.code != http.StatusUnauthorized {
				t.Fatalf("POST %s with %s: %d, want 401", p, name, r.code)
			}
			if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: Bearer")
			}
		}
	}
	if ready, _ := e.srv.Ready(); !ready {
		t.Fatal("an unauthorized POST changed the state")
	}
	auth := map[string]string{"Authorization": "Bearer " + goodToken}
	e.expect(e.do("POST", "/admin/offline", auth), 200, "application/json")
	e.expect(e.get("/readyz"), 503, "text/plain")
	e.expect(e.do("POST", "/admin/online", map[string]string{"Authorization": "bearer " + goodToken}), 200, "application/json")
	e.expect(e.do("POST", "/admin/drain", auth), 202, "application/json")
	// Read-only endpoints stay open.
	for _, p := range []string{"/healthz", "/metrics", "/connz", "/statusz", "/"} {
		if r := e.get(p); r.code != 200 {
			t.Fatalf("GET %s: %d", p, r.code)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, goodToken) || strings.Contains(logs, goodToken[:12]) {
		t.Fatalf("the token appears in the logs:\n%s", logs)
	}
	if !strings.Contains(e.logs.String(), "unauthorized") {
		t.Fatalf("refusals are not logged:\n%s", e.logs.String())
	}
}

func TestConfigValidationNamesTheField(t *testing.T) {
	srv, err := server.New(server.Config{Logger: quiet}, testHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for field, cfg := range map[string]admin.Config{
		"Addr":            {Addr: "no-port"},
		"ConnzLimit":      {ConnzLimit: 50, ConnzMaxLimit: 10},
		"ConnzMaxLimit":   {ConnzMaxLimit: -1},
		"DrainDelay":      {DrainDelay: -time.Second},
		"RefreshInterval": {RefreshInterval: time.Millisecond},
		"WriteTimeout":    {WriteTimeout: -1},
	} {
		cfg.Logger = quiet
		_, err := admin.New(cfg, srv)
		var ce *session.ConfigError
		if !errors.As(err, &ce) || ce.Field != field {
			t.Fatalf("%s: got %v", field, err)
		}
	}
	// The effective configuration logs no token.
	var logs syncbuf.Buffer
	cfg := admin.Config{Token: goodToken, Logger: quiet}
	slog.New(slog.NewTextHandler(&logs, nil)).Info("admin", "config", cfg)
	if strings.Contains(logs.String(), goodToken) || !strings.Contains(logs.String(), "token_set=true") {
		t.Fatalf("config log: %s", logs.String())
	}
	// A Metrics serves one server.
	m := admin.NewMetrics(nil)
	if err := m.Attach(srv); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(srv); err != nil {
		t.Fatalf("attaching the same server again: %v", err)
	}
	other, err := server.New(server.Config{Logger: quiet}, testHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := admin.New(admin.Config{Metrics: m, Logger: quiet}, other); err == nil {
		t.Fatal("a Metrics attached to two servers")
	}
}

func TestListenAndShutdown(t *testing.T) {
	srv, err := server.New(server.Config{Logger: quiet}, testHandler())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	a, err := admin.New(admin.Config{Addr: "127.0.0.1:0", Logger: quiet}, srv)
	if err != nil {
		t.Fatal(err)
	}
	if a.Config().Addr != "127.0.0.1:0" || a.Config().ConnzMaxLimit != admin.DefaultConnzMaxLimit {
		t.Fatalf("effective config %+v", a.Config())
	}
	ln, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ln) }()
	res, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if res.StatusCode != 200 {
		t.Fatalf("healthz %d", res.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the admin port still accepts after Shutdown")
	}
}

func TestStatusz(t *testing.T) {
	e := startEnv(t, envOpts{server: func(c *server.Config) { c.Workers = 7 }})
	e.client(client.Config{})
	r := e.get("/statusz")
	e.expect(r, 200, "application/json")
	st := decode[struct {
		Ready  bool           `json:"ready"`
		Reason *string        `json:"reason"`
		Addr   string         `json:"addr"`
		Uptime float64        `json:"uptime_seconds"`
		Stats  map[string]int `json:"stats"`
	}](t, r)
	if !st.Ready || st.Reason != nil || st.Uptime <= 0 {
		t.Fatalf("statusz %+v", st)
	}
	for k, want := range map[string]int{
		"connections_open": 1, "connections_accepted": 1, "requests": 1, "workers": 7, "workers_busy": 0,
		"in_flight": 0, "overloaded": 0, "refused_in_flight": 0, "refused_memory": 0, "control_floods": 0,
	} {
		if got, ok := st.Stats[k]; !ok || got != want {
			t.Fatalf("stats[%s] = %d (present %v), want %d; %s", k, got, ok, want, r.body)
		}
	}
	// bytes_out counts bytes the kernel took, after the write returns: the
	// client may read the answer a moment before the server counts it.
	deadline := time.Now().Add(5 * time.Second)
	for st.Stats["bytes_out"] <= 0 && time.Now().Before(deadline) {
		pollPause()
		st.Stats = decode[struct {
			Stats map[string]int `json:"stats"`
		}](t, e.get("/statusz")).Stats
	}
	if _, ok := st.Stats["memory_held_bytes"]; !ok {
		t.Fatalf("stats lack memory_held_bytes: %v", st.Stats)
	}
	for _, k := range []string{"frames_in", "frames_out", "bytes_in", "bytes_out"} {
		if st.Stats[k] <= 0 {
			t.Fatalf("stats[%s] = %d", k, st.Stats[k])
		}
	}
}

func TestConnz(t *testing.T) {
	e := startEnv(t, envOpts{admin: func(c *admin.Config) { c.ConnzLimit = 2; c.ConnzMaxLimit = 3 }})
	e.client(client.Config{})
	raw := e.rawConns(4) // 5 connections in all

	r := e.get("/connz")
	e.expect(r, 200, "application/json")
	// Shape: every documented field is there.
	shape := decode[map[string]any](t, r)
	for _, k := range []string{"total", "offset", "limit", "next_offset", "connections"} {
		if _, ok := shape[k]; !ok {
			t.Fatalf("connz lacks %q: %s", k, r.body)
		}
	}
	row := shape["connections"].([]any)[0].(map[string]any)
	for _, k := range []string{"remote", "local", "age_seconds", "since_last_frame_seconds", "in_flight", "bytes_in",
		"bytes_out", "frames_in", "frames_out", "heartbeat_rtt_seconds", "going_away", "memory_held_bytes", "tls", "tcp"} {
		if _, ok := row[k]; !ok {
			t.Fatalf("a connection lacks %q: %v", k, row)
		}
	}
	tcp := row["tcp"].(map[string]any)
	for _, k := range []string{"state", "rtt_seconds", "rttvar_seconds", "rto_seconds", "retransmits", "total_retrans", "unacked", "lost", "notsent_bytes", "snd_cwnd"} {
		if _, ok := tcp[k]; !ok {
			t.Fatalf("tcp lacks %q: %v", k, tcp)
		}
	}
	if tcp["state"] != "ESTABLISHED" {
		t.Fatalf("tcp state %v", tcp["state"])
	}

	// The default page: ConnzLimit rows, oldest first (the client's).
	cz := decode[admin.ConnzJSON](t, r)
	if cz.Total != 5 || cz.Limit != 2 || len(cz.Connections) != 2 || cz.NextOffset == nil || *cz.NextOffset != 2 {
		t.Fatalf("default page: %s", r.body)
	}
	first := cz.Connections[0]
	if first.FramesIn == 0 || first.BytesIn == 0 || first.BytesOut == 0 || first.Local != e.svcAddr || first.TLS {
		t.Fatalf("the client's connection: %+v", first)
	}
	// Paging walks the table without repeats.
	seen := map[string]bool{}
	offset := 0
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		cz := decode[admin.ConnzJSON](t, e.get("/connz?limit=2&offset="+strconv.Itoa(offset)))
		for _, c := range cz.Connections {
			if seen[c.Remote] {
				t.Fatalf("%s twice", c.Remote)
			}
			seen[c.Remote] = true
		}
		if cz.NextOffset == nil {
			break
		}
		offset = *cz.NextOffset
	}
	if len(seen) != 5 {
		t.Fatalf("paging saw %d connections, want 5", len(seen))
	}
	for _, rc := range raw {
		if !seen[rc.LocalAddr().String()] {
			t.Fatalf("%s missing from the table", rc.LocalAddr())
		}
	}
	// The hard cap: a larger limit is lowered to ConnzMaxLimit.
	cz = decode[admin.ConnzJSON](t, e.get("/connz?limit=100000"))
	if cz.Limit != 3 || len(cz.Connections) != 3 || cz.Total != 5 {
		t.Fatalf("limit above the cap: limit %d, %d rows of %d", cz.Limit, len(cz.Connections), cz.Total)
	}
	// Past the end, and an empty page.
	cz = decode[admin.ConnzJSON](t, e.get("/connz?offset=50"))
	if len(cz.Connections) != 0 || cz.NextOffset != nil || cz.Total != 5 {
		t.Fatalf("past the end: %+v", cz)
	}
	if r := e.get("/connz?offset=50"); !strings.Contains(r.body, `"connections": []`) {
		t.Fatalf("an empty page must be an empty list, not null: %s", r.body)
	}
	cz = decode[admin.ConnzJSON](t, e.get("/connz?limit=0"))
	if len(cz.Connections) != 0 || cz.Total != 5 {
		t.Fatalf("limit=0: %+v", cz)
	}
	for _, q := range []string{"limit=-1", "limit=x", "offset=-3", "offset=1e3"} {
		r := e.get("/connz?" + q)
		e.expect(r, 400, "text/plain")
		if name := strings.SplitN(q, "=", 2)[0]; !strings.Contains(r.body, name) {
			t.Fatalf("%s: error %q does not name the parameter", q, r.body)
		}
	}
}

func TestPprof(t *testing.T) {
	e := startEnv(t, envOpts{})
	r := e.get("/debug/pprof/")
	e.expect(r, 200, "text/html")
	if !strings.Contains(r.body, "goroutine") {
		t.Fatalf("pprof index: %s", r.body)
	}
	e.expect(e.get("/debug/pprof/goroutine?debug=1"), 200, "text/plain")
	e.expect(e.get("/debug/pprof/heap"), 200, "application/octet-stream")
	e.expect(e.get("/debug/pprof/trace?seconds=0.05"), 200, "application/octet-stream")
	e.expect(e.get("/debug/pprof/symbol"), 200, "text/plain")
	// The command line may carry a token given as a flag: not served.
	e.expect(e.get("/debug/pprof/cmdline"), 404, "")
}
