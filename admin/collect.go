package admin

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
)

// ---------------------------------------------------------------------------
// prometheus.Collector: the server's counters, read at scrape time.

var (
	descConnsOpen      = prometheus.NewDesc("tcppro_connections_open", "Connections open now.", nil, nil)
	descConnsAccepted  = prometheus.NewDesc("tcppro_connections_accepted_total", "Connections accepted.", nil, nil)
	descConnsRejected  = prometheus.NewDesc("tcppro_connections_rejected_total", "Connections refused, by reason: busy (over the connection cap, or at the open-file limit), offline (offline or draining), accept_error (a temporary accept error), port_policy (the listen port was refused).", []string{"reason"}, nil)
	descDeadPeers      = prometheus.NewDesc("tcppro_dead_peers_total", "Server connections closed because the client was found dead or stopped reading, by cause: heartbeat, write_timeout, control_flood, tcp_error.", []string{"cause"}, nil)
	descFrames         = prometheus.NewDesc("tcppro_frames_total", "Frames received (direction in) and sent (out), all connections.", []string{"direction"}, nil)
	descBytes          = prometheus.NewDesc("tcppro_bytes_total", "Bytes received (direction in) and sent (out), all connections.", []string{"direction"}, nil)
	descInFlight       = prometheus.NewDesc("tcppro_calls_in_flight", "Requests in flight now, all connections: taken in (body arriving, or handed to a handler) and not yet answered; MAX_IN_FLIGHT bounds them per connection.", nil, nil)
	descRequests       = prometheus.NewDesc("tcppro_requests_total", "Requests answered by a handler.", nil, nil)
	descRefused        = prometheus.NewDesc("tcppro_requests_refused_total", "Requests refused OVERLOADED (never processed, safe to retry), by reason: workers (every worker busy), in_flight (the connection's MAX_IN_FLIGHT), memory (the connection's or the server's memory bound).", []string{"reason"}, nil)
	descOverloaded     = prometheus.NewDesc("tcppro_requests_overloaded_total", "Deprecated: the same count as tcppro_requests_refused_total{reason=\"workers\"} (requests refused OVERLOADED because every worker was busy), kept for existing dashboards.", nil, nil)
	descMemoryHeld     = prometheus.NewDesc("tcppro_memory_held_bytes", "Bytes held now for all connections against the memory budget: request bodies received and not yet answered, answers not yet written.", nil, nil)
	descMemoryBudget   = prometheus.NewDesc("tcppro_memory_budget_bytes", "The server's memory budget (absent when disabled): requests arriving while tcppro_memory_held_bytes is at it are refused.", nil, nil)
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
		descFrames, descBytes, descInFlight, descRequests, descRefused, descOverloaded, descMemoryHeld,
		descMemoryBudget, descWorkersBusy, descWorkers, descGoAwaysSent, descReady, descReadinessState,
		descRegistered, descRegistrationAttempts, descRegistrationFailures} {
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
	m.collectRegistration(ch)
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
	counter(descDeadPeers, st.ControlFloods, CauseControlFlood)
	counter(descFrames, st.FramesIn, "in")
	counter(descFrames, st.FramesOut, "out")
	counter(descBytes, st.BytesIn, "in")
	counter(descBytes, st.BytesOut, "out")
	gauge(descInFlight, float64(st.InFlight))
	counter(descRequests, st.Requests)
	counter(descRefused, st.Overloaded, RefusedWorkers)
	counter(descRefused, st.RefusedInFlight, RefusedInFlight)
	counter(descRefused, st.RefusedMemory, RefusedMemory)
	counter(descOverloaded, st.Overloaded)
	gauge(descMemoryHeld, float64(st.MemoryHeld))
	if b := srv.Config().MemoryBudget; b > 0 {
		gauge(descMemoryBudget, float64(b))
	}
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
	descClientDials            = prometheus.NewDesc("tcppro_client_dials_total", "Connection attempts by the client.", nil, nil)
	descClientDialFailures     = prometheus.NewDesc("tcppro_client_dial_failures_total", "Connection attempts that failed (each is followed by a backoff delay).", nil, nil)
	descClientReconnects       = prometheus.NewDesc("tcppro_client_reconnects_total", "Connections lost and re-established by the client.", nil, nil)
	descClientGoAways          = prometheus.NewDesc("tcppro_client_goaways_received_total", "GOAWAY frames received by the client.", nil, nil)
	descClientRetries          = prometheus.NewDesc("tcppro_client_retries_total", "Calls sent again because the server certainly did not process them.", nil, nil)
	descClientRetriesThrottled = prometheus.NewDesc("tcppro_client_retries_throttled_total", "Refused calls not retried because the retry budget was spent (they failed with the refusal).", nil, nil)
	descClientDeadPeers        = prometheus.NewDesc("tcppro_client_dead_peers_total", "Client connections closed because the server was found dead or stopped reading, by cause: heartbeat, write_timeout.", []string{"cause"}, nil)
	descClientEjections        = prometheus.NewDesc("tcppro_client_ejections_total", "Servers ejected by the client as outliers (transport failures in a row, or a success rate far below the fleet's).", nil, nil)
	descClientEjectionReturns  = prometheus.NewDesc("tcppro_client_ejection_returns_total", "Servers back from ejection.", nil, nil)
	descClientEndpoints        = prometheus.NewDesc("tcppro_client_endpoints", "Servers in the client's current set, by state: connecting, ready, failing; and ejected (of any state).", []string{"state"}, nil)
	descClientPanic            = prometheus.NewDesc("tcppro_client_balancer_panic", "1 while every ready server is ejected and the client calls them anyway (the panic rule).", nil, nil)
	descClientEPInFlight       = prometheus.NewDesc("tcppro_client_endpoint_in_flight", "Calls in flight on each server.", []string{"endpoint"}, nil)
	descClientEPLatency        = prometheus.NewDesc("tcppro_client_endpoint_latency_seconds", "Each server's latency as the balancer sees it (peak EWMA).", []string{"endpoint"}, nil)
	descClientEPEjected        = prometheus.NewDesc("tcppro_client_endpoint_ejected", "1 while the server is ejected.", []string{"endpoint"}, nil)
	descClientEPCalls          = prometheus.NewDesc("tcppro_client_endpoint_calls_total", "Calls ended on each server, by result: success (an answer, application errors included), failure (transport failures, timeouts, refusals, failed connects).", []string{"endpoint", "result"}, nil)
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
		descClientGoAways, descClientRetries, descClientRetriesThrottled, descClientDeadPeers,
		descClientEjections, descClientEjectionReturns, descClientEndpoints, descClientPanic,
		descClientEPInFlight, descClientEPLatency, descClientEPEjected, descClientEPCalls} {
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
	counter(descClientRetriesThrottled, st.RetriesThrottled)
	counter(descClientDeadPeers, st.DeadPeers, CauseHeartbeat)
	counter(descClientDeadPeers, st.WriteTimeouts, CauseWriteTimeout)
	counter(descClientEjections, st.Ejections)
	counter(descClientEjectionReturns, st.EjectionReturns)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descClientPanic, b2f(st.Panic))
	states := map[string]int{"connecting": 0, "ready": 0, "failing": 0, "ejected": 0}
	for _, e := range cc.c.Endpoints() {
		states[e.State]++
		if e.Ejected {
			states["ejected"]++
		}
		gauge(descClientEPInFlight, float64(e.InFlight), e.Addr)
		gauge(descClientEPLatency, e.Latency.Seconds(), e.Addr)
		gauge(descClientEPEjected, b2f(e.Ejected), e.Addr)
		counter(descClientEPCalls, e.Successes, e.Addr, "success")
		counter(descClientEPCalls, e.Failures, e.Addr, "failure")
	}
	for state, n := range states {
		gauge(descClientEndpoints, float64(n), state)
	}
}
