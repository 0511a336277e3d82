package verify

import (
	"context"
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
	if err := fs.Parse(args); err != nil {
		return 2
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

func (o *observer) RequestDone(string, wire.Code, time.Duration) {}
func (o *observer) GoAwaySent(wire.Reason)                       {}
func (o *observer) HeartbeatRTT(time.Duration)                   {}

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
// the scenarios' heartbeat configuration; mod adjusts the configuration.
// It is closed when the scenario ends.
func (e *Env) startInProcServer(h *faultnet.Host, addr netip.AddrPort, mod func(*server.Config)) (*server.Server, *observer, error) {
	obs := newObserver()
	cfg := server.Config{
		Session:  session.Config{HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout},
		Logger:   slog.New(slog.DiscardHandler),
		Observer: obs,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.New(cfg, refservice.Handler())
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
// echoes.
type plainMode struct {
	// closeAfter > 0: close the connection that long after accepting it.
	closeAfter time.Duration
	// pingEvery > 0: send a tcppro PING this often and discard what
	// arrives: a peer that looks alive and never answers.
	pingEvery time.Duration
}

// plainServer is a plain TCP server in this process, on a listener inside
// a lab host.
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
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			select {
			case s.accepted <- addrPort(c.RemoteAddr()):
			default:
			}
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.conn, c)
					s.mu.Unlock()
					c.Close()
				}()
				switch {
				case mode.closeAfter > 0:
					time.Sleep(mode.closeAfter)
					at := mono()
					c.Close()
					select {
					case s.closed <- plainClose{at: at, remote: addrPort(c.RemoteAddr())}:
					default:
					}
				case mode.pingEvery > 0:
					s.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
					for i := uint64(1); ; i++ {
						_ = c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := c.Write(wire.AppendPing(nil, i)); err != nil {
							return
						}
						time.Sleep(mode.pingEvery)
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
