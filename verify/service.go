package verify

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/refservice"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// helperMain is the tcppro program as the scenarios use it, for test
// binaries (the helper-process pattern): "serve" with the flags the
// scenarios give runs the reference service as `tcppro serve` does, and
// AgentArgs runs the client agent. It returns the exit status.
func helperMain(args []string) int {
	switch {
	case len(args) >= 2 && args[0] == AgentArgs[0] && args[1] == AgentArgs[1]:
		return AgentMain(args[2:])
	case len(args) >= 1 && args[0] == "serve":
		return helperServe(args[1:])
	}
	fmt.Fprintf(os.Stderr, "verify helper: unknown arguments %q\n", args)
	return 2
}

// helperServe is `tcppro serve` reduced to the flags the scenarios use.
func helperServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "service address")
	maxConns := fs.Int("max-conns", 0, "connection cap")
	maxInFlight := fs.Int("max-in-flight", 0, "requests in flight per connection")
	hbInterval := fs.Duration("heartbeat-interval", 0, "heartbeat interval")
	hbTimeout := fs.Duration("heartbeat-timeout", 0, "heartbeat timeout")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "graceful shutdown deadline")
	logLevel := fs.String("log-level", "info", "log level")
	tlsCert := fs.String("tls-cert", "", "PEM certificate")
	tlsKey := fs.String("tls-key", "", "PEM key")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var tlsCfg *tls.Config
	if *tlsCert != "" {
		f := &TLSFiles{Cert: *tlsCert, Key: *tlsKey}
		var err error
		if tlsCfg, err = f.serverConfig(); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			return 2
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := server.New(server.Config{
		Addr:     *listen,
		MaxConns: *maxConns,
		Session:  session.Config{HeartbeatInterval: *hbInterval, HeartbeatTimeout: *hbTimeout, MaxInFlight: *maxInFlight},
		TLS:      tlsCfg,
		Logger:   log,
	}, refservice.Handler())
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		log.Error("serve failed", "err", err)
		srv.Close()
		return 1
	case <-ctx.Done():
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown deadline passed", "err", err)
	}
	<-errc
	return 0
}

// closeEvent is a server connection that ended.
type closeEvent struct {
	remote netip.AddrPort
	err    error
	at     int64 // mono
}

// observer records the connection events of an in-process server.
type observer struct {
	mu      sync.Mutex
	closes  []closeEvent
	rejects map[string]int
	changed chan struct{}
}

func newObserver() *observer {
	return &observer{rejects: map[string]int{}, changed: make(chan struct{})}
}

func (o *observer) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *observer) ConnOpened(net.Addr) {}

func (o *observer) ConnClosed(remote net.Addr, err error, _ time.Duration) {
	at := mono()
	o.mu.Lock()
	o.closes = append(o.closes, closeEvent{remote: addrPort(remote), err: err, at: at})
	o.notifyLocked()
	o.mu.Unlock()
}

func (o *observer) ConnRejected(reason string) {
	o.mu.Lock()
	o.rejects[reason]++
	o.notifyLocked()
	o.mu.Unlock()
}

func (o *observer) GoAwaySent(wire.Reason)     {}
func (o *observer) HeartbeatRTT(time.Duration) {}

// waitClose waits until a close matching match is recorded.
func (o *observer) waitClose(ctx context.Context, limit time.Duration, match func(closeEvent) bool) (closeEvent, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		o.mu.Lock()
		for _, c := range o.closes {
			if match(c) {
				o.mu.Unlock()
				return c, nil
			}
		}
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return closeEvent{}, fmt.Errorf("no such connection close within %v", limit)
		case <-ctx.Done():
			return closeEvent{}, ctx.Err()
		}
	}
}

func (o *observer) closesFrom(p netip.Prefix) []closeEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []closeEvent
	for _, c := range o.closes {
		if p.Contains(c.remote.Addr()) {
			out = append(out, c)
		}
	}
	return out
}

// startInProcServer runs a tcppro server in this process on a listener
// made inside h (its accepted connections belong to h's namespace), with
// the scenarios' heartbeat configuration and the run's transport; mod
// adjusts the configuration. It is closed when the scenario ends.
func (e *Env) startInProcServer(h *faultnet.Host, addr netip.AddrPort, mod func(*server.Config)) (*server.Server, *observer, error) {
	return e.startInProcServerWith(h, addr, refservice.Handler(), mod)
}

// startInProcServerWith is startInProcServer with another handler.
func (e *Env) startInProcServerWith(h *faultnet.Host, addr netip.AddrPort, handler server.Handler, mod func(*server.Config)) (*server.Server, *observer, error) {
	tlsCfg, _, err := e.tlsConfigs()
	if err != nil {
		return nil, nil, err
	}
	obs := newObserver()
	cfg := server.Config{
		Session:  session.Config{HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout},
		TLS:      tlsCfg,
		Logger:   slog.New(slog.DiscardHandler),
		Observer: obs,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.New(cfg, handler)
	if err != nil {
		return nil, nil, err
	}
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = netx.ListenConfig{}.Listen(e.ctx, addr.String())
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("listening on %v in %s: %w", addr, h.Name(), err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	e.onClose(func() {
		srv.Close()
		<-done
	})
	return srv, obs, nil
}

// plainMode says what a plainServer does with a connection: by default it
// echoes (a plain service, not a tcppro one, for the baselines).
type plainMode struct {
	// closeAfter > 0: open as a tcppro server does (HELLO), then close the
	// connection that long after accepting it.
	closeAfter time.Duration
	// talkEvery > 0: open as a tcppro server does (HELLO), then send an
	// unsolicited PONG this often and discard what arrives: a peer that
	// looks alive and never answers. A PONG proves the sender alive like
	// any bytes, and needs no answer (it matches no PING: ignored, §8), so
	// the client sends nothing back.
	talkEvery time.Duration
}

// plainServer is a raw TCP server in this process, on a listener inside a
// lab host. In a TLS run it speaks TLS.
type plainServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
	// accepted receives each connection's remote address.
	accepted chan netip.AddrPort
	// closed receives each connection the server closed (closeAfter
	// mode).
	closed chan plainClose
}

func (e *Env) startPlainServer(h *faultnet.Host, addr netip.AddrPort, mode plainMode) (*plainServer, error) {
	ln, err := h.Listen("tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("listening on %v in %s: %w", addr, h.Name(), err)
	}
	s := &plainServer{ln: ln, conn: map[net.Conn]struct{}{}, accepted: make(chan netip.AddrPort, 64), closed: make(chan plainClose, 64)}
	s.wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			accepted := mono()
			s.mu.Lock()
			s.conn[raw] = struct{}{}
			s.mu.Unlock()
			select {
			case s.accepted <- addrPort(raw.RemoteAddr()):
			default:
			}
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.conn, raw)
					s.mu.Unlock()
					raw.Close()
				}()
				c, err := e.secure(raw, serverSide)
				if err != nil {
					e.logf("raw server on %v: %v", addr, err)
					return
				}
				if mode.closeAfter > 0 || mode.talkEvery > 0 {
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := wire.NewFramer(c, c).ServerHandshake(wire.Hello{}); err != nil {
						e.logf("raw server on %v: HELLO exchange: %v", addr, err)
						return
					}
					_ = c.SetDeadline(time.Time{})
				}
				switch {
				case mode.closeAfter > 0:
					// The scenario's own pacing: the close comes
					// closeAfter after the accept.
					time.Sleep(mode.closeAfter - since(accepted, mono()))
					at := mono()
					c.Close()
					select {
					case s.closed <- plainClose{at: at, remote: addrPort(c.RemoteAddr())}:
					default:
					}
				case mode.talkEvery > 0:
					s.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
					for i := uint64(1); ; i++ {
						_ = c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := c.Write(wire.AppendPong(nil, i)); err != nil {
							return
						}
						time.Sleep(mode.talkEvery) // the peer's pace
					}
				default:
					_, _ = io.Copy(c, c)
				}
			})
		}
	})
	e.onClose(s.close)
	return s, nil
}

// plainClose is a connection a plainServer closed, and when.
type plainClose struct {
	at     int64
	remote netip.AddrPort
}

// addrPort is a TCP address as an AddrPort (IPv4 unmapped).
func addrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (s *plainServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
