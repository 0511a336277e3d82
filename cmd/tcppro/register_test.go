package main

// tcppro serve --register against a real etcd (internal/etcdtest; skipped
// without the etcd binary, failed then with TCPPRO_ETCD_REQUIRE=1).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/discovery/etcd"
	"github.com/tcppro/tcppro/internal/etcdtest"
	"github.com/tcppro/tcppro/wire"
)

func waitKeys(t *testing.T, c *clientv3.Client, prefix string, n int, d time.Duration) []string {
	t.Helper()
	var ks []string
	if !etcdtest.Deadline(context.Background(), d, func() bool { ks = etcdtest.Keys(c, prefix); return len(ks) == n }) {
		t.Fatalf("after %v, %d keys under %s, want %d: %v", d, len(ks), prefix, n, ks)
	}
	return ks
}

func httpDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServeRegister: the service registers itself once it listens;
// `tcppro call --target etcd://...` finds it; a drain deletes the key
// before the client receives GOAWAY; online puts it back; SIGTERM deletes
// it before exiting.
func TestServeRegister(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := startServe(t, "--admin", adminAddr, "--register", e.Target("svc/echo"), "--register-ttl", "2s")
	ks := waitKeys(t, c, "/svc/echo/", 1, 10*time.Second)
	if !strings.HasPrefix(ks[0], "/svc/echo/"+s.addr+"/") {
		t.Fatalf("key %s, want /svc/echo/%s/ID", ks[0], s.addr)
	}
	// The key is in etcd a moment before the registration hears so.
	var code int
	var body string
	if !etcdtest.Deadline(context.Background(), 5*time.Second, func() bool {
		code, body = httpDo(t, "GET", "http://"+adminAddr+"/readyz")
		return code == 200 && strings.Contains(body, "\nregistered: etcd://")
	}) {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if _, body := httpDo(t, "GET", "http://"+adminAddr+"/metrics"); !strings.Contains(body, "tcppro_registered 1\n") {
		t.Error("/metrics lacks tcppro_registered 1")
	}
	if out, err := tcppro("call", "--target", e.Target("svc/echo"), "hello").CombinedOutput(); err != nil || !strings.Contains(string(out), "\tok\t") {
		t.Fatalf("call --target %s: %v\n%s", e.Target("svc/echo"), err, out)
	}

	// A client connection, then a drain: when GOAWAY arrives the key is
	// already gone.
	nc, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fr := wire.NewFramer(nc, nc)
	if _, err := fr.ClientHandshake(wire.Hello{}); err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "POST", "http://"+adminAddr+"/admin/drain"); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY after the drain: %v", err)
		}
		if f.Type == wire.TypeGoAway {
			break
		}
	}
	if ks := etcdtest.Keys(c, "/svc/echo/"); len(ks) != 0 {
		t.Fatalf("GOAWAY received while the key was still registered: %v", ks)
	}
	if code, body := httpDo(t, "GET", "http://"+adminAddr+"/readyz"); code != 503 || !strings.Contains(body, "not registered") {
		t.Errorf("/readyz while draining: %d %q", code, body)
	}
	httpDo(t, "POST", "http://"+adminAddr+"/admin/online")
	waitKeys(t, c, "/svc/echo/", 1, 10*time.Second)

	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Fatalf("serve exited with %v\n%s", err, s.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if ks := etcdtest.Keys(c, "/svc/echo/"); len(ks) != 0 {
		t.Fatalf("key left after SIGTERM: %v", ks)
	}
	if logs := s.logs.String(); strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("serve warned:\n%s", logs)
	}
}

// TestServeKilledLeavesRegistry: a `tcppro serve --register` killed with
// SIGKILL (no deregistration) leaves the resolver's set within the TTL +
// 2s.
func TestServeKilledLeavesRegistry(t *testing.T) {
	e := etcdtest.Start(t)
	const ttl = 2 * time.Second
	s := startServe(t, "--register", e.Target("svc"), "--register-ttl", ttl.String())
	r, err := etcd.NewResolver(e.Target("svc"), discovery.Options{Refresh: time.Second, MinRefresh: 100 * time.Millisecond, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sets := make(chan discovery.Set, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, func(s discovery.Set) { sets <- s }) }()
	defer func() { cancel(); <-done }()
	waitSet := func(want []string, d time.Duration) time.Duration {
		start := time.Now()
		deadline := time.After(d)
		for {
			select {
			case got := <-sets:
				if got.Err == nil && slices.Equal(got.Addrs, want) {
					return time.Since(start)
				}
			case <-deadline:
				t.Fatalf("no set %v within %v", want, d)
			}
		}
	}
	waitSet([]string{s.addr}, 10*time.Second)
	s.cmd.Process.Kill()
	took := waitSet(nil, ttl+2*time.Second)
	t.Logf("a killed instance left the set %v after SIGKILL (TTL %v)", took.Round(time.Millisecond), ttl)
}

// TestServeWithoutEtcd: an unreachable registry does not stop the service
// or its readiness; /readyz says it is not registered.
func TestServeWithoutEtcd(t *testing.T) {
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	registry := fmt.Sprintf("etcd://127.0.0.1:%d/svc", freePort(t)) // nothing listens
	s := startServe(t, "--admin", adminAddr, "--register", registry)
	if out, err := tcppro("call", "--addr", s.addr, "hello").CombinedOutput(); err != nil {
		t.Fatalf("call: %v\n%s", err, out)
	}
	var code int
	var body string
	if !etcdtest.Deadline(context.Background(), 10*time.Second, func() bool {
		code, body = httpDo(t, "GET", "http://"+adminAddr+"/readyz")
		return strings.Contains(body, "not registered: ") && strings.Contains(body, "deadline")
	}) || code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if _, m := httpDo(t, "GET", "http://"+adminAddr+"/metrics"); !strings.Contains(m, "tcppro_registered 0\n") || strings.Contains(m, "tcppro_registration_failures_total 0\n") {
		t.Errorf("/metrics: want tcppro_registered 0 and failures counted")
	}
}

func TestServeRegisterFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--register", "etcd://127.0.0.1:2379"}, "--register"},
		{[]string{"--register", "etcd://127.0.0.1:2379/svc", "--register-ttl", "500ms"}, "--register-ttl"},
		{[]string{"--register", "etcd://127.0.0.1:2379/svc", "--listen", "0.0.0.0:7420"}, "--register-addr"},
	} {
		out, err := tcppro(append([]string{"serve", "--admin", ""}, tc.args...)...).CombinedOutput()
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("serve %v: %v, want exit 2 naming %s:\n%s", tc.args, err, tc.want, out)
		}
	}
}

// TestServeUpgradeKeepsRegistration: across SIGHUP upgrades the address
// never leaves the registry: the new process's key is put before the old
// process deletes its own, so clients watching the prefix keep the server
// (and their connections to it).
func TestServeUpgradeKeepsRegistration(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	u := startUpgradable(t, os.Args[0], "--register", e.Target("svc/up"), "--register-ttl", "2s", "--shutdown-timeout", "10s")
	ks := waitKeys(t, c, "/svc/up/", 1, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "/svc/up/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	wch := c.Watch(ctx, "/svc/up/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	const upgrades = 3
	for range upgrades {
		u.upgrade()
	}
	keys := map[string]bool{ks[0]: true}
	var seen []string
	for puts, dels := 0, 0; puts < upgrades || dels < upgrades; {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				seen = append(seen, ev.Type.String()+" "+k)
				if ev.Type == clientv3.EventTypeDelete {
					dels++
					delete(keys, k)
				} else {
					puts++
					keys[k] = true
				}
				if len(keys) == 0 {
					t.Errorf("the address left the registry during an upgrade: %q", seen)
				}
			}
		case <-ctx.Done():
			t.Fatalf("events so far: %q", seen)
		}
	}
	u.stop()
}
