package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/sysinfo"
)

// DefaultAddr is the reference service's port: below 9000 and outside the
// usual ephemeral range (Linux default 32768-60999).
const DefaultAddr = ":7420"

// Config configures a Server. The zero value of every field means its
// default (see DefaultConfig), so Config{} is valid.
type Config struct {
	// Addr is where ListenAndServe listens. Default DefaultAddr (":7420").
	Addr string

	// AllowEphemeralPort lets ListenAndServe listen on a port inside the
	// kernel's ephemeral range that is not in ip_local_reserved_ports.
	// Default false: such a port is refused with a *netx.PortPolicyError.
	AllowEphemeralPort bool

	// MaxConns caps open connections. Beyond it a new connection is
	// answered with an ERROR frame of code BUSY and closed, so the client
	// knows at once. Default 10000.
	MaxConns int

	// Workers bounds the handlers running at once, across all connections.
	// A request that finds every worker busy is answered at once with
	// CodeOverloaded (never processed, safe to retry elsewhere). Handlers
	// run on goroutines kept for reuse; one idle for one to two seconds
	// ends, so a burst's goroutines do not outlive it. Default 1024.
	Workers int

	// MemoryBudget bounds the bytes held for all connections together:
	// request bodies received and not yet answered (also while their
	// handlers run after the connection ended), answers not yet written. A
	// request that arrives, or grows, while it is reached is refused with
	// OVERLOADED (not processed); Session.ConnMemory bounds each
	// connection the same way, and says how answers can pass the bound.
	// Default: half the Go memory limit when one is set (GOMEMLIMIT),
	// otherwise 1 GiB; negative disables.
	MemoryBudget int64

	// HandlerTimeout caps every request's deadline; 0 (the default) leaves
	// only the deadline the client sent.
	HandlerTimeout time.Duration

	// MaxConnAge is the maximum age of a connection, jittered by
	// ±MaxConnAgeJitter; an older connection gets GOAWAY, so clients move to
	// a fresh one and load rebalances. Default 1h; negative disables.
	MaxConnAge time.Duration
	// MaxConnAgeJitter is the relative jitter on MaxConnAge, below 1.
	// Default 0.1 (0 means the default); negative: none.
	MaxConnAgeJitter float64
	// MaxConnAgeGrace is how long an aged connection may finish its
	// requests after GOAWAY before it is closed. Default 30s.
	MaxConnAgeGrace time.Duration

	// DrainDelay is how long Shutdown waits, once the server is out of
	// service (not ready, new connections refused with SHUTTING_DOWN,
	// OnServiceChange told), before it sends GOAWAY on the open
	// connections: time for load balancers that poll readiness, and for
	// clients that find servers in a registry, to stop sending new
	// connections while the open ones still serve. Shutdown's context
	// bounds the delay too: when it ends first, the remaining connections
	// are closed at once, with no graceful phase. Close ends the wait as
	// well; SetOffline or Drain before Shutdown skip it. Default 0: none.
	DrainDelay time.Duration

	// AcceptBackoffMin and AcceptBackoffMax bound the pause after a
	// temporary accept error (EMFILE, ENFILE, ENOBUFS...): it starts at Min
	// and doubles up to Max, instead of spinning. Defaults 5ms and 1s.
	AcceptBackoffMin time.Duration
	AcceptBackoffMax time.Duration

	// RejectLinger is how long a connection refused as BUSY is kept
	// half-closed so the client reads the BUSY frame before any reset.
	// Default 1s.
	RejectLinger time.Duration

	// Session holds the per-connection limits and heartbeat timers.
	Session session.Config

	// Transport moves the connections' bytes (see netx.Transport).
	// TransportEpoll puts plain TCP connections (a *net.TCPConn from the
	// listener, no TLS) on a few event loops (one per core; an idle
	// connection holds no goroutine, no read buffer and no timer of its
	// own), and the others — connections of a listener that wraps them —
	// on a goroutine each, as all when the loops cannot start; it refuses
	// TLS. TransportNetConn gives every connection a goroutine. Default
	// auto: the event loop for plain TCP on Linux, a goroutine per
	// connection over TLS and elsewhere (see netx.TransportAuto).
	// The protocol is the same either way; under the event loop Observer
	// methods and ConnState may run on a loop's goroutine, and a handler's
	// Request.Conn stands for the connection (see there).
	Transport netx.Transport

	// TLS, if set, serves every connection over TLS with this
	// configuration (set ClientAuth and ClientCAs for mutual TLS, and
	// GetCertificate to reload certificates without a restart). The
	// handshake is bounded by Session.HandshakeTimeout. Default nil: plain
	// TCP.
	TLS *tls.Config

	// Interceptors wrap every request's handler, the first outermost (the
	// shape of grpc-go's unary interceptors): for logging, authentication,
	// tracing and metrics without forking the package. Default none.
	Interceptors []Interceptor

	// BaseContext, if set, returns the base context of the connections
	// accepted on a listener (as net/http's Server.BaseContext); handlers'
	// contexts carry its values. Default: context.Background().
	BaseContext func(net.Listener) context.Context

	// ConnContext, if set, derives a connection's context from the base
	// context (as net/http's Server.ConnContext). On the event loop the
	// net.Conn stands for the connection (see Request.Conn). Default nil.
	ConnContext func(ctx context.Context, c net.Conn) context.Context

	// ConnState, if set, is called when a connection changes state (see
	// ConnState). Calls for one connection come in order, from the
	// connection's goroutines, with none of its locks held: it may call
	// Stats or Conns, but not Close or Shutdown, which wait for the
	// connection. It should be fast. On the event loop the net.Conn stands
	// for the connection (see Request.Conn). Default nil.
	ConnState func(net.Conn, ConnState)

	// Socket holds the socket options of accepted connections. A zero
	// UserTimeout is set to Session.HeartbeatBound() (the heartbeat
	// timeout), so unacknowledged data cannot hold a dead connection
	// longer than the heartbeat would.
	Socket netx.Options

	// FS is where the port policy reads the kernel's port ranges. Default:
	// the live host.
	FS sysinfo.FS

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger

	// OnServiceChange, if set, is told when the server leaves service and
	// when it comes back, so that the instance leaves a service registry
	// before clients are moved away, and rejoins it after. It is called
	// with false by SetOffline(true), Drain, Shutdown and Close, before
	// the server refuses a connection, turns not ready or sends a GOAWAY;
	// and with true by SetOffline(false), once the server takes
	// connections again (never after Shutdown or Close). It is called
	// only on a change (a new server is in service), synchronously from
	// the goroutine calling those methods, one call at a time and in
	// order, with none of the server's locks held: it may call Ready and
	// Stats, but not SetOffline, Drain, Shutdown or Close. It must return
	// promptly, since the method that called it waits for it: bound any
	// request it makes (a registry deregistration: about 2s). Default nil.
	OnServiceChange func(inService bool)

	// Observer, if set, is told about connection events (opened, closed
	// and why, rejected, GOAWAY, heartbeat round trips), for metrics.
	// Requests are observed with an Interceptor. Default nil.
	Observer Observer
}

// Defaults, as documented on the Config fields.
const (
	DefaultMaxConns         = 10000
	DefaultWorkers          = 1024
	DefaultMaxConnAge       = time.Hour
	DefaultMaxConnAgeJitter = 0.1
	DefaultMaxConnAgeGrace  = 30 * time.Second
	DefaultAcceptBackoffMin = 5 * time.Millisecond
	DefaultAcceptBackoffMax = time.Second
	DefaultRejectLinger     = time.Second
	DefaultMemoryBudget     = 1 << 30
)

// defaultMemoryBudget is half the Go memory limit when one is set,
// DefaultMemoryBudget otherwise.
func defaultMemoryBudget() int64 {
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
		return l / 2
	}
	return DefaultMemoryBudget
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	defaults.Set(&c.MaxConns, DefaultMaxConns)
	defaults.Set(&c.Workers, DefaultWorkers)
	defaults.Set(&c.MaxConnAge, DefaultMaxConnAge)
	defaults.Set(&c.MaxConnAgeJitter, DefaultMaxConnAgeJitter)
	defaults.Set(&c.Transport, netx.TransportAuto)
	defaults.Set(&c.MaxConnAgeGrace, DefaultMaxConnAgeGrace)
	defaults.Set(&c.AcceptBackoffMin, DefaultAcceptBackoffMin)
	defaults.Set(&c.AcceptBackoffMax, DefaultAcceptBackoffMax)
	defaults.Set(&c.RejectLinger, DefaultRejectLinger)
	defaults.Set(&c.MemoryBudget, defaultMemoryBudget())
	c.Session = c.Session.WithDefaults()
	defaults.Set(&c.Socket.UserTimeout, c.Session.HeartbeatBound())
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, naming it and its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	switch {
	case c.MaxConns < 0:
		return bad("MaxConns", c.MaxConns, "must be positive")
	case c.Workers < 0:
		return bad("Workers", c.Workers, "must be positive")
	case c.HandlerTimeout < 0:
		return bad("HandlerTimeout", c.HandlerTimeout, "must not be negative")
	case c.MaxConnAgeJitter >= 1:
		return bad("MaxConnAgeJitter", c.MaxConnAgeJitter, "must be below 1 (negative: no jitter)")
	case c.MaxConnAgeGrace < 0:
		return bad("MaxConnAgeGrace", c.MaxConnAgeGrace, "must not be negative")
	case c.DrainDelay < 0:
		return bad("DrainDelay", c.DrainDelay, "must not be negative")
	case c.AcceptBackoffMin < 0 || c.AcceptBackoffMax < c.AcceptBackoffMin:
		return bad("AcceptBackoffMax", c.AcceptBackoffMax, fmt.Sprintf("must be at least AcceptBackoffMin (%v)", c.AcceptBackoffMin))
	case c.RejectLinger < 0:
		return bad("RejectLinger", c.RejectLinger, "must not be negative")
	case c.Session.ConnMemory < int(c.Session.MaxMessageSize):
		return bad("ConnMemory", c.Session.ConnMemory, fmt.Sprintf("must be at least MaxMessageSize (%d), or no request of that size could be received", c.Session.MaxMessageSize))
	case c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil:
		return bad("TLS", "no certificate", "set Certificates, GetCertificate or GetConfigForClient")
	case c.Transport.Validate() != nil:
		return bad("Transport", c.Transport, c.Transport.Validate().Error())
	case c.Transport == netx.TransportEpoll && c.TLS != nil:
		return bad("Transport", c.Transport, "the event loop serves plain TCP only: use auto or netconn with TLS")
	}
	return c.Session.Validate()
}

// LogValue lets the effective configuration be logged once at start.
func (c Config) LogValue() slog.Value {
	s := c.Session
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.Int("max_conns", c.MaxConns),
		slog.Int("workers", c.Workers),
		slog.Int64("memory_budget", c.MemoryBudget),
		slog.Int("conn_memory", s.ConnMemory),
		slog.Bool("tls", c.TLS != nil),
		slog.String("transport", string(c.Transport)),
		slog.Duration("handler_timeout", c.HandlerTimeout),
		slog.Duration("max_conn_age", c.MaxConnAge),
		slog.Float64("max_conn_age_jitter", c.MaxConnAgeJitter),
		slog.Duration("max_conn_age_grace", c.MaxConnAgeGrace),
		slog.Duration("drain_delay", c.DrainDelay),
		slog.Bool("allow_ephemeral_port", c.AllowEphemeralPort),
		slog.Duration("heartbeat_interval", s.HeartbeatInterval),
		slog.Duration("heartbeat_timeout", s.HeartbeatTimeout),
		slog.Duration("frame_read_timeout", s.FrameReadTimeout),
		slog.Duration("write_timeout", s.WriteTimeout),
		slog.Duration("linger_timeout", s.LingerTimeout),
		slog.Uint64("max_frame_size", uint64(s.MaxFrameSize)),
		slog.Uint64("max_message_size", uint64(s.MaxMessageSize)),
		slog.Duration("handshake_timeout", s.HandshakeTimeout),
		slog.Int("max_in_flight", s.MaxInFlight),
		slog.Int("write_queue_size", s.WriteQueueSize),
		slog.Int("max_queued_control", s.MaxQueuedControl),
		slog.Int("read_buffer_size", s.ReadBufferSize),
		slog.Duration("accept_backoff_min", c.AcceptBackoffMin),
		slog.Duration("accept_backoff_max", c.AcceptBackoffMax),
		slog.Duration("reject_linger", c.RejectLinger),
		slog.Duration("tcp_user_timeout", c.Socket.UserTimeout),
		slog.Bool("keepalive", !c.Socket.KeepAlive.Disable),
	)
}
