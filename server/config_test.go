package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestDocumentedDefaults pins the defaults README's practices table and
// the Config field docs state, as figures: a changed default fails here
// until the docs are changed with it.
func TestDocumentedDefaults(t *testing.T) {
	d := server.DefaultConfig()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Addr", d.Addr, ":7420"},
		{"MaxConns", d.MaxConns, 10000},
		{"Workers", d.Workers, 1024},
		{"MaxConnAge", d.MaxConnAge, time.Hour},
		{"MaxConnAgeJitter", d.MaxConnAgeJitter, 0.1},
		{"MaxConnAgeGrace", d.MaxConnAgeGrace, 30 * time.Second},
		{"AcceptBackoffMin", d.AcceptBackoffMin, 5 * time.Millisecond},
		{"AcceptBackoffMax", d.AcceptBackoffMax, time.Second},
		{"RejectLinger", d.RejectLinger, time.Second},
		// TCP_USER_TIMEOUT is the heartbeat timeout.
		{"Socket.UserTimeout", d.Socket.UserTimeout, 10 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("DefaultConfig().%s = %v, want %v (as documented)", c.name, c.got, c.want)
		}
	}
	// 1 GiB, or half of GOMEMLIMIT when one is set (not in this test).
	if d.MemoryBudget != 1<<30 {
		t.Errorf("DefaultConfig().MemoryBudget = %d, want 1 GiB", d.MemoryBudget)
	}
}

// TestConfigValidation: Validate names the field it refuses; a negative
// MaxConnAgeJitter means none and is accepted.
func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		field string
		cfg   server.Config
	}{
		{"MaxConns", server.Config{MaxConns: -1}},
		{"Workers", server.Config{Workers: -1}},
		{"HandlerTimeout", server.Config{HandlerTimeout: -time.Second}},
		{"MaxConnAgeJitter", server.Config{MaxConnAgeJitter: 1}},
		{"MaxConnAgeGrace", server.Config{MaxConnAgeGrace: -time.Second}},
		{"AcceptBackoffMax", server.Config{AcceptBackoffMin: time.Second, AcceptBackoffMax: time.Millisecond}},
		{"RejectLinger", server.Config{RejectLinger: -time.Second}},
		{"DrainDelay", server.Config{DrainDelay: -time.Second}},
	} {
		var ce *session.ConfigError
		if err := tc.cfg.Validate(); !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("Validate(%s) = %v, want a ConfigError naming %s", tc.field, err, tc.field)
		}
	}
	if err := (server.Config{MaxConnAgeJitter: -1}).Validate(); err != nil {
		t.Errorf("Validate with MaxConnAgeJitter -1 (no jitter): %v", err)
	}
}

// TestAcceptedSocketOptions: the server sets TCP_USER_TIMEOUT on every
// accepted socket to its heartbeat timeout (README practice 5), so that
// data unacknowledged by a vanished peer fails the connection as soon as
// silence does.
func TestAcceptedSocketOptions(t *testing.T) {
	t.Parallel()
	for _, sc := range []session.Config{{}, {HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}} {
		cfg := baseConfig()
		cfg.Session = sc                      // the first: the defaults, a 10 s timeout
		cfg.Transport = netx.TransportNetConn // ConnContext sees the *net.TCPConn
		got := make(chan time.Duration, 1)
		cfg.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			ut, err := netx.UserTimeout(c)
			if err != nil {
				t.Errorf("TCP_USER_TIMEOUT: %v", err)
			}
			got <- ut
			return ctx
		}
		ts := startServer(t, cfg, echoMux())
		dialRaw(t, ts.addr, true).echo(t, 1, "x")
		want := sc.WithDefaults().HeartbeatTimeout
		if ut := <-got; ut != want {
			t.Errorf("heartbeat timeout %v: TCP_USER_TIMEOUT %v on the accepted socket, want %v", want, ut, want)
		}
	}
}

// TestMaxConnAgeNoJitter: a negative MaxConnAgeJitter means none, so no
// connection gets GOAWAY before MaxConnAge (-1 taken as a jitter would
// age half of them early).
func TestMaxConnAgeNoJitter(t *testing.T) {
	t.Parallel()
	const age = 300 * time.Millisecond
	cfg := baseConfig()
	cfg.MaxConnAge = age
	cfg.MaxConnAgeJitter = -1
	cfg.MaxConnAgeGrace = time.Second
	ts := startServer(t, cfg, echoMux())
	const peers = 6
	errs := make(chan error, peers)
	for range peers {
		start := time.Now() // before the dial: the connection is younger
		p := dialRaw(t, ts.addr, true)
		go func() {
			for {
				f, err := p.next(5 * time.Second)
				switch {
				case err != nil:
					errs <- fmt.Errorf("no GOAWAY: %v", err)
				case f.Type != wire.TypeGoAway:
					continue
				case time.Since(start) < age:
					errs <- fmt.Errorf("GOAWAY after %v, before MaxConnAge %v", time.Since(start), age)
				default:
					errs <- nil
				}
				return
			}
		}()
	}
	for range peers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
