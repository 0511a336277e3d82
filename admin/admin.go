// Package admin is tcppro's management plane: an HTTP server on its own
// port, with its own listener, accept loop and goroutines, that shares
// nothing with the business side's port, accept loop or worker pool. An
// instance whose every business worker is stuck still answers it: it can
// say it is alive, be taken out of service, and show what is going on.
//
// Endpoints:
//
//	GET  /                 status page (HTML, refreshes itself)
//	GET  /healthz          liveness: 200 while the process answers
//	GET  /readyz           readiness: 200, or 503 with the reason (and the registration, if any)
//	GET  /statusz          readiness and counters, JSON
//	GET  /connz            live connections, JSON, paged (?limit=&offset=)
//	GET  /metrics          Prometheus exposition
//	POST /admin/offline    out of service (?drain=true: GOAWAY open connections too)
//	POST /admin/online     back in service
//	POST /admin/drain      the graceful shutdown sequence without exiting (?delay=)
//	GET  /debug/pprof/...  runtime profiles
//
// Mutating endpoints accept POST only and refuse cross-origin browser
// requests. When a token is configured they require it as a bearer token;
// an admin address that is not loopback requires a token.
//
//	m := admin.NewMetrics(nil)
//	cfg := server.DefaultConfig()
//	m.Install(&cfg) // the Observer, and the Interceptor that times requests
//	srv, _ := server.New(cfg, handler)
//	adm, _ := admin.New(admin.Config{Metrics: m}, srv)
//	go adm.ListenAndServe()
//	go srv.ListenAndServe()
//	...
//	srv.Shutdown(ctx) // readiness turns false at once; the admin plane stays up
//	adm.Shutdown(ctx)
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// DefaultAddr is the admin plane's address: loopback, on the port next to
// the service's (7420), below 9000 and outside the kernel's default
// ephemeral range (32768-60999).
const DefaultAddr = "127.0.0.1:7421"

// Defaults, as documented on the Config fields.
const (
	DefaultConnzLimit        = 100
	DefaultConnzMaxLimit     = 1000
	DefaultRefreshInterval   = 2 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 2 * time.Minute
	DefaultIdleTimeout       = time.Minute
	// MinTokenLength is the shortest token accepted.
	MinTokenLength = 16
)

// ErrTokenRequired is matched (errors.Is) by the error New or Serve return
// for a non-loopback admin address without a token.
var ErrTokenRequired = errors.New("admin: a token is required when the admin address is not loopback")

// Config configures the admin plane. The zero value of every field means
// its default, so Config{} is valid.
type Config struct {
	// Addr is where ListenAndServe listens. Default DefaultAddr
	// ("127.0.0.1:7421"). An address that is not loopback (an unspecified
	// host, a non-loopback IP, any name but localhost) requires Token.
	Addr string

	// AllowEphemeralPort lets ListenAndServe listen on a port inside the
	// kernel's ephemeral range that is not reserved. Default false.
	AllowEphemeralPort bool

	// Token, when set, is required as "Authorization: Bearer TOKEN" by the
	// mutating endpoints (401 without it). At least MinTokenLength
	// characters, printable ASCII without spaces. Never logged. Required
	// when Addr is not loopback; tcppro serve reads it from
	// TCPPRO_ADMIN_TOKEN.
	Token string

	// Metrics is the server's metrics, installed in the server's
	// configuration before server.New (Metrics.Install: the Observer and
	// the Interceptor); /metrics serves its registry. Default: new metrics
	// on a new registry, whose histograms stay empty since the server does
	// not report to them.
	Metrics *Metrics

	// ConnzLimit is /connz's page size when the request gives none, and the
	// rows the status page shows. Default 100.
	ConnzLimit int
	// ConnzMaxLimit is the hard cap on /connz's page size: a larger limit
	// is lowered to it, so a table of 10 000 connections never makes a
	// runaway response. Default 1000.
	ConnzMaxLimit int

	// DrainDelay is the default wait, in POST /admin/drain, between
	// turning not-ready and sending GOAWAY, for load balancers that poll
	// /readyz. Default 0.
	DrainDelay time.Duration

	// RefreshInterval is how often the status page reloads its data.
	// Default 2s.
	RefreshInterval time.Duration

	// HTTP server timeouts. Defaults: ReadHeaderTimeout 5s, ReadTimeout
	// 10s, WriteTimeout 2m (it bounds pprof's profile and trace
	// durations), IdleTimeout 1m.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration

	// Registration, if set, reports the instance's registration in a
	// service registry (tcppro serve --register): /readyz adds a line
	// "registered: REGISTRY" or "not registered: REGISTRY: ERROR" to its
	// answer, /statusz a "registration" object, and /metrics
	// tcppro_registered, tcppro_registration_attempts_total and
	// tcppro_registration_failures_total. Readiness does not depend on it:
	// a registry outage must not take a fleet out of service. It is
	// called on every such request: it must be fast. Default nil: none of
	// these.
	Registration func() RegistrationStatus

	// Logger receives the plane's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	defaults.Set(&c.ConnzLimit, DefaultConnzLimit)
	defaults.Set(&c.ConnzMaxLimit, DefaultConnzMaxLimit)
	defaults.Set(&c.RefreshInterval, DefaultRefreshInterval)
	defaults.Set(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defaults.Set(&c.ReadTimeout, DefaultReadTimeout)
	defaults.Set(&c.WriteTimeout, DefaultWriteTimeout)
	defaults.Set(&c.IdleTimeout, DefaultIdleTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, naming it and (except for the
// token) its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return bad("Addr", c.Addr, err.Error())
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return bad("Addr", c.Addr, "bad port: "+err.Error())
	}
	if c.Token != "" {
		if len(c.Token) < MinTokenLength {
			return bad("Token", "(redacted)", fmt.Sprintf("must be at least %d characters", MinTokenLength))
		}
		for i := 0; i < len(c.Token); i++ {
			if b := c.Token[i]; b <= ' ' || b >= 0x7f {
				return bad("Token", "(redacted)", "must be printable ASCII without spaces")
			}
		}
	}
	switch {
	case c.Token == "" && !loopbackHost(host):
		return fmt.Errorf("%w: %w", ErrTokenRequired, bad("Token", `""`,
			fmt.Sprintf("required because Addr %q is not loopback (set TCPPRO_ADMIN_TOKEN)", c.Addr)))
	case c.ConnzLimit < 0:
		return bad("ConnzLimit", c.ConnzLimit, "must be positive")
	case c.ConnzMaxLimit < 0:
		return bad("ConnzMaxLimit", c.ConnzMaxLimit, "must be positive")
	case c.ConnzLimit > c.ConnzMaxLimit:
		return bad("ConnzLimit", c.ConnzLimit, fmt.Sprintf("must not exceed ConnzMaxLimit (%d)", c.ConnzMaxLimit))
	case c.DrainDelay < 0:
		return bad("DrainDelay", c.DrainDelay, "must not be negative")
	case c.RefreshInterval < 100*time.Millisecond:
		return bad("RefreshInterval", c.RefreshInterval, "must be at least 100ms")
	case c.ReadHeaderTimeout < 0:
		return bad("ReadHeaderTimeout", c.ReadHeaderTimeout, "must not be negative")
	case c.ReadTimeout < 0:
		return bad("ReadTimeout", c.ReadTimeout, "must not be negative")
	case c.WriteTimeout < 0:
		return bad("WriteTimeout", c.WriteTimeout, "must not be negative")
	case c.IdleTimeout < 0:
		return bad("IdleTimeout", c.IdleTimeout, "must not be negative")
	}
	return nil
}

// LogValue logs the effective configuration; the token is never shown,
// only whether one is set.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.Bool("token_set", c.Token != ""),
		slog.Bool("allow_ephemeral_port", c.AllowEphemeralPort),
		slog.Int("connz_limit", c.ConnzLimit),
		slog.Int("connz_max_limit", c.ConnzMaxLimit),
		slog.Duration("drain_delay", c.DrainDelay),
		slog.Duration("read_header_timeout", c.ReadHeaderTimeout),
		slog.Duration("write_timeout", c.WriteTimeout),
	)
}

// loopbackHost reports whether a listen host is certainly loopback: a
// loopback IP or "localhost". Other names are not resolved and count as
// non-loopback.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func loopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Server is the admin plane of one tcppro server.
type Server struct {
	cfg     Config
	srv     *server.Server
	m       *Metrics
	log     *slog.Logger
	hs      *http.Server
	handler http.Handler
	page    *statusPage
	started time.Time

	mu       sync.Mutex
	drainGen uint64      // bumped by online and by each drain
	drainT   *time.Timer // a drain's pending GOAWAY
	closed   bool

	replaced atomic.Bool // see Replaced
	life     lifecycle   // the listeners and connections (lifecycle.go)
}

// New returns the admin plane of srv. It attaches cfg.Metrics to srv.
func New(cfg Config, srv *server.Server) (*Server, error) {
	if srv == nil {
		return nil, errors.New("admin: nil server")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics(nil)
		cfg.Metrics = m
	}
	if err := m.Attach(srv); err != nil {
		return nil, err
	}
	if cfg.Registration != nil {
		m.SetRegistration(cfg.Registration)
	}
	if !observes(srv.Config().Observer, m) {
		cfg.Logger.Warn("admin: the Metrics are not the server's Observer (see Metrics.Install); the heartbeat and connection histograms and tcp_error deaths will not be recorded")
	}
	if !m.intercepting.Load() {
		cfg.Logger.Warn("admin: the Metrics' Interceptor is not installed (see Metrics.Install); tcppro_handler_duration_seconds will stay empty")
	}
	a := &Server{cfg: cfg, srv: srv, m: m, log: cfg.Logger, started: time.Now()}
	a.life.listeners = map[net.Listener]struct{}{}
	a.page = newStatusPage(cfg.RefreshInterval, cfg.ConnzLimit)
	a.handler = a.routes()
	a.hs = &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		ConnState:         a.life.connState,
	}
	return a, nil
}

// Config returns the effective configuration (defaults filled in).
func (a *Server) Config() Config { return a.cfg }

// Metrics returns the metrics /metrics serves.
func (a *Server) Metrics() *Metrics { return a.m }

// Handler returns the plane's HTTP handler, to mount elsewhere; it should
// still be served on a listener of its own.
func (a *Server) Handler() http.Handler { return a.handler }

// ---------------------------------------------------------------------------
// Routes

func (a *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.serveStatusPage)
	mux.HandleFunc("GET /healthz", a.serveHealthz)
	mux.HandleFunc("GET /readyz", a.serveReadyz)
	mux.HandleFunc("GET /statusz", a.serveStatusz)
	mux.HandleFunc("GET /connz", a.serveConnz)
	// Uncompressed: the exposition is small, and compressing it costs CPU
	// the plane may not have while the business side saturates it.
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.m.Registry(), promhttp.HandlerOpts{
		ErrorLog:           slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		ErrorHandling:      promhttp.ContinueOnError,
		Timeout:            10 * time.Second,
		DisableCompression: true,
	}))
	mux.Handle("POST /admin/offline", a.mutating(a.serveOffline))
	mux.Handle("POST /admin/online", a.mutating(a.serveOnline))
	mux.Handle("POST /admin/drain", a.mutating(a.serveDrain))
	// /debug/pprof/cmdline is left out on purpose: a command line may carry
	// a token given as a flag.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return a.common(mux)
}

// common sets the headers every answer carries and, on a loopback
// listener, refuses Host names that are not loopback (DNS rebinding).
func (a *Server) common(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Content-Type-Options", "nosniff")
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && loopbackAddr(la) && !loopbackHostHeader(r.Host) {
			http.Error(w, "admin: Host must be a loopback address or localhost", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func loopbackHostHeader(h string) bool {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	lh := strings.ToLower(h)
	return lh == "localhost" || strings.HasSuffix(lh, ".localhost") || loopbackHost(h)
}

// mutating guards an endpoint that changes state: cross-origin browser
// requests are refused (403), with a token configured the bearer token is
// required (401), and a replaced plane refuses (503, see Replaced).
func (a *Server) mutating(f http.HandlerFunc) http.Handler {
	cop := http.NewCrossOriginProtection()
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Token != "" && !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tcppro-admin"`)
			http.Error(w, "admin: bearer token required", http.StatusUnauthorized)
			a.log.Warn("admin: unauthorized request", "path", r.URL.Path, "remote", r.RemoteAddr)
			return
		}
		if a.replaced.Load() {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "admin: this process has been replaced by a new one, which serves this address: retry", http.StatusServiceUnavailable)
			return
		}
		f(w, r)
	}))
}

func (a *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := strings.TrimSpace(h[len(prefix):])
	return subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) == 1
}

// ---------------------------------------------------------------------------
// Health and readiness

func (a *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (a *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ready, reason := a.ready()
	reg := a.registration()
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", reason)
	} else {
		fmt.Fprintln(w, "ready")
	}
	if a.replaced.Load() {
		fmt.Fprintln(w, "replaced: a new process serves this address")
	}
	if reg != nil {
		fmt.Fprintln(w, registrationLine(reg))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ---------------------------------------------------------------------------
// Offline, online, drain

func (a *Server) serveOffline(w http.ResponseWriter, r *http.Request) {
	drain := false
	if v := r.URL.Query().Get("drain"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("admin: parameter drain=%q: want true or false", v), http.StatusBadRequest)
			return
		}
		drain = b
	}
	a.mu.Lock()
	if drain {
		a.drainGen++ // a pending drain's GOAWAY is superseded: it happens now
		a.srv.Drain(wire.ReasonDrain)
	} else {
		a.srv.SetOffline(true)
	}
	a.mu.Unlock()
	a.log.Info("admin: offline", "drain", drain, "remote", r.RemoteAddr)
	s := a.status(false)
	s.Action = "offline"
	writeJSON(w, http.StatusOK, s)
}

func (a *Server) serveOnline(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.drainGen++
	if a.drainT != nil {
		a.drainT.Stop()
		a.drainT = nil
	}
	a.srv.SetOffline(false)
	a.mu.Unlock()
	a.log.Info("admin: online", "remote", r.RemoteAddr)
	s := a.status(false)
	s.Action = "online"
	writeJSON(w, http.StatusOK, s)
}

// serveDrain runs the graceful shutdown sequence without exiting:
// not-ready at once, then after the drain delay GOAWAY on every
// connection; clients finish their calls in flight and move on, and the
// connections close as they empty. POST /admin/online ends it.
func (a *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	delay := a.cfg.DrainDelay
	if v := r.URL.Query().Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			http.Error(w, fmt.Sprintf("admin: parameter delay=%q: want a duration between 0s and 1h", v), http.StatusBadRequest)
			return
		}
		delay = d
	}
	a.mu.Lock()
	a.drainGen++
	gen := a.drainGen
	if a.drainT != nil {
		a.drainT.Stop()
		a.drainT = nil
	}
	a.srv.SetOffline(true)
	if delay == 0 {
		a.srv.Drain(wire.ReasonDrain)
	} else if !a.closed {
		a.drainT = time.AfterFunc(delay, func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.drainGen == gen {
				a.drainT = nil
				a.srv.Drain(wire.ReasonDrain)
				a.log.Info("admin: drain delay over; GOAWAY sent")
			}
		})
	}
	a.mu.Unlock()
	a.log.Info("admin: drain", "delay", delay, "remote", r.RemoteAddr)
	s := a.status(false)
	s.Action = "drain"
	secs := delay.Seconds()
	s.GoAwayIn = &secs
	writeJSON(w, http.StatusAccepted, s)
}
