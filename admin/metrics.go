package admin

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tcppro/tcppro/client"
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
	CauseTCPError     = "tcp_error"     // the kernel failed the socket: reset, TCP_USER_TIMEOUT, ...
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

// Metrics is the server side's Prometheus metrics. It is a server.Observer
// (put it in server.Config.Observer, so that it sees every request,
// heartbeat and closed connection) and a prometheus.Collector that reads
// server.Stats at scrape time once attached to its server (admin.New does
// that; Attach does it without the HTTP plane). Counters kept by the
// server are read from Stats and never counted twice.
//
//	m := admin.NewMetrics(nil)
//	cfg.Observer = m
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

// ---------------------------------------------------------------------------
// server.Observer

var _ server.Observer = (*Metrics)(nil)

// ConnOpened implements server.Observer (accepted connections are read
// from Stats).
func (m *Metrics) ConnOpened(net.Addr) {}

// ConnClosed implements server.Observer: it records the connection's age
// and counts connections the kernel failed (cause tcp_error); heartbeat
// and write-timeout deaths are read from Stats.
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

// RequestDone implements server.Observer.
func (m *Metrics) RequestDone(method string, code wire.Code, d time.Duration) {
	k := handlerKey{m.methodLabel(method, code), code}
	o, ok := m.handlerObs.Load(k)
	if !ok {
		o, _ = m.handlerObs.LoadOrStore(k, m.handler.WithLabelValues(k.method, codeLabel(code)))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

// GoAwaySent implements server.Observer (GOAWAYs are read from Stats).
func (m *Metrics) GoAwaySent(wire.Reason) {}

// HeartbeatRTT implements server.Observer.
func (m *Metrics) HeartbeatRTT(d time.Duration) { m.rtt.Observe(d.Seconds()) }

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

// tcpErrnos are the socket errors that mean the kernel gave up on a
// connection.
var tcpErrnos = []syscall.Errno{
	syscall.ECONNRESET, syscall.ETIMEDOUT, syscall.EPIPE, syscall.EHOSTUNREACH,
	syscall.ENETUNREACH, syscall.ECONNABORTED, syscall.ENETDOWN, syscall.EHOSTDOWN,
}

// DeadPeerCause classifies why a connection ended: CauseHeartbeat,
// CauseWriteTimeout, CauseTCPError, or "" for an ordinary close (FIN,
// GOAWAY, maximum age, shutdown, protocol error).
func DeadPeerCause(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, session.ErrPeerDead):
		return CauseHeartbeat
	case errors.Is(err, session.ErrWriteTimeout):
		return CauseWriteTimeout
	}
	for _, e := range tcpErrnos {
		if errors.Is(err, e) {
			return CauseTCPError
		}
	}
	// session formats the socket's error with %v (so errors.Is cannot see
	// the errno) as "session: connection closed: read: connection reset by
	// peer": recognise the errno's text after a read or write.
	if errors.Is(err, session.ErrConnClosed) {
		msg := err.Error()
		if i := max(strings.LastIndex(msg, ": read: "), strings.LastIndex(msg, ": write: ")); i >= 0 {
			for _, e := range tcpErrnos {
				if strings.Contains(msg[i:], e.Error()) {
					return CauseTCPError
				}
			}
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// prometheus.Collector: the server's counters, read at scrape time.

var (
	descConnsOpen      = prometheus.NewDesc("tcppro_connections_open", "Connections open now.", nil, nil)
	descConnsAccepted  = prometheus.NewDesc("tcppro_connections_accepted_total", "Connections accepted.", nil, nil)
	descConnsRejected  = prometheus.NewDesc("tcppro_connections_rejected_total", "Connections refused, by reason: busy (over the connection cap), offline (offline or draining), accept_error (a temporary accept error that paused the loop), port_policy (the listen port was refused).", []string{"reason"}, nil)
	descDeadPeers      = prometheus.NewDesc("tcppro_dead_peers_total", "Server connections closed because the client was found dead, by cause: heartbeat, write_timeout, tcp_error.", []string{"cause"}, nil)
	descFrames         = prometheus.NewDesc("tcppro_frames_total", "Frames received (direction in) and sent (out), all connections.", []string{"direction"}, nil)
	descBytes          = prometheus.NewDesc("tcppro_bytes_total", "Bytes received (direction in) and sent (out), all connections.", []string{"direction"}, nil)
	descInFlight       = prometheus.NewDesc("tcppro_calls_in_flight", "Requests being handled now (each holds a worker; a request that finds none is refused at once).", nil, nil)
	descRequests       = prometheus.NewDesc("tcppro_requests_total", "Requests answered.", nil, nil)
	descOverloaded     = prometheus.NewDesc("tcppro_requests_overloaded_total", "Requests refused with OVERLOADED because every worker was busy (never processed).", nil, nil)
	descWorkersBusy    = prometheus.NewDesc("tcppro_workers_busy", "Workers running a handler now.", nil, nil)
	descWorkers        = prometheus.NewDesc("tcppro_workers", "Size of the worker pool.", nil, nil)
	descGoAwaysSent    = prometheus.NewDesc("tcppro_goaways_sent_total", "GOAWAY frames sent (drain, shutdown, maximum connection age).", nil, nil)
	descReady          = prometheus.NewDesc("tcppro_ready", "1 when the instance is ready for traffic (listening, neither offline, draining nor shutting down), else 0.", nil, nil)
	descReadinessState = prometheus.NewDesc("tcppro_readiness_state", "The instance's readiness state: 1 for the current state, 0 for the others.", []string{"state"}, nil)
)

// Readiness states, the state label of tcppro_readiness_state.
var readinessStates = []string{"ready", "offline", "draining", "shutting_down", "not_listening"}

func readinessState(ready bool, reason string) string {
	if ready {
		return "ready"
	}
	return strings.ReplaceAll(reason, " ", "_")
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.handler.Describe(ch)
	m.rtt.Describe(ch)
	m.connAge.Describe(ch)
	for _, d := range []*prometheus.Desc{descConnsOpen, descConnsAccepted, descConnsRejected, descDeadPeers,
		descFrames, descBytes, descInFlight, descRequests, descOverloaded, descWorkersBusy, descWorkers,
		descGoAwaysSent, descReady, descReadinessState} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.handler.Collect(ch)
	m.rtt.Collect(ch)
	m.connAge.Collect(ch)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descConnsRejected, m.portPolicy.Load(), server.RejectPortPolicy)
	counter(descDeadPeers, m.tcpErrors.Load(), CauseTCPError)
	srv := m.srv.Load()
	if srv == nil {
		return
	}
	st := srv.Stats()
	gauge(descConnsOpen, float64(st.Active))
	counter(descConnsAccepted, st.Accepted)
	counter(descConnsRejected, st.RejectedBusy, server.RejectBusy)
	counter(descConnsRejected, st.RejectedOffline, server.RejectOffline)
	counter(descConnsRejected, st.AcceptErrors, server.RejectAcceptError)
	counter(descDeadPeers, st.DeadPeers, CauseHeartbeat)
	counter(descDeadPeers, st.WriteTimeouts, CauseWriteTimeout)
	counter(descFrames, st.FramesIn, "in")
	counter(descFrames, st.FramesOut, "out")
	counter(descBytes, st.BytesIn, "in")
	counter(descBytes, st.BytesOut, "out")
	gauge(descInFlight, float64(st.WorkersBusy))
	counter(descRequests, st.Requests)
	counter(descOverloaded, st.Overloaded)
	gauge(descWorkersBusy, float64(st.WorkersBusy))
	gauge(descWorkers, float64(st.Workers))
	counter(descGoAwaysSent, st.GoAways)
	ready, reason := srv.Ready()
	state := readinessState(ready, reason)
	gauge(descReady, b2f(ready))
	for _, s := range readinessStates {
		gauge(descReadinessState, b2f(s == state), s)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------
// The client side.

var (
	descClientDials        = prometheus.NewDesc("tcppro_client_dials_total", "Connection attempts by the client.", nil, nil)
	descClientDialFailures = prometheus.NewDesc("tcppro_client_dial_failures_total", "Connection attempts that failed (each is followed by a backoff delay).", nil, nil)
	descClientReconnects   = prometheus.NewDesc("tcppro_client_reconnects_total", "Connections lost and re-established by the client.", nil, nil)
	descClientGoAways      = prometheus.NewDesc("tcppro_client_goaways_received_total", "GOAWAY frames received by the client.", nil, nil)
	descClientRetries      = prometheus.NewDesc("tcppro_client_retries_total", "Calls sent again because the server certainly did not process them.", nil, nil)
	descClientDeadPeers    = prometheus.NewDesc("tcppro_client_dead_peers_total", "Client connections closed because the server was found dead, by cause: heartbeat, write_timeout.", []string{"cause"}, nil)
)

type clientCollector struct{ c *client.Client }

// ClientCollector returns a collector of c's counters (tcppro_client_*),
// read from c.Stats() at scrape time. The side of a metric is in its name:
// tcppro_dead_peers_total is the server's, tcppro_client_dead_peers_total
// the client's, so clients can be labelled without clashing with the
// server's series. Register it with the registry /metrics serves (Metrics.Registry()).
// To register several clients, tell them apart with a label:
//
//	prometheus.WrapRegistererWith(prometheus.Labels{"client": "billing"}, reg).MustRegister(admin.ClientCollector(c))
func ClientCollector(c *client.Client) prometheus.Collector { return clientCollector{c} }

func (cc clientCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClientDials, descClientDialFailures, descClientReconnects,
		descClientGoAways, descClientRetries, descClientDeadPeers} {
		ch <- d
	}
}

func (cc clientCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descClientDials, st.Dials)
	counter(descClientDialFailures, st.DialFailures)
	counter(descClientReconnects, st.Reconnects)
	counter(descClientGoAways, st.GoAways)
	counter(descClientRetries, st.Retries)
	counter(descClientDeadPeers, st.DeadPeers, CauseHeartbeat)
	counter(descClientDeadPeers, st.WriteTimeouts, CauseWriteTimeout)
}
