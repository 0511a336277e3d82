package etcd_test

// Tests against a real etcd (internal/etcdtest): they skip without the
// etcd binary, and fail then with TCPPRO_ETCD_REQUIRE=1.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/discovery/etcd"
	"github.com/tcppro/tcppro/internal/etcdtest"
)

// fastOptions make the resolver notice an outage and recover quickly.
var fastOptions = discovery.Options{Refresh: 500 * time.Millisecond, MinRefresh: 100 * time.Millisecond, Timeout: 400 * time.Millisecond}

func put(t *testing.T, c *clientv3.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, k, v); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func del(t *testing.T, c *clientv3.Client, k string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Delete(ctx, k); err != nil {
		t.Fatalf("delete %s: %v", k, err)
	}
}

// watcher runs a resolver and records its sets.
type watcher struct {
	r      *etcd.Resolver
	mu     sync.Mutex
	sets   []discovery.Set
	cancel context.CancelFunc
	done   chan struct{}
}

func watch(t *testing.T, target string, o discovery.Options) *watcher {
	t.Helper()
	r, err := etcd.NewResolver(target, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		r.Run(ctx, func(s discovery.Set) {
			w.mu.Lock()
			w.sets = append(w.sets, s)
			w.mu.Unlock()
		})
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

func (w *watcher) last() (discovery.Set, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.sets) == 0 {
		return discovery.Set{}, 0
	}
	return w.sets[len(w.sets)-1], len(w.sets)
}

// waitFor waits until the last set satisfies ok.
func (w *watcher) waitFor(t *testing.T, d time.Duration, what string, ok func(discovery.Set) bool) discovery.Set {
	t.Helper()
	var s discovery.Set
	if !etcdtest.Deadline(context.Background(), d, func() bool {
		var n int
		s, n = w.last()
		return n > 0 && ok(s)
	}) {
		t.Fatalf("after %v, no set with %s; last %+v", d, what, s)
	}
	return s
}

func (w *watcher) waitAddrs(t *testing.T, d time.Duration, addrs ...string) {
	t.Helper()
	w.waitFor(t, d, "addresses "+strings.Join(addrs, ","), func(s discovery.Set) bool {
		return s.Err == nil && slices.Equal(s.Addrs, addrs)
	})
}

// TestResolverFollowsPutsAndDeletes: the set follows puts and deletes
// under the prefix, sorted and deduplicated; values that are not
// addresses and keys outside the prefix are ignored.
func TestResolverFollowsPutsAndDeletes(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	put(t, c, "/svc/echo/b", "127.0.0.2:7420")
	put(t, c, "/svc/echo2/x", "127.0.0.9:7420") // another service: a prefix of the name only
	w := watch(t, e.Target("svc/echo"), discovery.Options{})
	w.waitAddrs(t, 5*time.Second, "127.0.0.2:7420")

	put(t, c, "/svc/echo/a", "127.0.0.1:7420")
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420", "127.0.0.2:7420")
	put(t, c, "/svc/echo/a2", "127.0.0.1:7420") // the same address under two keys
	put(t, c, "/svc/echo/junk", "not an address")
	put(t, c, "/svc/echo/c", "127.0.0.3:7420")
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420", "127.0.0.2:7420", "127.0.0.3:7420")
	del(t, c, "/svc/echo/a")
	put(t, c, "/svc/echo/d", "127.0.0.4:7420") // a marker: the delete above was applied before it
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420", "127.0.0.2:7420", "127.0.0.3:7420", "127.0.0.4:7420")
	del(t, c, "/svc/echo/a2")
	del(t, c, "/svc/echo/b")
	w.waitAddrs(t, 5*time.Second, "127.0.0.3:7420", "127.0.0.4:7420")
	w.stop()
	for i, s := range w.sets {
		if s.Err != nil {
			t.Errorf("set %d has error %v", i, s.Err)
		}
		if i > 0 && slices.Equal(s.Addrs, w.sets[i-1].Addrs) {
			t.Errorf("set %d repeats the one before: %v", i, s.Addrs)
		}
	}
}

// TestResolverSurvivesEtcdOutage: with etcd stopped, the last good set is
// kept and the failure reported in Err; reads back off (no storm); when
// etcd is back the error clears and changes are followed again.
func TestResolverSurvivesEtcdOutage(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	put(t, c, "/svc/a", "127.0.0.1:7420")
	w := watch(t, e.Target("svc"), fastOptions)
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420")

	e.Stop()
	start := time.Now()
	s := w.waitFor(t, 5*time.Second, "an error", func(s discovery.Set) bool { return s.Err != nil })
	var ee *etcd.Error
	if !slices.Equal(s.Addrs, []string{"127.0.0.1:7420"}) || !errors.As(s.Err, &ee) || ee.Op != "get" {
		t.Fatalf("during the outage: %+v, want the last set and an *etcd.Error of a get", s)
	}
	t.Logf("outage reported after %v: %v", time.Since(start).Round(time.Millisecond), s.Err)
	// Reads back off: 100ms doubling to 500ms (±20%), each bounded by a
	// 400ms timeout. Over 3s that is at most about 10 reads; a storm
	// would be hundreds.
	before := etcd.Reads(w.r)
	out := time.Now()
	time.Sleep(3 * time.Second) // the outage lasts; reads are counted meanwhile
	reads := etcd.Reads(w.r) - before
	if reads > 12 {
		t.Errorf("%d reads in %v of outage: no backoff", reads, time.Since(out).Round(time.Millisecond))
	}
	t.Logf("%d reads in %v of outage", reads, time.Since(out).Round(time.Millisecond))
	w.mu.Lock()
	for _, s := range w.sets[1:] {
		if !slices.Equal(s.Addrs, []string{"127.0.0.1:7420"}) {
			t.Errorf("the set changed during the outage: %+v", s)
		}
	}
	w.mu.Unlock()

	e.Restart()
	w.waitAddrs(t, 10*time.Second, "127.0.0.1:7420")
	put(t, c, "/svc/b", "127.0.0.2:7420")
	w.waitAddrs(t, 5*time.Second, "127.0.0.1:7420", "127.0.0.2:7420")
}

// TestResolverResolveNowNeverBlocks: before Run, during it, after it.
func TestResolverResolveNowNeverBlocks(t *testing.T) {
	r, err := etcd.NewResolver("etcd://127.0.0.1:1/svc", fastOptions)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		r.ResolveNow()
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan discovery.Set, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(s discovery.Set) { got <- s })
	}()
	// Nothing listens on port 1: the first call reports the failure.
	select {
	case s := <-got:
		if s.Err == nil || len(s.Addrs) != 0 {
			t.Errorf("first set %+v, want an error and no addresses", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no first set after a failed read")
	}
	for range 10 {
		r.ResolveNow()
	}
	cancel()
	<-done
	r.ResolveNow()
}
