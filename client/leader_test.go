package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
)

// warmCalls makes n calls one at a time: after the first, each call reads
// the connection itself (the background reader has left), which is the
// path the tests below exercise.
func warmCalls(t *testing.T, c *client.Client, n int) {
	t.Helper()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Call(ctx, "echo", []byte("warm"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadingCallEndsOnTime: a call reading the connection for itself
// still ends at its context's deadline, at its context's cancellation, and
// at CallTimeout, and the connection serves the next call normally.
func TestReadingCallEndsOnTime(t *testing.T) {
	started := make(chan struct{}, 8)
	mux := server.NewMux()
	mux.HandleFunc("echo", echo.ServeTCP)
	mux.HandleFunc("wait", func(ctx context.Context, req *server.Request) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	_, addr := startServer(t, "", server.Config{}, mux)
	c := newClient(t, client.Config{Addrs: []string{addr}, CallTimeout: 150 * time.Millisecond})

	check := func(name string, ctx context.Context, cancel func(), want error) {
		t.Helper()
		warmCalls(t, c, 3)
		if cancel != nil {
			go func() {
				<-started
				cancel()
			}()
		}
		start := time.Now()
		_, err := c.Call(ctx, "wait", nil)
		el := time.Since(start)
		if !errors.Is(err, want) {
			t.Fatalf("%s: err = %v, want %v", name, err, want)
		}
		if el > time.Second {
			t.Fatalf("%s: returned after %v", name, el)
		}
		t.Logf("TIMING %s: returned after %v", name, el)
		if cancel == nil {
			<-started
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	check("context deadline", ctx, nil, client.ErrTimeout)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	check("context cancelled", ctx, cancel, context.Canceled)

	check("CallTimeout", context.Background(), nil, client.ErrTimeout)

	warmCalls(t, c, 3)
}

// TestIdleClientSeesGoAway: a client whose calls read the connection
// themselves leaves nobody reading between calls; when the server goes
// away meanwhile, the client still learns of it within a few monitor ticks
// and leaves no socket in CLOSE_WAIT.
func TestIdleClientSeesGoAway(t *testing.T) {
	srv, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	warmCalls(t, c, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (the client never closed its side)", err)
	}
	waitFor(t, 2*time.Second, func() bool { return c.Stats().GoAways == 1 })
	t.Logf("TIMING idle client closed its side %v after Shutdown began", time.Since(start))
}
