package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// adminBudget is how fast the admin plane must answer while the business
// side is saturated.
const adminBudget = 100 * time.Millisecond

// TestIsolation saturates the business side in every way at once — every
// worker taken (some by calls that sleep past any deadline the test
// would wait for, the others burning a CPU each, as many as the runtime
// uses), every connection slot taken, further calls refused OVERLOADED
// and further connections BUSY — and shows that the admin plane still
// answers at once: /healthz, /metrics and POST /admin/offline within
// adminBudget, and /readyz 503 after offline.
func TestIsolation(t *testing.T) {
	const (
		maxConns = 16
		workers  = 6
	)
	spinners := min(runtime.GOMAXPROCS(0), workers/2) // one per CPU the runtime uses
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	started := make(chan string, workers)
	var spun atomic.Uint64

	mux := server.NewMux()
	mux.HandleFunc("echo", func(ctx context.Context, req *server.Request) ([]byte, error) { return req.Body, nil })
	mux.HandleFunc("sleep", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- "sleep"
		select { // never returns in time: only the end of the test ends it
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	mux.HandleFunc("spin", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- "spin"
		for n := uint64(0); ; n++ { // keeps a CPU busy
			if n%1024 == 0 {
				select {
				case <-release:
					spun.Add(n)
					return nil, nil
				default:
				}
			}
		}
	})
	e := startEnv(t, envOpts{handler: mux, server: func(c *server.Config) {
		c.MaxConns = maxConns
		c.Workers = workers
	}})
	defer releaseAll() // before the cleanups close the server: unblocks the spinners

	// A first scrape, as Prometheus would have made long before: the
	// process collector's one-time set-up is not what is measured.
	e.expect(e.get("/metrics"), 200, "text/plain")

	// Every worker: spinners burn CPU, the rest sleep.
	c := e.client(client.Config{MaxRetries: -1, CallTimeout: time.Minute})
	var calls sync.WaitGroup
	for i := range workers {
		method := "sleep"
		if i < spinners {
			method = "spin"
		}
		calls.Add(1)
		go func() {
			defer calls.Done()
			_, _ = c.Call(context.Background(), method, nil)
		}()
	}
	defer calls.Wait()
	defer releaseAll()
	for range workers {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the workers did not all start")
		}
	}
	if st := e.srv.Stats(); st.WorkersBusy != workers {
		t.Fatalf("workers busy %d, want %d", st.WorkersBusy, workers)
	}
	// One more call finds no worker.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "sleep", nil); !errors.Is(err, client.ErrOverloaded) {
		t.Fatalf("a call beyond the pool: %v, want OVERLOADED", err)
	}
	// Every connection slot (the client holds one); one more is BUSY.
	e.rawConns(maxConns - 1)
	if code := readReject(t, e.svcAddr); code != wire.CodeBusy {
		t.Fatalf("a connection beyond the cap got %v, want BUSY", code)
	}
	if st := e.srv.Stats(); st.Active != maxConns || st.RejectedBusy != 1 {
		t.Fatalf("stats: %+v", st)
	}

	// The admin plane, meanwhile, seen from another process: rounds of
	// /healthz, /metrics, POST /admin/offline and /readyz. The machines
	// running these tests are small and shared, so a single answer can be
	// late for reasons that have nothing to do with the plane; a plane that
	// shared the business pool, or its accept loop, would never answer in
	// time. So each endpoint must answer within adminBudget in at least
	// one round, and every answer must come within hangBound.
	const rounds, hangBound = 5, 5 * time.Second
	steps := []string{"GET /readyz"}
	for range rounds {
		steps = append(steps, "GET /healthz", "GET /metrics", "POST /admin/offline", "GET /readyz")
	}
	steps = append(steps, "GET /connz", "POST /admin/online", "GET /readyz")
	res := probe(t, e.base, steps...)
	if len(res) != len(steps) {
		t.Fatalf("%d answers to %d requests", len(res), len(steps))
	}
	fastest := map[string]time.Duration{}
	for i, r := range res {
		t.Logf("%s %s: %d in %v", r.Method, r.Path, r.Code, r.Elapsed.Round(10*time.Microsecond))
		if r.Err != "" {
			t.Fatalf("%s %s: %s", r.Method, r.Path, r.Err)
		}
		if r.Elapsed > hangBound {
			t.Errorf("%s %s took %v", r.Method, r.Path, r.Elapsed)
		}
		key := r.Method + " " + r.Path
		if i > 0 && i <= 4*rounds {
			if f, ok := fastest[key]; !ok || r.Elapsed < f {
				fastest[key] = r.Elapsed
			}
		}
		check := func(code int, ctype, body string) {
			t.Helper()
			if r.Code != code || !strings.HasPrefix(r.ContentType, ctype) || (body != "" && r.Body != body) {
				t.Fatalf("%s %s: %d %q %q, want %d %q %q", r.Method, r.Path, r.Code, r.ContentType, r.Body, code, ctype, body)
			}
		}
		switch {
		case i == 0:
			check(200, "text/plain", "ready\n")
		case i == len(res)-3: // connz
			check(200, "application/json", "")
			var cz admin.ConnzJSON
			if err := json.Unmarshal([]byte(r.Body), &cz); err != nil || cz.Total != maxConns {
				t.Fatalf("connz: %v, total %d, want %d", err, cz.Total, maxConns)
			}
		case i == len(res)-2: // online
			check(200, "application/json", "")
		case i == len(res)-1:
			check(200, "text/plain", "ready\n")
		case r.Path == "/healthz":
			check(200, "text/plain", "ok\n")
		case r.Path == "/metrics":
			check(200, "text/plain", "")
			for _, w := range []string{
				"tcppro_workers_busy 6\n", "tcppro_workers 6\n", "tcppro_connections_open 16\n",
				`tcppro_connections_rejected_total{reason="busy"} 1` + "\n", "tcppro_requests_overloaded_total 1\n",
				`tcppro_requests_refused_total{reason="workers"} 1` + "\n",
			} {
				if !strings.Contains(r.Body, w) {
					t.Fatalf("/metrics lacks %q", w)
				}
			}
		case r.Path == "/admin/offline":
			check(200, "application/json", "")
		case r.Path == "/readyz": // after offline
			check(503, "text/plain", "not ready: offline\n")
		}
	}
	for key, f := range fastest {
		t.Logf("%s: fastest of %d: %v", key, rounds, f.Round(10*time.Microsecond))
		if f > adminBudget {
			t.Errorf("%s never answered within %v with the business side saturated (fastest %v)", key, adminBudget, f)
		}
	}
	if len(fastest) != 4 {
		t.Fatalf("measured %d endpoints, want 4", len(fastest))
	}

	releaseAll()
	calls.Wait()
	if spun.Load() == 0 {
		t.Fatal("the spinners did not spin")
	}
}
