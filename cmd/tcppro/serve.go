package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/admin"
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
	maxAgeJitter := fs.Float64("max-conn-age-jitter", d.MaxConnAgeJitter, "relative jitter on the maximum connection age")
	maxAgeGrace := fs.Duration("max-conn-age-grace", d.MaxConnAgeGrace, "time an aged connection gets to finish after GOAWAY")
	hbInterval := fs.Duration("heartbeat-interval", sd.HeartbeatInterval, "silence before a PING is sent")
	hbTimeout := fs.Duration("heartbeat-timeout", sd.HeartbeatTimeout, "wait for any frame after a PING before the peer is dead")
	frameTimeout := fs.Duration("frame-read-timeout", sd.FrameReadTimeout, "time a started frame has to complete")
	writeTimeout := fs.Duration("write-timeout", sd.WriteTimeout, "time queued output may make no progress")
	maxFrame := fs.Uint("max-frame-size", uint(sd.MaxFrameSize), "largest accepted frame payload, bytes")
	maxInFlight := fs.Int("max-in-flight", sd.MaxInFlight, "requests in flight per connection")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "hard deadline of the graceful shutdown on SIGTERM/SIGINT")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	adminAddr := fs.String("admin", admin.DefaultAddr, "admin plane address host:port, its own port (health, readiness, offline/drain, metrics, connections, pprof); empty disables")
	adminToken := fs.String("admin-token", "", "bearer token the admin plane's POST endpoints require; required when --admin is not loopback (prefer the environment variable: a flag shows in ps)")
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
		HandlerTimeout:     *handlerTimeout,
		MaxConnAge:         *maxAge,
		MaxConnAgeJitter:   *maxAgeJitter,
		MaxConnAgeGrace:    *maxAgeGrace,
		Session: session.Config{
			HeartbeatInterval: *hbInterval,
			HeartbeatTimeout:  *hbTimeout,
			FrameReadTimeout:  *frameTimeout,
			WriteTimeout:      *writeTimeout,
			MaxFrameSize:      uint32(*maxFrame),
			MaxInFlight:       *maxInFlight,
		},
		Logger: log,
	}
	admCfg := admin.Config{
		Addr:               *adminAddr,
		Token:              *adminToken,
		AllowEphemeralPort: *allowEph,
		Logger:             log,
	}
	if *adminAddr != "" {
		if err := admCfg.Validate(); err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 2
		}
		admCfg.Metrics = admin.NewMetrics(nil)
		cfg.Observer = admCfg.Metrics
	}
	srv, err := server.New(cfg, refservice.Handler())
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcppro serve:", err)
		return 2
	}
	log.Info("starting", "config", srv.Config())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The admin plane: its own listener, HTTP server and goroutines. It is
	// bound before the service, so /healthz answers (and /readyz says "not
	// listening") from the start.
	var adm *admin.Server
	admErr := make(chan error, 1)
	if *adminAddr != "" {
		adm, err = admin.New(admCfg, srv)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 2
		}
		ln, err := adm.Listen()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro serve: --admin:", err)
			return 1
		}
		log.Info("admin plane", "config", adm.Config(), "listen", ln.Addr().String())
		go func() { admErr <- adm.Serve(ln) }()
	} else {
		log.Info("admin plane disabled (--admin \"\")")
	}
	stopAdmin := func() {
		if adm == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := adm.Shutdown(actx); err != nil {
			adm.Close()
		}
		<-admErr
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
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
	}
	stop()
	// Readiness turns false at once (Shutdown's first step); the admin
	// plane keeps answering until the business side has drained.
	log.Info("shutting down: not ready, GOAWAY sent, finishing in-flight requests", "deadline", *shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown deadline passed; remaining connections closed", "err", err)
	}
	<-errc
	stopAdmin()
	log.Info("stopped", "stats", fmt.Sprintf("%+v", srv.Stats()))
	return 0
}
