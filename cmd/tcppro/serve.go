package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/discovery/etcd"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/refservice"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

func init() {
	register("serve", "run the reference service (methods: echo, sleep)", runServe)
}

// defaultListen is the reference service's address: port 7420 is below
// 9000 and outside the kernel's default ephemeral range (32768-60999).
const defaultListen = "127.0.0.1:7420"

func runServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	d := server.DefaultConfig()
	sd := session.DefaultConfig()
	listen := fs.String("listen", defaultListen, "service address host:port (port outside the ephemeral range)")
	allowEph := fs.Bool("allow-ephemeral-port", false, "allow a listen port inside ip_local_port_range that is not reserved")
	maxConns := fs.Int("max-conns", d.MaxConns, "connection cap; beyond it connections get BUSY")
	workers := fs.Int("workers", d.Workers, "handlers running at once; beyond it requests get OVERLOADED")
	handlerTimeout := fs.Duration("handler-timeout", 0, "cap on every request's deadline (0: the client's deadline only)")
	maxAge := fs.Duration("max-conn-age", d.MaxConnAge, "maximum connection age, ±jitter (negative: none)")
	maxAgeJitter := fs.Float64("max-conn-age-jitter", d.MaxConnAgeJitter, "relative jitter on the maximum connection age, below 1 (negative: none)")
	maxAgeGrace := fs.Duration("max-conn-age-grace", d.MaxConnAgeGrace, "time an aged connection gets to finish after GOAWAY")
	hbInterval := fs.Duration("heartbeat-interval", sd.HeartbeatInterval, "silence (nothing received) after which a PING is sent; negative disables heartbeats")
	hbTimeout := fs.Duration("heartbeat-timeout", sd.HeartbeatTimeout, "silence, counted from the last bytes received, after which the peer is dead; must exceed --heartbeat-interval")
	handshakeTimeout := fs.Duration("handshake-timeout", sd.HandshakeTimeout, "bound on a new connection's TLS handshake and HELLO exchange")
	frameTimeout := fs.Duration("frame-read-timeout", sd.FrameReadTimeout, "time a started frame may receive nothing more")
	writeTimeout := fs.Duration("write-timeout", sd.WriteTimeout, "time queued output may make no progress")
	lingerTimeout := fs.Duration("linger-timeout", sd.LingerTimeout, "time a closing connection waits for the peer's FIN or its last bytes to leave")
	maxFrame := bytesFlag(fs, "max-frame-size", int64(sd.MaxFrameSize), 0, math.MaxUint32, "largest frame payload accepted, announced in HELLO: a `SIZE` such as 65536 or 64KiB, from 16KiB to 16MiB-1")
	maxMessage := bytesFlag(fs, "max-message-size", int64(sd.MaxMessageSize), 0, math.MaxUint32, "largest request body accepted (`SIZE`), announced in HELLO")
	maxInFlight := fs.Int("max-in-flight", sd.MaxInFlight, "requests in flight per connection, announced in HELLO; beyond it requests get OVERLOADED")
	maxQueuedControl := fs.Int("max-queued-control", sd.MaxQueuedControl, "control frames (PONGs, refusals) queued for a peer that does not read them before it is cut with CONTROL_FLOOD")
	writeQueue := bytesFlag(fs, "write-queue-size", int64(sd.WriteQueueSize), 0, math.MaxInt32, "bytes (`SIZE`) queued for writing per connection; reading from a peer that lets it fill pauses")
	connMemory := bytesFlag(fs, "conn-memory", int64(sd.ConnMemory), 0, math.MaxInt64, "bytes (`SIZE`) held per connection (bodies received, answers unwritten); beyond it requests get OVERLOADED; at least --max-message-size")
	memoryBudget := bytesFlag(fs, "memory-budget", d.MemoryBudget, -1, math.MaxInt64, "bytes (`SIZE`) held across all connections; beyond it requests get OVERLOADED; -1 disables (default: half of GOMEMLIMIT when set, else 1GiB)")
	tlsCert := fs.String("tls-cert", "", "serve TLS with the PEM certificate (and chain) in `FILE`; the pair is reloaded when its files change, without a restart (needs --tls-key)")
	tlsKey := fs.String("tls-key", "", "the PEM private key of --tls-cert, in `FILE`")
	tlsClientCA := fs.String("tls-client-ca", "", "require client certificates signed by the PEM CA certificates in `FILE` (mutual TLS; needs --tls-cert)")
	transport := fs.String("transport", string(netx.TransportAuto), "what moves the connections' bytes: auto (the default: the event loop for plain TCP on Linux, a goroutine per connection over TLS), epoll (the event loop, Linux, plain TCP only: no goroutine per idle connection), netconn (a goroutine per connection)")
	drainDelay := fs.Duration("drain-delay", 0, "on SIGTERM/SIGINT: time between turning not ready (new connections refused with SHUTTING_DOWN, the --register key deleted) and GOAWAY on the open connections, for load balancers that poll /readyz; also POST /admin/drain's default delay")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "hard deadline of the graceful shutdown on SIGTERM/SIGINT (counted from the GOAWAY, after --drain-delay), and of the old process's drain after an upgrade (SIGHUP)")
	up := defineUpgradeFlags(fs)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	adminAddr := fs.String("admin", admin.DefaultAddr, "admin plane address host:port, its own port (health, readiness, offline/drain, metrics, connections, pprof); empty disables")
	adminToken := fs.String("admin-token", "", "bearer token the admin plane's POST endpoints require; required when --admin is not loopback (prefer the environment variable: a flag shows in ps)")
	register := fs.String("register", "", "register the service in etcd while it is in service: `TARGET` etcd://HOST:PORT[,HOST:PORT]/PREFIX; the key PREFIX/ADDR/ID is deleted before GOAWAY on offline, drain and shutdown (default: no registration)")
	registerAddr := fs.String("register-addr", "", "the address (`HOST:PORT`) clients dial, registered with --register (default: --listen, which must then not be 0.0.0.0 or [::])")
	registerTTL := fs.Duration("register-ttl", etcd.DefaultTTL, "lease of the --register key: how long it outlives a process that dies without deregistering (whole seconds, at least 1s)")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "tcppro serve:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "tcppro serve: --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := server.Config{
		Addr:               *listen,
		AllowEphemeralPort: *allowEph,
		MaxConns:           *maxConns,
		Workers:            *workers,
		MemoryBudget:       *memoryBudget,
		HandlerTimeout:     *handlerTimeout,
		MaxConnAge:         *maxAge,
		MaxConnAgeJitter:   *maxAgeJitter,
		MaxConnAgeGrace:    *maxAgeGrace,
		DrainDelay:         *drainDelay,
		Transport:          netx.Transport(*transport),
		Session: session.Config{
			HeartbeatInterval: *hbInterval,
			HeartbeatTimeout:  *hbTimeout,
			HandshakeTimeout:  *handshakeTimeout,
			FrameReadTimeout:  *frameTimeout,
			WriteTimeout:      *writeTimeout,
			LingerTimeout:     *lingerTimeout,
			MaxFrameSize:      uint32(*maxFrame),
			MaxMessageSize:    uint32(*maxMessage),
			MaxInFlight:       *maxInFlight,
			MaxQueuedControl:  *maxQueuedControl,
			WriteQueueSize:    int(*writeQueue),
			ConnMemory:        int(*connMemory),
		},
		Logger: log,
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", flagError(err, serveFlagOf))
		return 2
	}
	if err := (netx.ListenConfig{AllowEphemeralPort: *allowEph}).Check(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "tcppro serve: --listen=%s: %v\n", *listen, err)
		return 2
	}
	if err := up.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", err)
		return 2
	}
	tlsCfg, err := serverTLS(*tlsCert, *tlsKey, *tlsClientCA, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", err)
		return 2
	}
	cfg.TLS = tlsCfg
	admCfg := admin.Config{
		Addr:               *adminAddr,
		Token:              *adminToken,
		AllowEphemeralPort: *allowEph,
		DrainDelay:         *drainDelay,
		Logger:             log,
	}
	if *adminAddr != "" {
		if err := admCfg.Validate(); err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 2
		}
		admCfg.Metrics = admin.NewMetrics(nil)
		// The Observer, and the interceptor that times every request.
		admCfg.Metrics.Install(&cfg)
	}
	var reg *registrar
	if *register != "" {
		addr := *registerAddr
		if addr == "" {
			addr = *listen
		}
		if reg, err = newRegistrar(*register, addr, *registerTTL, log); err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve:", registerError(err))
			return 2
		}
		defer reg.close()
		reg.install(&cfg, &admCfg)
	}
	srv, err := server.New(cfg, refservice.Handler())
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", flagError(err, serveFlagOf))
		return 2
	}
	log.Info("starting", "config", srv.Config())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP: a zero-downtime restart (upgrade.go).
	upg, err := up.start(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", err)
		return 1
	}
	defer upg.UpgradeOn(syscall.SIGHUP)()
	defer upg.Stop() // first: interrupts an upgrade in progress

	// The admin plane: its own listener, HTTP server and goroutines. At a
	// first start it serves before the service, so /healthz answers (and
	// /readyz says "not listening") from the start. A process started by
	// an upgrade shares the admin listener with the process it replaces,
	// which answers on it until this one is ready: this one starts
	// accepting on it only then (serveAdmin), lest it answer "not
	// listening" for an address that is served.
	var adm *admin.Server
	var admLn net.Listener
	admErr := make(chan error, 1)
	admServing := false // set by serveAdmin, on this goroutine
	serveAdmin := func() {
		if adm != nil && !admServing {
			admServing = true
			go func() { admErr <- adm.Serve(admLn) }()
		}
	}
	if *adminAddr != "" {
		adm, err = admin.New(admCfg, srv)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 2
		}
		admLn, err = upg.Listen(*adminAddr, adm.Listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 1
		}
		log.Info("admin plane", "config", adm.Config(), "listen", admLn.Addr().String())
		if !upg.Inherited() {
			serveAdmin()
		}
	} else {
		log.Info("admin plane disabled (--admin \"\")")
	}
	// stopAdmin stops the admin plane, once; a second call waits for the
	// first to finish.
	var admStop sync.Once
	stopAdmin := func() {
		admStop.Do(func() {
			if adm == nil {
				return
			}
			if !admServing {
				admLn.Close()
				return
			}
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := adm.Shutdown(actx); err != nil {
				adm.Close()
			}
			<-admErr
		})
	}

	errc := make(chan error, 1)
	ln, err := upg.Listen(*listen, srv.Listen)
	if err != nil {
		errc <- err
	} else {
		go func() { errc <- srv.Serve(ln) }()
		// Ready makes the process this one replaces go offline: by then
		// this one's /readyz must say ready, so its server must listen.
		if err = waitListening(srv, errc); err != nil {
			errc <- err // for the exit below
		} else {
			if reg != nil && upg.Inherited() {
				// The process this one replaces deregisters its key
				// once this one is ready: this one's key must be in
				// place first.
				reg.registerBeforeReady(ctx, srv, up.registerWait())
			}
			serveAdmin()
			err = upg.Ready()
		}
	}
	if err != nil {
		log.Error("serve failed", "err", err)
		srv.Close()
		<-errc
		stopAdmin()
		return 1
	}
	if reg != nil {
		rctx, rcancel := context.WithCancel(ctx)
		rdone := make(chan struct{})
		go func() { defer close(rdone); reg.startWhenListening(rctx, srv) }()
		defer func() { rcancel(); <-rdone }()
	}
	select {
	case err := <-errc:
		log.Error("serve failed", "err", err)
		srv.Close()
		stopAdmin()
		return 1
	case err := <-admErr:
		// The admin plane must not vanish silently: without it the
		// instance cannot be taken out of service.
		log.Error("admin plane failed", "err", err)
		srv.Close()
		<-errc
		return 1
	case <-ctx.Done():
		// Not an upgrade: the sockets close with the listeners.
		upg.Stop()
	case <-upg.Exit():
		// The new process shares the admin listener: this one stops
		// accepting on it at once, so that probes and scrapes reach the
		// process that serves (this one would say "offline"). The
		// requests it has accepted already are answered; its /readyz
		// says ready, for the new process, even once this one is
		// offline: Replaced comes first.
		if adm != nil {
			adm.Replaced()
		}
		log.Info("replaced by a new process (upgrade); draining this one; the admin plane is the new process's")
		// The new process takes the new connections: no drain delay.
		srv.SetOffline(true)
		go stopAdmin() // alongside the drain: a long admin request must not delay it
	}
	stop()
	delay := srv.DrainDelay() // none after an upgrade, /admin/offline or /admin/drain
	// Readiness turns false at once (Shutdown's first step); the admin
	// plane keeps answering until the business side has drained (after an
	// upgrade it has already stopped: the new process answers).
	log.Info("shutting down: not ready; GOAWAY after the drain delay, then finishing in-flight requests", "drain_delay", delay, "deadline", *shutdownTimeout)
	// The hard deadline counts from the GOAWAY, after the drain delay.
	sctx, cancel := context.WithTimeout(context.Background(), delay+*shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown deadline passed; remaining connections closed", "err", err)
	}
	<-errc
	stopAdmin()
	log.Info("stopped", "stats", fmt.Sprintf("%+v", srv.Stats()))
	return 0
}

// serveFlagOf maps the configuration fields that validation can name to
// their flags, so that an error names the flag to fix.
var serveFlagOf = map[string]string{
	"MaxConns":          "max-conns",
	"Transport":         "transport",
	"Workers":           "workers",
	"MemoryBudget":      "memory-budget",
	"HandlerTimeout":    "handler-timeout",
	"MaxConnAge":        "max-conn-age",
	"MaxConnAgeJitter":  "max-conn-age-jitter",
	"DrainDelay":        "drain-delay",
	"MaxConnAgeGrace":   "max-conn-age-grace",
	"HeartbeatInterval": "heartbeat-interval",
	"HeartbeatTimeout":  "heartbeat-timeout",
	"HandshakeTimeout":  "handshake-timeout",
	"FrameReadTimeout":  "frame-read-timeout",
	"WriteTimeout":      "write-timeout",
	"LingerTimeout":     "linger-timeout",
	"MaxFrameSize":      "max-frame-size",
	"MaxMessageSize":    "max-message-size",
	"MaxInFlight":       "max-in-flight",
	"MaxQueuedControl":  "max-queued-control",
	"WriteQueueSize":    "write-queue-size",
	"ConnMemory":        "conn-memory",
}
