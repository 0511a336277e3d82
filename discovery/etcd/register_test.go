package etcd_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcppro/tcppro/discovery/etcd"
	"github.com/tcppro/tcppro/internal/etcdtest"
	"github.com/tcppro/tcppro/internal/syncbuf"
)

// fastRegister has a short TTL and quick retries.
func fastRegister(logs *syncbuf.Buffer) etcd.RegisterOptions {
	o := etcd.RegisterOptions{TTL: 2 * time.Second, Timeout: 500 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	o.Logger = slog.New(slog.DiscardHandler)
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o
}

func register(t *testing.T, target, addr string, o etcd.RegisterOptions) *etcd.Registration {
	t.Helper()
	r, err := etcd.Register(target, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func waitRegistered(t *testing.T, r *etcd.Registration, want bool, d time.Duration) {
	t.Helper()
	if !etcdtest.Deadline(context.Background(), d, func() bool { return r.Registered() == want }) {
		t.Fatalf("Registered() stayed %v for %v; stats %+v", !want, d, r.Stats())
	}
}

func hasKey(c *clientv3.Client, prefix, key string) bool {
	return slices.Contains(etcdtest.Keys(c, prefix), key)
}

// TestRegistration: the key is PREFIX/ADDR/ID with value ADDR, the
// resolver sees it, a key deleted by hand is put back, Deregister removes
// it (twice is harmless), Start puts it back, Close removes it.
func TestRegistration(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	var logs syncbuf.Buffer
	o := fastRegister(&logs)
	o.InstanceID = "one"
	r := register(t, e.Target("svc"), "127.0.0.1:7420", o)
	if r.Key() != "/svc/127.0.0.1:7420/one" || r.String() != "etcd://"+e.Endpoint+"/svc/127.0.0.1:7420/one" {
		t.Fatalf("Key() = %q, String() = %q", r.Key(), r)
	}
	waitRegistered(t, r, true, 5*time.Second)
	w := watch(t, e.Target("svc"), fastOptions)
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420")

	before := r.Stats()
	del(t, c, r.Key())
	if !etcdtest.Deadline(context.Background(), 5*time.Second, func() bool {
		return r.Stats().Registrations > before.Registrations && hasKey(c, "/svc/", r.Key())
	}) {
		t.Fatalf("the deleted key was not put back; stats %+v\n%s", r.Stats(), &logs)
	}
	waitRegistered(t, r, true, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Registered() || hasKey(c, "/svc/", r.Key()) {
		t.Fatalf("after Deregister: Registered %v, keys %v", r.Registered(), etcdtest.Keys(c, "/svc/"))
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	w.waitAddrs(t, 5*time.Second)
	r.Start()
	waitRegistered(t, r, true, 5*time.Second)
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	r.Start() // after Close: nothing
	if r.Registered() || len(etcdtest.Keys(c, "/svc/")) != 0 {
		t.Fatalf("after Close: Registered %v, keys %v", r.Registered(), etcdtest.Keys(c, "/svc/"))
	}
	st := r.Stats()
	if st.Attempts < 3 || st.Registrations < 3 || st.Failures < 1 {
		t.Errorf("stats %+v: want at least 3 attempts and registrations, and the deleted key counted as a failure", st)
	}
	if !strings.Contains(logs.String(), "etcd: registered") || !strings.Contains(logs.String(), "etcd: deregistered") {
		t.Errorf("logs lack registered/deregistered:\n%s", &logs)
	}
}

// TestRegistrationSurvivesEtcdOutage: etcd stopped for longer than the
// TTL; the registration reports it, keeps trying with backoff, and is
// back when etcd is.
func TestRegistrationSurvivesEtcdOutage(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	var logs syncbuf.Buffer
	r := register(t, e.Target("svc"), "127.0.0.1:7420", fastRegister(&logs))
	waitRegistered(t, r, true, 5*time.Second)

	e.Stop()
	waitRegistered(t, r, false, 5*time.Second)
	if err := r.Stats().Err; err == nil {
		t.Error("Stats().Err is nil while etcd is down")
	} else if ee := (*etcd.Error)(nil); !errors.As(err, &ee) {
		t.Errorf("Stats().Err = %v, want an *etcd.Error", err)
	}
	// The outage lasts beyond the TTL (2s): the lease may expire.
	f0 := r.Stats().Failures
	time.Sleep(3 * time.Second) // the outage
	failures := r.Stats().Failures - f0
	// Retries back off from 50ms doubling to 500ms: about 10 in 3s.
	if failures < 2 || failures > 20 {
		t.Errorf("%d failures in 3s of outage: want a few (retrying, with backoff)", failures)
	}
	e.Restart()
	waitRegistered(t, r, true, 10*time.Second)
	if !hasKey(c, "/svc/", r.Key()) {
		t.Fatalf("Registered() but key %s is missing: %v", r.Key(), etcdtest.Keys(c, "/svc/"))
	}
	if n := strings.Count(logs.String(), "level=WARN"); n > 3 {
		t.Errorf("%d warnings for one outage:\n%s", n, &logs)
	}
}

// TestZeroDowntimeRestart: a new instance on the same address registers
// its own key; the old one deregistering leaves the address in the set.
func TestZeroDowntimeRestart(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	w := watch(t, e.Target("svc"), fastOptions)
	old := register(t, e.Target("svc"), "127.0.0.1:7420", fastRegister(nil))
	waitRegistered(t, old, true, 5*time.Second)
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420")
	nu := register(t, e.Target("svc"), "127.0.0.1:7420", fastRegister(nil))
	waitRegistered(t, nu, true, 5*time.Second)
	if old.Key() == nu.Key() {
		t.Fatalf("two instances share key %s", old.Key())
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	put(t, c, "/svc/marker", "127.0.0.2:7420") // after the delete: once seen, the delete was too
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420", "127.0.0.2:7420")
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sets[1:] {
		if !slices.Contains(s.Addrs, "127.0.0.1:7420") {
			t.Errorf("the address left the set during the restart: %+v", s)
		}
	}
}

// TestRegistrationStartsWithoutEtcd: Register does not wait for etcd;
// the key appears once etcd is there.
func TestRegistrationStartsWithoutEtcd(t *testing.T) {
	e := etcdtest.Start(t)
	e.Stop()
	r := register(t, e.Target("svc"), "127.0.0.1:7420", fastRegister(nil))
	if !etcdtest.Deadline(context.Background(), 5*time.Second, func() bool { return r.Stats().Failures > 0 }) {
		t.Fatal("no failure counted with etcd down")
	}
	if r.Registered() {
		t.Fatal("Registered() with etcd down")
	}
	e.Restart()
	waitRegistered(t, r, true, 10*time.Second)
}

// TestRevokedLeaseIsReplaced: a lease lost (revoked by hand here; expired
// after an outage in production) takes the key with it; the registration
// grants a new lease and puts the key back.
func TestRevokedLeaseIsReplaced(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	r := register(t, e.Target("svc"), "127.0.0.1:7420", fastRegister(nil))
	waitRegistered(t, r, true, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := c.Get(ctx, r.Key())
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", r.Key(), g, err)
	}
	lease := clientv3.LeaseID(g.Kvs[0].Lease)
	if _, err := c.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if !etcdtest.Deadline(context.Background(), 5*time.Second, func() bool {
		g, err := c.Get(ctx, r.Key())
		return err == nil && len(g.Kvs) == 1 && clientv3.LeaseID(g.Kvs[0].Lease) != lease
	}) {
		t.Fatalf("the key was not put back with a new lease; stats %+v", r.Stats())
	}
	waitRegistered(t, r, true, 5*time.Second)
}
