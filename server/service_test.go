package server_test

// Config.OnServiceChange: told before the server turns away anything, and
// after it takes connections again.

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// TestOnServiceChangeOrder: SetOffline(true), Drain and Shutdown call the
// hook with false while the server is still ready, has sent no GOAWAY and
// refused no connection; SetOffline(false) calls it with true once the
// server is ready again; repeated states call nothing; nothing after
// Shutdown.
func TestOnServiceChangeOrder(t *testing.T) {
	var (
		mu    sync.Mutex
		calls []string
		srv   *server.Server
	)
	cfg := baseConfig()
	cfg.OnServiceChange = func(in bool) {
		st := srv.Stats()
		ready, reason := srv.Ready()
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, fmt.Sprintf("%v ready=%v(%s) goaways=%d refused=%d", in, ready, reason, st.GoAways, st.RejectedOffline))
	}
	ts := startServer(t, cfg, echoMux())
	srv = ts.Server
	p := dialRaw(t, ts.addr, true)
	defer p.Close()
	if !waitFor(t, 5*time.Second, func() bool { return srv.Stats().Active == 1 }) {
		t.Fatal("the peer's connection was not taken")
	}

	srv.SetOffline(true)
	srv.SetOffline(true) // no change: no call
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close() // refused with SHUTTING_DOWN: counted once it is
		waitFor(t, 5*time.Second, func() bool { return srv.Stats().RejectedOffline == 1 })
	}
	srv.SetOffline(false)
	srv.SetOffline(false)
	srv.Drain(wire.ReasonDrain)
	p.expect(t, 5*time.Second, wire.TypeGoAway)
	srv.Drain(wire.ReasonDrain) // already out of service: GOAWAY again, no call
	srv.SetOffline(false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	goaways := srv.Stats().GoAways
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	srv.SetOffline(false) // after Shutdown: no call
	srv.Close()

	want := []string{
		"false ready=true() goaways=0 refused=0",
		"true ready=true() goaways=0 refused=1",
		"false ready=true() goaways=0 refused=1",
		"true ready=true() goaways=" + fmt.Sprint(goaways) + " refused=1",
		"false ready=true() goaways=" + fmt.Sprint(goaways) + " refused=1",
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("calls:\n%q\nwant:\n%q", calls, want)
	}
}

// TestOnServiceChangeBeforeGoAway: the client receives GOAWAY only after
// the hook has returned, however long it takes.
func TestOnServiceChangeBeforeGoAway(t *testing.T) {
	for _, how := range []string{"drain", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			left := make(chan struct{})
			cfg := baseConfig()
			cfg.OnServiceChange = func(in bool) {
				if !in {
					time.Sleep(200 * time.Millisecond) // a slow deregistration
					close(left)
				}
			}
			ts := startServer(t, cfg, echoMux())
			p := dialRaw(t, ts.addr, true)
			defer p.Close()
			if !waitFor(t, 5*time.Second, func() bool { return ts.Stats().Active == 1 }) {
				t.Fatal("the peer's connection was not taken")
			}
			go func() {
				if how == "drain" {
					ts.Drain(wire.ReasonDrain)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				ts.Shutdown(ctx)
			}()
			p.expect(t, 5*time.Second, wire.TypeGoAway)
			select {
			case <-left:
			default:
				t.Fatal("GOAWAY arrived before OnServiceChange(false) returned")
			}
		})
	}
}
