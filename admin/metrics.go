package admin

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Registry is where metrics are registered and gathered from;
// *prometheus.Registry (and prometheus.DefaultRegisterer, which is one)
// satisfies it.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// Causes of a dead peer, the cause label of tcppro_dead_peers_total.
const (
	CauseHeartbeat    = "heartbeat"     // nothing arrived within the heartbeat bound (session.ErrPeerDead)
	CauseWriteTimeout = "write_timeout" // the peer stopped reading (session.ErrWriteTimeout)
	CauseControlFlood = "control_flood" // the peer flooded control frames without reading (session.ErrControlFlood)
	CauseTCPError     = "tcp_error"     // the kernel failed the socket: reset, TCP_USER_TIMEOUT, ...
)

// Reasons a request was refused OVERLOADED (never processed), the reason
// label of tcppro_requests_refused_total.
const (
	RefusedWorkers  = "workers"   // every worker was busy (server.Stats.Overloaded)
	RefusedInFlight = "in_flight" // the connection's MAX_IN_FLIGHT was reached (server.Stats.RefusedInFlight)
	RefusedMemory   = "memory"    // the connection's or the server's memory bound was reached (server.Stats.RefusedMemory)
)

// MaxMethodLabels bounds the distinct values of the method label: methods
// are named by clients, so past this many the rest are counted as
// "other". Requests answered UNKNOWN_METHOD are counted as "unknown".
const MaxMethodLabels = 100

// Buckets of the histograms, in seconds.
var (
	HandlerBuckets      = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	HeartbeatRTTBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	ConnAgeBuckets      = []float64{.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 86400}
)

// Metrics is the server side's Prometheus metrics. It has two hooks into
// the server, both set by Install: it is a server.Observer (connection
// events: heartbeat round trips, connection ages, sockets the kernel
// failed) and it provides a server.Interceptor (Interceptor: the time and
// outcome of every request). It is also a prometheus.Collector that reads
// server.Stats at scrape time once attached to its server (admin.New does
// that; Attach does it without the HTTP plane). Counters kept by the
// server are read from Stats and never counted twice.
//
//	m := admin.NewMetrics(nil)
//	cfg := server.DefaultConfig()
//	m.Install(&cfg)
//	srv, _ := server.New(cfg, h)
//	adm, _ := admin.New(admin.Config{Metrics: m}, srv)
type Metrics struct {
	reg Registry
	srv atomic.Pointer[server.Server]

	handler *prometheus.HistogramVec
	rtt     prometheus.Histogram
	connAge prometheus.Histogram

	handlerObs sync.Map // handlerKey → prometheus.Observer
	methods    sync.Map // method name → struct{}, the ones given their own label
	nmethods   atomic.Int64

	intercepting atomic.Bool // Interceptor was called: requests are timed

	registration atomic.Pointer[func() RegistrationStatus] // SetRegistration

	tcpErrors  atomic.Uint64 // connections closed by a TCP error
	portPolicy atomic.Uint64 // listens refused by the port policy
}

type handlerKey struct {
	method string
	code   wire.Code
}

// NewMetrics creates the server metrics and registers them with reg. A nil
// reg means a new registry that also holds the Go runtime and process
// collectors (go_*, process_*). Like prometheus.MustRegister, it panics if
// reg already holds metrics of the same names: that is a programming
// error.
func NewMetrics(reg Registry) *Metrics {
	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg = r
	}
	m := &Metrics{
		reg: reg,
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tcppro_handler_duration_seconds",
			Help:    "Time handlers took to answer requests, by method and result code (OK or the ERROR frame's code).",
			Buckets: HandlerBuckets,
		}, []string{"method", "code"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tcppro_heartbeat_rtt_seconds",
			Help:    "Round-trip time of answered heartbeat PINGs.",
			Buckets: HeartbeatRTTBuckets,
		}),
		connAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tcppro_connection_duration_seconds",
			Help:    "Age of connections when they closed.",
			Buckets: ConnAgeBuckets,
		}),
	}
	reg.MustRegister(m)
	return m
}

// Registry returns the registry the metrics were registered with.
func (m *Metrics) Registry() Registry { return m.reg }

// Attach makes the metrics read srv's counters at scrape time. A Metrics
// serves one server: attaching another is an error.
func (m *Metrics) Attach(srv *server.Server) error {
	if srv == nil {
		return errors.New("admin: Attach: nil server")
	}
	if !m.srv.CompareAndSwap(nil, srv) && m.srv.Load() != srv {
		return errors.New("admin: Metrics already attached to another server")
	}
	return nil
}

// Install wires m into a server's configuration, before server.New: it
// makes m the Observer and appends m.Interceptor() to cfg.Interceptors.
//
// An Observer already set keeps being told every event, after m. The
// interceptor goes after those already in cfg.Interceptors, around the
// handler: it times the handler, and the interceptors added after Install.
// To time and count the requests one of your own interceptors refuses
// too, put m.Interceptor() before it yourself instead:
//
//	cfg.Observer = m
//	cfg.Interceptors = append([]server.Interceptor{m.Interceptor()}, cfg.Interceptors...)
//
// A configuration that already reports to m is left as it is, so
// installing twice counts nothing twice.
func (m *Metrics) Install(cfg *server.Config) {
	if observes(cfg.Observer, m) {
		return
	}
	if cfg.Observer == nil {
		cfg.Observer = m
	} else {
		cfg.Observer = teeObserver{m: m, next: cfg.Observer}
	}
	// Clipped: appending never writes into an array another configuration
	// shares.
	cfg.Interceptors = append(slices.Clip(cfg.Interceptors), m.Interceptor())
}

// observes reports whether o tells m its events.
func observes(o server.Observer, m *Metrics) bool {
	switch o := o.(type) {
	case *Metrics:
		return o == m
	case teeObserver:
		return o.m == m
	}
	return false
}

// teeObserver tells the metrics, then the Observer configured before
// Install.
type teeObserver struct {
	m    *Metrics
	next server.Observer
}

func (t teeObserver) ConnOpened(a net.Addr) { t.m.ConnOpened(a); t.next.ConnOpened(a) }
func (t teeObserver) ConnClosed(a net.Addr, err error, age time.Duration) {
	t.m.ConnClosed(a, err, age)
	t.next.ConnClosed(a, err, age)
}
func (t teeObserver) ConnRejected(reason string) {
	t.m.ConnRejected(reason)
	t.next.ConnRejected(reason)
}
func (t teeObserver) GoAwaySent(r wire.Reason)     { t.m.GoAwaySent(r); t.next.GoAwaySent(r) }
func (t teeObserver) HeartbeatRTT(d time.Duration) { t.m.HeartbeatRTT(d); t.next.HeartbeatRTT(d) }

// ---------------------------------------------------------------------------
// server.Interceptor

// Interceptor returns the server.Interceptor that records every request it
// wraps in tcppro_handler_duration_seconds: the time from entering it to
// the answer, by method and code ("OK", or the code the error is answered
// with, server.ErrorCode). A handler that panics is recorded as INTERNAL,
// and the panic goes on to the server's recovery. Requests refused before
// any handler runs (OVERLOADED: no free worker, MAX_IN_FLIGHT, memory) are
// counted by the server (tcppro_requests_refused_total), not here.
func (m *Metrics) Interceptor() server.Interceptor {
	m.intercepting.Store(true)
	return m.intercept
}

func (m *Metrics) intercept(ctx context.Context, req *server.Request, next server.Handler) (resp []byte, err error) {
	method, start := req.Method, time.Now()
	defer func() {
		if p := recover(); p != nil {
			m.observe(method, wire.CodeInternal, time.Since(start))
			panic(p)
		}
	}()
	resp, err = next.ServeTCP(ctx, req)
	m.observe(method, server.ErrorCode(err), time.Since(start))
	return resp, err
}

// observe records one request.
func (m *Metrics) observe(method string, code wire.Code, d time.Duration) {
	k := handlerKey{m.methodLabel(method, code), code}
	o, ok := m.handlerObs.Load(k)
	if !ok {
		o, _ = m.handlerObs.LoadOrStore(k, m.handler.WithLabelValues(k.method, codeLabel(code)))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

func (m *Metrics) methodLabel(method string, code wire.Code) string {
	if code == wire.CodeUnknownMethod {
		return "unknown"
	}
	if _, ok := m.methods.Load(method); ok {
		return method
	}
	if m.nmethods.Add(1) > MaxMethodLabels {
		m.nmethods.Add(-1)
		return "other"
	}
	if _, loaded := m.methods.LoadOrStore(method, struct{}{}); loaded {
		m.nmethods.Add(-1)
	}
	return method
}

func codeLabel(c wire.Code) string {
	if c == 0 {
		return "OK"
	}
	return c.String()
}

// ---------------------------------------------------------------------------
// server.Observer

var _ server.Observer = (*Metrics)(nil)

// ConnOpened implements server.Observer (accepted connections are read
// from Stats).
func (m *Metrics) ConnOpened(net.Addr) {}

// ConnClosed implements server.Observer: it records the connection's age
// and counts connections the kernel failed (cause tcp_error); heartbeat,
// write-timeout and control-flood deaths are read from Stats.
func (m *Metrics) ConnClosed(_ net.Addr, err error, age time.Duration) {
	m.connAge.Observe(age.Seconds())
	if DeadPeerCause(err) == CauseTCPError {
		m.tcpErrors.Add(1)
	}
}

// ConnRejected implements server.Observer: it counts port-policy refusals
// (the other reasons are read from Stats).
func (m *Metrics) ConnRejected(reason string) {
	if reason == server.RejectPortPolicy {
		m.portPolicy.Add(1)
	}
}

// GoAwaySent implements server.Observer (GOAWAYs are read from Stats).
func (m *Metrics) GoAwaySent(wire.Reason) {}

// HeartbeatRTT implements server.Observer.
func (m *Metrics) HeartbeatRTT(d time.Duration) { m.rtt.Observe(d.Seconds()) }

// tcpErrnos are the socket errors that mean the kernel gave up on a
// connection.
var tcpErrnos = []syscall.Errno{
	syscall.ECONNRESET, syscall.ETIMEDOUT, syscall.EPIPE, syscall.EHOSTUNREACH,
	syscall.ENETUNREACH, syscall.ECONNABORTED, syscall.ENETDOWN, syscall.EHOSTDOWN,
}

// DeadPeerCause classifies why a connection ended: CauseHeartbeat,
// CauseWriteTimeout, CauseControlFlood, CauseTCPError (a socket error the
// connection's error wraps), or "" for an ordinary close (FIN, GOAWAY,
// maximum age, shutdown, protocol error).
func DeadPeerCause(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, session.ErrPeerDead):
		return CauseHeartbeat
	case errors.Is(err, session.ErrWriteTimeout):
		return CauseWriteTimeout
	case errors.Is(err, session.ErrControlFlood):
		return CauseControlFlood
	}
	for _, e := range tcpErrnos {
		if errors.Is(err, e) {
			return CauseTCPError
		}
	}
	return ""
}
