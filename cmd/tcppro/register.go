package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/discovery/etcd" // also the etcd:// scheme of tcppro call --target
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

// registerFlagOf maps the registration's fields that validation can name
// to their flags.
var registerFlagOf = map[string]string{
	"Addr": "register-addr",
	"TTL":  "register-ttl",
}

// registerError names the flag to fix in an error of newRegistrar.
func registerError(err error) error {
	if ce := (*session.ConfigError)(nil); errors.As(err, &ce) {
		return flagError(err, registerFlagOf)
	}
	return fmt.Errorf("--register: %w", err)
}

// registrar registers the service in etcd (--register) while it is in
// service: from when it listens until the server leaves service
// (OnServiceChange(false): offline, drain, shutdown), and again when it
// comes back.
type registrar struct {
	reg *etcd.Registration
	log *slog.Logger

	mu        sync.Mutex
	inService bool // as last told by the server
	listening bool
}

func newRegistrar(target, addr string, ttl time.Duration, log *slog.Logger) (*registrar, error) {
	reg, err := etcd.NewRegistration(target, addr, etcd.RegisterOptions{TTL: ttl, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("registering in etcd once listening", "key", reg.String(), "ttl", ttl)
	return &registrar{reg: reg, log: log, inService: true}, nil
}

// install makes the server tell the registrar when it leaves service and
// comes back, and the admin plane show the registration.
func (g *registrar) install(cfg *server.Config, acfg *admin.Config) {
	cfg.OnServiceChange = g.serviceChanged
	acfg.Registration = func() admin.RegistrationStatus {
		st := g.reg.Stats()
		return admin.RegistrationStatus{Registry: g.reg.String(), Registered: st.Registered, Attempts: st.Attempts, Failures: st.Failures, Err: st.Err}
	}
}

// serviceChanged is the server's OnServiceChange: the key is deleted
// before the server refuses anything or sends GOAWAY, within
// etcd.DefaultDeregisterTimeout.
func (g *registrar) serviceChanged(in bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inService = in
	if in {
		if g.listening {
			g.reg.Start()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcd.DefaultDeregisterTimeout)
	defer cancel()
	g.reg.Deregister(ctx) // a failure is logged; the key then expires with its lease
}

// startWhenListening starts the registration once srv listens (unless it
// left service meanwhile), or gives up when ctx ends.
func (g *registrar) startWhenListening(ctx context.Context, srv *server.Server) {
	select {
	case <-ctx.Done():
		return
	case <-srv.Listening():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.listening = true
	if g.inService {
		g.reg.Start()
	}
}

// registerBeforeReady is for a process started by an upgrade: it starts
// the registration as soon as srv listens and waits, up to limit, until
// etcd has confirmed the key. The process it replaces deletes its own key
// once this one is ready; were this one's not in place by then, the
// address would leave the registry for a moment, and every client
// watching it would drop its connections to it and warm it in again as a
// new server. An etcd that does not answer delays the upgrade by limit.
func (g *registrar) registerBeforeReady(ctx context.Context, srv *server.Server, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	g.startWhenListening(ctx, srv)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !g.reg.Registered() {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				g.log.Warn("upgrade: not registered in etcd in time; the replaced process deregisters now", "waited", limit, "err", g.reg.Stats().Err)
			}
			return
		case <-t.C:
		}
	}
}

// close deregisters (if still registered) and releases the etcd client.
func (g *registrar) close() {
	g.reg.Close()
}
