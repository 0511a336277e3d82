// Package client is tcppro's client: calls multiplexed over one connection
// per server, spread over every healthy server given; connects bounded by a
// dial timeout; reconnects with exponential backoff and full jitter; calls
// bounded by their deadline in every state (connecting, waiting for a slot
// or for room to write, awaiting the answer), never hanging; refusals
// retried on another server after a jittered backoff, within a retry budget;
// and GOAWAY handled so that no call is lost: calls the server announced it
// would not process are sent again on another connection.
//
//	c, err := client.New(client.Config{Addrs: []string{"10.0.0.1:7420", "10.0.0.2:7420"}})
//	resp, err := c.Call(ctx, "echo", []byte("hi"))
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/internal/evloop"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// Addrs are the servers, as host:port. Each gets one connection (an
	// address given twice counts once); calls are spread over those that
	// are ready by Balancer. Exactly one of Addrs and Target is required.
	Addrs []string

	// Target names the servers instead of Addrs, and keeps them current:
	// a static list ("host:port,host:port"), a DNS name
	// ("dns:///name:port", A and AAAA records; "dns+srv:///_svc._tcp.name",
	// SRV records; "dns://RESOLVER/..." asks the DNS server RESOLVER), or
	// a scheme registered with package discovery. Names are resolved again
	// every Discovery.Refresh (and sooner when a record's TTL says so) and
	// when connections to them fail. Servers that join get a connection;
	// servers that leave are drained: no new calls, calls in flight finish.
	// Default "": use Addrs.
	Target string

	// Discovery configures the resolution of Target (see
	// discovery.Options: refresh every 30s, at most once a second).
	Discovery discovery.Options

	// Balancer picks the server of each call (see package balancer): by
	// default power of two choices on latency × calls in flight, servers
	// that join warmed in over 10s, outlier ejection (5 transport failures
	// in a row, or a success rate far below the fleet's, eject a server for
	// 30s × its ejections, at most 300s, at most half the fleet; when every
	// ready server is ejected they are called anyway), and no subsetting.
	Balancer balancer.Config

	// Transport moves the connections' bytes (see netx.Transport).
	// TransportEpoll puts plain TCP connections (a *net.TCPConn from the
	// dialer, or from Dial, without TLS) on a few event loops (one per
	// core) that every Client of the process shares, and the others — a
	// Dial that returns another net.Conn — on a goroutine each; it refuses
	// TLS.
	// TransportNetConn gives every connection a goroutine. Default auto:
	// the event loop for plain TCP on Linux, a goroutine per connection
	// over TLS and elsewhere (see netx.TransportAuto).
	Transport netx.Transport

	// DialTimeout bounds each connect (the kernel alone would wait ~127 s
	// for a black hole). Default 3s.
	DialTimeout time.Duration

	// CallTimeout is the deadline of a call whose context has none, so
	// that no call can wait for ever. Default 30s.
	CallTimeout time.Duration

	// MaxRetries is how many times a call the server certainly did not
	// process (refused BUSY, OVERLOADED, SHUTTING_DOWN or
	// UNSUPPORTED_VERSION, or above a GOAWAY's last id) is sent again, on
	// another server when there is one. Calls whose fate is unknown are
	// never retried. Default 3; negative disables.
	MaxRetries int

	// RetryBackoff spaces the retries of refused calls (not those above a
	// GOAWAY's last id, which go elsewhere at once): full jitter, like
	// Backoff. Default Base 10ms, Max 1s.
	RetryBackoff Backoff

	// RetryBudget limits retries of refused calls so that an overload is
	// not multiplied (see RetryBudget). Default: 10 tokens, ratio 0.1.
	RetryBudget RetryBudget

	// Backoff spaces reconnects after failures (see Backoff).
	Backoff Backoff

	// Session holds the per-connection limits and heartbeat timers;
	// MaxInFlight is the number of calls one connection carries at once
	// (never more than the server allows; more wait for a slot, bounded by
	// their deadline).
	Session session.Config

	// Socket holds socket options; a zero UserTimeout is set to the
	// heartbeat timeout.
	Socket netx.Options

	// TLS, if set, speaks TLS to every server with this configuration
	// (RootCAs to trust a private CA; Certificates or GetClientCertificate
	// for mutual TLS). An empty ServerName is taken from each address's
	// host. The handshake is bounded by Session.HandshakeTimeout. Default
	// nil: plain TCP.
	TLS *tls.Config

	// Interceptors wrap every call, the first outermost (the shape of
	// grpc-go's unary client interceptors): for logging, authentication,
	// tracing and metrics. Default none.
	Interceptors []Interceptor

	// Logger receives the client's logs. Default slog.Default().
	Logger *slog.Logger

	// Dial, if set, opens connections instead of the default dialer (a
	// netx.Dialer with DialTimeout and Socket): for a network namespace, a
	// proxy, a test. It must honour ctx, which ends at DialTimeout (and
	// when the client closes) and bounds the connect only. Any net.Conn
	// works. Default nil.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Defaults, as documented on the Config fields.
const (
	DefaultDialTimeout      = netx.DefaultDialTimeout
	DefaultCallTimeout      = 30 * time.Second
	DefaultMaxRetries       = 3
	DefaultRetryBackoffBase = 10 * time.Millisecond
	DefaultRetryBackoffMax  = time.Second
)

// DefaultConfig returns the configuration with every default filled in
// (Addrs is left empty).
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	defaults.Set(&c.DialTimeout, DefaultDialTimeout)
	defaults.Set(&c.Transport, netx.TransportAuto)
	defaults.Set(&c.CallTimeout, DefaultCallTimeout)
	defaults.Set(&c.MaxRetries, DefaultMaxRetries)
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	defaults.Set(&c.RetryBackoff.Base, DefaultRetryBackoffBase)
	defaults.Set(&c.RetryBackoff.Max, DefaultRetryBackoffMax)
	c.RetryBackoff = c.RetryBackoff.withDefaults()
	c.RetryBudget = c.RetryBudget.withDefaults()
	c.Backoff = c.Backoff.withDefaults()
	c.Session = c.Session.WithDefaults()
	defaults.Set(&c.Socket.UserTimeout, c.Session.HeartbeatBound())
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, naming it and its value.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	switch {
	case len(c.Addrs) == 0 && c.Target == "":
		return bad("Addrs", c.Addrs, "a server address (or a Target) is required")
	case len(c.Addrs) > 0 && c.Target != "":
		return bad("Target", c.Target, "give Addrs or Target, not both")
	}
	for _, a := range c.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad("Addrs", a, err.Error())
		}
	}
	if c.Target != "" {
		if _, err := discovery.New(c.Target, c.Discovery); err != nil {
			if errors.Is(err, discovery.ErrBadOptions) {
				return &session.ConfigError{Field: "Discovery", Value: c.Discovery, Reason: err.Error(), Err: err}
			}
			return &session.ConfigError{Field: "Target", Value: c.Target, Reason: err.Error(), Err: err}
		}
	}
	c = c.withDefaults()
	switch {
	case c.Transport.Validate() != nil:
		return bad("Transport", c.Transport, c.Transport.Validate().Error())
	case c.Transport == netx.TransportEpoll && c.TLS != nil:
		return bad("Transport", c.Transport, "the event loop carries plain TCP only: use auto or netconn with TLS")
	case c.DialTimeout < 0:
		return bad("DialTimeout", c.DialTimeout, "must be positive")
	case c.CallTimeout < 0:
		return bad("CallTimeout", c.CallTimeout, "must be positive")
	case c.Backoff.Base < 0 || c.Backoff.Max < c.Backoff.Base:
		return bad("Backoff.Max", c.Backoff.Max, "must be at least Backoff.Base")
	case c.Backoff.Multiplier < 1:
		return bad("Backoff.Multiplier", c.Backoff.Multiplier, "must be at least 1")
	case c.RetryBackoff.Base < 0 || c.RetryBackoff.Max < c.RetryBackoff.Base:
		return bad("RetryBackoff.Max", c.RetryBackoff.Max, "must be at least RetryBackoff.Base")
	case c.RetryBudget.Tokens < 1:
		return bad("RetryBudget.Tokens", c.RetryBudget.Tokens, "must be at least 1")
	case c.RetryBudget.Ratio <= 0 || c.RetryBudget.Ratio > 1:
		return bad("RetryBudget.Ratio", c.RetryBudget.Ratio, "must be in (0, 1]")
	}
	if err := c.Balancer.Validate(); err != nil {
		var ce *session.ConfigError
		if errors.As(err, &ce) {
			ce.Field = "Balancer." + ce.Field
		}
		return err
	}
	return c.Session.Validate()
}

// Client calls tcppro servers. It is safe for concurrent use.
type Client struct {
	cfg     Config
	params  *core.Params // every connection's
	log     *slog.Logger
	res     discovery.Resolver
	invoker Invoker // with the interceptors
	budget  *retryBudget
	ctx     context.Context // cancelled by Close; bounds dials
	cancel  context.CancelFunc

	bal      *balancer.Balancer[*endpoint]
	subsetID int // from 0

	mu       sync.Mutex
	changed  chan struct{}        // closed and replaced when an endpoint changes state
	eps      map[string]*endpoint // the servers of the last set, by address
	set      discovery.Set        // the last set resolved
	resolved bool                 // a first set has come
	conns    map[*clientConn]struct{}
	closed   bool

	wg    sync.WaitGroup
	stats stats

	// The event loops of the connections they own (Config.Transport): the
	// process's, shared by every Client, held from the first such
	// connection to Close.
	loops     evloop.SharedRef
	loopsWarn sync.Once
}

// New starts a client: it resolves its servers and begins connecting to
// every one at once.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	target := cfg.Target
	if target == "" {
		target = strings.Join(cfg.Addrs, ",")
	}
	res, err := discovery.New(target, cfg.Discovery)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		params:  core.NewParams(core.Client, cfg.Session, core.Options{}),
		log:     cfg.Logger,
		res:     res,
		changed: make(chan struct{}),
		eps:     make(map[string]*endpoint),
		conns:   make(map[*clientConn]struct{}),
		budget:  newRetryBudget(cfg.RetryBudget),
	}
	if cfg.Balancer.Logger == nil {
		cfg.Balancer.Logger = cfg.Logger
	}
	c.bal = balancer.New[*endpoint](cfg.Balancer, nil)
	c.subsetID = cfg.Balancer.SubsetID - 1
	if c.subsetID < 0 {
		c.subsetID = rand.IntN(1 << 30)
	}
	c.invoker = c.chain(cfg.Interceptors)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		res.Run(c.ctx, c.update)
	}()
	go c.tick()
	return c, nil
}

// tick runs the balancer's timed rules (ejections ending, success rates)
// when it asks to be run, until the client closes.
func (c *Client) tick() {
	defer c.wg.Done()
	t := time.NewTimer(time.Until(c.bal.Tick()))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			t.Reset(time.Until(c.bal.Tick()))
		case <-c.bal.Wake():
			t.Stop()
			t.Reset(time.Until(c.bal.Tick()))
		case <-c.ctx.Done():
			return
		}
	}
}

// update takes a new set of servers: the new ones get an endpoint, those
// that left are retired (their connection drains).
func (c *Client) update(set discovery.Set) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.set, c.resolved = set, true
	c.stats.resolutions.Add(1)
	if set.Err != nil {
		c.log.Warn("resolving the servers failed; keeping the last set", "target", c.cfg.Target, "addrs", len(set.Addrs), "err", set.Err)
	}
	addrs := balancer.Subset(set.Addrs, c.cfg.Balancer.Subset, c.subsetID)
	in := make(map[string]bool, len(addrs))
	for _, addr := range addrs {
		in[addr] = true
		if c.eps[addr] == nil {
			ep := c.newEndpoint(addr)
			c.eps[addr] = ep
			c.wg.Add(1)
			go ep.run()
		}
	}
	for addr, ep := range c.eps {
		if !in[addr] {
			delete(c.eps, addr)
			ep.retire()
		}
	}
	c.notifyLocked()
}

// Close closes every connection; calls in flight fail with a connection
// error that wraps ErrClosed, and later calls with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancel()
	for _, ep := range c.eps {
		c.bal.Remove(ep.be)
	}
	conns := make([]*clientConn, 0, len(c.conns))
	for cc := range c.conns {
		conns = append(conns, cc)
	}
	c.notifyLocked()
	c.mu.Unlock()
	for _, cc := range conns {
		cc.tc.Close(ErrClosed)
	}
	c.wg.Wait()
	c.loops.Close()
	return nil
}

// CallOptions are a call's options. Interceptors see them and may change
// them before calling on.
type CallOptions struct {
	// Metadata is sent with the request (wire.Metadata's limits apply).
	Metadata wire.Metadata
	// ResponseMetadata, if not nil, receives the answer's metadata.
	ResponseMetadata *wire.Metadata
}

// CallOption sets a call option.
type CallOption func(*CallOptions)

// WithMetadata sends md with the request.
func WithMetadata(md wire.Metadata) CallOption {
	return func(o *CallOptions) { o.Metadata = md }
}

// ResponseMetadata stores the answer's metadata (of a RESPONSE or an ERROR)
// in *dst.
func ResponseMetadata(dst *wire.Metadata) CallOption {
	return func(o *CallOptions) { o.ResponseMetadata = dst }
}

// Invoker performs a call: the rest of an interceptor chain.
type Invoker func(ctx context.Context, method string, body, dst []byte, opts *CallOptions) ([]byte, error)

// Interceptor wraps every call: it may inspect or change the call and its
// options, refuse it with an error, or call next — the shape of grpc-go's
// unary client interceptors. dst is where the answer is appended (see
// CallAppend).
type Interceptor func(ctx context.Context, method string, body, dst []byte, opts *CallOptions, next Invoker) ([]byte, error)

func (c *Client) chain(ics []Interceptor) Invoker {
	inv := Invoker(c.invoke)
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], inv
		inv = func(ctx context.Context, method string, body, dst []byte, opts *CallOptions) ([]byte, error) {
			return ic(ctx, method, body, dst, opts, next)
		}
	}
	return inv
}

// Call sends a request for method with body and waits for its response.
// It returns by ctx's deadline (or CallTimeout when ctx has none) with a
// response or an error: a *CallError (errors.As) for an ERROR from the
// server, whose code matches ErrOverloaded, ErrShuttingDown, ErrServerBusy
// or ErrTimeout; ErrTimeout (also context.DeadlineExceeded) when the
// deadline passed; the context's error (context.Canceled) when it was
// cancelled; a connection's end, matching ErrPeerDead, ErrWriteTimeout,
// ErrConnClosed, or session.ErrFrameTimeout, ErrControlFlood,
// ErrHandshakeTimeout, ErrUnsupportedVersion; ErrTooLarge,
// wire.ErrInvalidMethod or wire.ErrInvalidMetadata for a call refused
// locally; ErrUnavailable when no server can be reached; ErrClosed after
// Close. session.RetrySafe tells whether the server certainly did not
// process it. A call whose
// context is already done is never sent; one cancelled while the server
// runs it is cancelled at the server too (CANCEL). Calls the server
// certainly did not process are retried up to MaxRetries times.
func (c *Client) Call(ctx context.Context, method string, body []byte, opts ...CallOption) ([]byte, error) {
	return c.CallAppend(ctx, method, body, nil, opts...)
}

// CallAppend is Call appending the response to dst (which may be nil) and
// returning the extended slice; on error it returns dst unchanged. A
// caller that passes the same buffer back, resp = c.CallAppend(ctx, m, b,
// resp[:0]), makes calls that allocate little once the buffer is large
// enough. dst is written only while CallAppend runs.
func (c *Client) CallAppend(ctx context.Context, method string, body, dst []byte, opts ...CallOption) ([]byte, error) {
	if err := wire.ValidMethod(method); err != nil {
		return dst, err
	}
	if len(opts) == 0 && len(c.cfg.Interceptors) == 0 {
		return c.invoke(ctx, method, body, dst, nil)
	}
	var o CallOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.invoker(ctx, method, body, dst, &o)
}

type stats struct {
	resolutions                                       atomic.Uint64
	dials, dialFailures, reconnects, goAways, retries atomic.Uint64
	deadPeers, writeTimeouts, retriesThrottled        atomic.Uint64
	backoffWaits, backoffNanos                        atomic.Uint64
}

// Stats is a snapshot of the client's counters.
type Stats struct {
	Endpoints        int           // servers in the current set
	Resolutions      uint64        // sets taken from the resolver (a failed resolution counts)
	Dials            uint64        // connection attempts
	DialFailures     uint64        // attempts that failed
	Reconnects       uint64        // connections lost and re-established
	GoAways          uint64        // GOAWAY frames received
	Retries          uint64        // calls sent again because they were not processed
	RetriesThrottled uint64        // refused calls not retried because the retry budget was spent
	DeadPeers        uint64        // connections closed by the heartbeat (ErrPeerDead)
	WriteTimeouts    uint64        // connections cut because the server stopped reading
	BackoffWaits     uint64        // reconnect delays taken
	BackoffTime      time.Duration // their total
	Ejections        uint64        // servers ejected as outliers (see balancer)
	EjectionReturns  uint64        // servers back from ejection
	Ejected          int           // servers ejected now
	Panic            bool          // every ready server is ejected, and they are called anyway
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	endpoints := len(c.eps)
	c.mu.Unlock()
	bs := c.bal.Stats()
	return Stats{
		Ejections:        bs.Ejections,
		EjectionReturns:  bs.Returns,
		Ejected:          bs.Ejected,
		Panic:            bs.Panic,
		Endpoints:        endpoints,
		Resolutions:      c.stats.resolutions.Load(),
		Dials:            c.stats.dials.Load(),
		DialFailures:     c.stats.dialFailures.Load(),
		Reconnects:       c.stats.reconnects.Load(),
		GoAways:          c.stats.goAways.Load(),
		Retries:          c.stats.retries.Load(),
		RetriesThrottled: c.stats.retriesThrottled.Load(),
		DeadPeers:        c.stats.deadPeers.Load(),
		WriteTimeouts:    c.stats.writeTimeouts.Load(),
		BackoffWaits:     c.stats.backoffWaits.Load(),
		BackoffTime:      time.Duration(c.stats.backoffNanos.Load()),
	}
}

// EndpointStats is one server's state in the client.
type EndpointStats struct {
	balancer.EndpointStats
	// State is the connection's: "connecting", "ready" or "failing".
	State string
	// LastError is the last connect or connection error, if any.
	LastError error
}

// Endpoints returns the state of each server of the current set, sorted
// by address.
func (c *Client) Endpoints() []EndpointStats {
	bs := c.bal.Endpoints()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EndpointStats, 0, len(bs))
	for _, es := range bs {
		ep := c.eps[es.Addr]
		if ep == nil {
			continue // left the set meanwhile
		}
		out = append(out, EndpointStats{EndpointStats: es, State: ep.state.String(), LastError: ep.lastErr})
	}
	return out
}
