package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// attempts records, per request body, when a server saw each attempt.
type attempts struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func newAttempts() *attempts { return &attempts{at: make(map[string][]time.Time)} }

func (a *attempts) wrap(h server.Handler) server.Handler {
	return server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		a.mu.Lock()
		a.at[string(req.Body)] = append(a.at[string(req.Body)], time.Now())
		a.mu.Unlock()
		return h.ServeTCP(ctx, req)
	})
}

func (a *attempts) of(body string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.at[body])
}

func (a *attempts) total() (n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ts := range a.at {
		n += len(ts)
	}
	return n
}

// fastRetries keeps the retry backoff short, for tests that count
// attempts rather than time them.
var fastRetries = client.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond}

// TestRefusalsRetriedElsewhere guards that a call a server refused
// (OVERLOADED: not processed) is retried on another server, not on the
// one that refused it: with one of two servers refusing everything, every
// call succeeds and the refusing one sees at most one attempt per call,
// though concurrent callers make the round-robin order unpredictable.
func TestRefusalsRetriedElsewhere(t *testing.T) {
	refusing, ok := newAttempts(), newAttempts()
	_, addrA := startServer(t, "", server.Config{}, refusing.wrap(refuseAll))
	_, addrB := startServer(t, "", server.Config{}, ok.wrap(echo))
	// A budget large enough that it never stops a retry here: this test
	// is about where retries go (TestRetryBudget about how many).
	c := newClient(t, client.Config{Addrs: []string{addrA, addrB}, RetryBackoff: fastRetries, RetryBudget: client.RetryBudget{Tokens: 1000}})
	for i := 0; refusing.total() == 0 || ok.total() == 0; i++ { // both connections ready
		if i == 100 {
			t.Fatal("the calls never reached both servers")
		}
		if _, err := c.Call(context.Background(), "echo", []byte(fmt.Sprint("warm-", i))); err != nil {
			t.Fatal(err)
		}
	}
	const goroutines, calls = 8, 15
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				body := fmt.Sprintf("g%d-%d", g, i)
				if got, err := c.Call(context.Background(), "echo", []byte(body)); err != nil || string(got) != body {
					t.Errorf("call %s: %q, %v", body, got, err)
				}
			}
		}()
	}
	wg.Wait()
	refused := 0
	for g := 0; g < goroutines; g++ {
		for i := 0; i < calls; i++ {
			body := fmt.Sprintf("g%d-%d", g, i)
			n := len(refusing.of(body))
			if n > 1 {
				t.Errorf("call %s was sent %d times to the server refusing it", body, n)
			}
			refused += n
			if m := len(ok.of(body)); m != 1 {
				t.Errorf("call %s processed %d times", body, m)
			}
		}
	}
	st := c.Stats()
	t.Logf("%d calls, %d refused once and retried; stats %+v", goroutines*calls, refused, st)
	if refused == 0 || st.Retries < uint64(refused) {
		t.Fatalf("%d refusals, %d retries: the refusing server took no part", refused, st.Retries)
	}
}

// TestRetryBudget guards the retry budget: against a server refusing
// everything, a client retries while more than half its 10 tokens remain
// (each refusal takes one) and then stops multiplying the load: N calls
// cost about N+5 attempts, not N×(1+MaxRetries); the calls not retried are
// counted in RetriesThrottled. Successes give tokens back (0.1 each), and
// retries resume.
func TestRetryBudget(t *testing.T) {
	seen := newAttempts()
	var healthy atomic.Bool
	h := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		if healthy.Load() {
			return req.Body, nil
		}
		return refuseAll(ctx, req)
	})
	_, addr := startServer(t, "", server.Config{}, seen.wrap(h))
	c := newClient(t, client.Config{Addrs: []string{addr}, RetryBackoff: fastRetries})
	const n = 40
	for i := 0; i < n; i++ {
		_, err := c.Call(context.Background(), "echo", []byte(fmt.Sprint(i)))
		var ce *client.CallError
		if !errors.Is(err, client.ErrOverloaded) || !errors.As(err, &ce) {
			t.Fatalf("call %d: %v, want the server's OVERLOADED", i, err)
		}
	}
	got := seen.total()
	st := c.Stats()
	t.Logf("%d calls: %d attempts; retries %d, throttled %d", n, got, st.Retries, st.RetriesThrottled)
	if got < n+3 || got > n+6 {
		t.Fatalf("%d calls made %d attempts, want about %d (the budget's 5 spare tokens), not %d", n, got, n+5, n*(1+client.DefaultMaxRetries))
	}
	if st.Retries != uint64(got-n) {
		t.Fatalf("Stats.Retries %d, want %d (attempts beyond the first)", st.Retries, got-n)
	}
	if st.RetriesThrottled < n-3 {
		t.Fatalf("Stats.RetriesThrottled %d, want about %d", st.RetriesThrottled, n-1)
	}

	// 70 successes give back 7 tokens: the next refused call is retried
	// once (7 → 6 tokens), not twice (6 → 5 is not above half).
	healthy.Store(true)
	for i := 0; i < 70; i++ {
		if _, err := c.Call(context.Background(), "echo", []byte(fmt.Sprint("ok-", i))); err != nil {
			t.Fatal(err)
		}
	}
	healthy.Store(false)
	if _, err := c.Call(context.Background(), "echo", []byte("again")); !errors.Is(err, client.ErrOverloaded) {
		t.Fatalf("err = %v, want OVERLOADED", err)
	}
	if n := len(seen.of("again")); n != 2 {
		t.Fatalf("a refused call after 70 successes made %d attempts, want 2 (the refilled budget allows one retry)", n)
	}
}

// TestRetryBackoffJittered guards the retry backoff: the attempts of a
// refused call are spaced by a random delay below a ceiling that doubles
// (RetryBackoff 20ms, 40ms, 80ms), not sent back to back nor in
// lockstep.
func TestRetryBackoffJittered(t *testing.T) {
	t.Parallel()
	seen := newAttempts()
	_, addr := startServer(t, "", server.Config{}, seen.wrap(refuseAll))
	rb := client.Backoff{Base: 20 * time.Millisecond, Max: 80 * time.Millisecond}
	c := newClient(t, client.Config{Addrs: []string{addr}, RetryBackoff: rb, RetryBudget: client.RetryBudget{Tokens: 1000}})
	const n = 15
	gaps := make([][]time.Duration, client.DefaultMaxRetries)
	for i := 0; i < n; i++ {
		body := fmt.Sprint(i)
		if _, err := c.Call(context.Background(), "echo", []byte(body)); !errors.Is(err, client.ErrOverloaded) {
			t.Fatalf("call %d: %v, want OVERLOADED", i, err)
		}
		at := seen.of(body)
		if len(at) != 1+client.DefaultMaxRetries {
			t.Fatalf("call %d: %d attempts, want %d", i, len(at), 1+client.DefaultMaxRetries)
		}
		for k := 1; k < len(at); k++ {
			gaps[k-1] = append(gaps[k-1], at[k].Sub(at[k-1]))
		}
	}
	var means []time.Duration
	for k, g := range gaps {
		slices.Sort(g)
		var sum time.Duration
		for _, d := range g {
			sum += d
		}
		mean, ceil := sum/time.Duration(len(g)), rb.Ceiling(k)
		means = append(means, mean)
		t.Logf("retry %d (ceiling %v): gaps min %v median %v max %v mean %v", k+1, ceil, g[0], g[len(g)/2], g[len(g)-1], mean)
		if g[len(g)-1] > ceil+slack {
			t.Errorf("retry %d: a gap of %v, above the ceiling %v", k+1, g[len(g)-1], ceil)
		}
		if g[len(g)/2] < ceil/8 {
			t.Errorf("retry %d: median gap %v: attempts nearly back to back (ceiling %v)", k+1, g[len(g)/2], ceil)
		}
		if g[len(g)-1]-g[0] < ceil/3 {
			t.Errorf("retry %d: gaps from %v to %v: no jitter (ceiling %v)", k+1, g[0], g[len(g)-1], ceil)
		}
	}
	if means[2] <= means[0] {
		t.Errorf("mean gaps %v: the backoff does not grow", means)
	}
}

// TestUnknownFateNeverRetried guards that a call whose outcome is unknown
// — its connection died while the server had it — is never sent again,
// even with another server at hand and retries left: it fails with the
// connection's error.
func TestUnknownFateNeverRetried(t *testing.T) {
	var handled atomic.Int64
	die := server.HandlerFunc(func(ctx context.Context, req *server.Request) ([]byte, error) {
		handled.Add(1)
		req.Conn.Close() // the connection dies while the request is processed
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, addrA := startServer(t, "", server.Config{}, die)
	_, addrB := startServer(t, "", server.Config{}, die)
	c := newClient(t, client.Config{Addrs: []string{addrA, addrB}, RetryBackoff: fastRetries})
	_, err := c.Call(context.Background(), "die", nil)
	if !errors.Is(err, client.ErrConnClosed) || session.RetrySafe(err) {
		t.Fatalf("err = %v, want ErrConnClosed, not retry safe", err)
	}
	if n, r := handled.Load(), c.Stats().Retries; n != 1 || r != 0 {
		t.Fatalf("the call was handled %d times, retried %d times; want once, never", n, r)
	}
}

// TestPeerDeadNotRetried: a server that takes a request and then falls
// silent (answers no PING) is found dead by the heartbeat; the call fails
// with ErrPeerDead and is not sent again.
func TestPeerDeadNotRetried(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	raw := startRaw(t, func(nc net.Conn) {
		fr := wire.NewFramer(nc, nc)
		if _, err := fr.ServerHandshake(rawHello); err != nil {
			return
		}
		for { // reads on, answers nothing
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if f.Type == wire.TypeRequest {
				requests.Add(1)
			}
		}
	})
	cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}
	c := newClient(t, client.Config{Addrs: []string{raw.addr}, Session: cfg, RetryBackoff: fastRetries})
	el, err := timed(func() error { _, err := c.Call(context.Background(), "echo", nil); return err })
	if !errors.Is(err, client.ErrPeerDead) || session.RetrySafe(err) {
		t.Fatalf("err = %v, want ErrPeerDead, not retry safe", err)
	}
	within(t, "finding a silent server dead (heartbeat timeout 300ms)", el, 300*time.Millisecond+slack)
	if n, r := requests.Load(), c.Stats().Retries; n != 1 || r != 0 {
		t.Fatalf("%d REQUESTs sent, %d retries: want one request, no retry", n, r)
	}
	// The connection's end is counted as it closes, just after its calls
	// have ended.
	waitFor(t, 5*time.Second, func() bool { return c.Stats().DeadPeers == 1 })
}
