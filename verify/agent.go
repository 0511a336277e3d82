package verify

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/internal/tlsfiles"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/session"
)

// The agent runs tcppro's client library inside a client namespace on the
// parent's behalf. It reads one JSON request per line on its standard
// input and answers each with one JSON line on its standard output, with
// the same id; requests run concurrently, so a slow call does not hold up
// the others. Times are CLOCK_MONOTONIC nanoseconds, comparable with the
// parent's. Closing its standard input closes every client and ends it.

// agentReq is one request to the agent.
type agentReq struct {
	ID int64  `json:"id"`
	Op string `json:"op"` // new, call, probe, stats, endpoints, wait_dead, load_start, load_peek, load_stop, close, soak_start, soak_peek, soak_stop

	Client string `json:"client,omitempty"`

	// new, probe: the client's configuration (zero: the client's default).
	Addrs             []string      `json:"addrs,omitempty"`
	Target            string        `json:"target,omitempty"`   // instead of Addrs
	Refresh           time.Duration `json:"refresh,omitempty"`  // Discovery.Refresh
	Balancer          string        `json:"balancer,omitempty"` // the balancer's policy
	Subset            int           `json:"subset,omitempty"`
	SubsetID          int           `json:"subset_id,omitempty"`
	HeartbeatInterval time.Duration `json:"hb_interval,omitempty"`
	HeartbeatTimeout  time.Duration `json:"hb_timeout,omitempty"`
	DialTimeout       time.Duration `json:"dial_timeout,omitempty"`

	// call, probe, load_start
	Method   string        `json:"method,omitempty"`
	Body     string        `json:"body,omitempty"`
	BodySize int           `json:"body_size,omitempty"` // a body of this many bytes instead
	Timeout  time.Duration `json:"timeout,omitempty"`

	// load_start
	Workers int           `json:"workers,omitempty"`
	Pace    time.Duration `json:"pace,omitempty"` // one call per worker per pace

	// load_peek, load_stop: for each mark, the end of the first successful
	// call that started at or after it.
	Marks []int64 `json:"marks,omitempty"`

	// wait_dead: wait until Stats.DeadPeers reaches N.
	N uint64 `json:"n,omitempty"`

	// soak_start: Conns clients of Addrs (one connection each), created
	// RampRate per second, under Rate calls per second picked at random
	// among them (a generator seeded with Seed), each with Timeout.
	Conns    int     `json:"conns,omitempty"`
	Rate     float64 `json:"rate,omitempty"`
	RampRate float64 `json:"ramp_rate,omitempty"`
	Seed     uint64  `json:"seed,omitempty"`
}

// agentResp is the agent's answer.
type agentResp struct {
	ID    int64         `json:"id"`
	Err   string        `json:"err,omitempty"` // the request itself failed
	Mono  int64         `json:"mono,omitempty"`
	Call  *callResult   `json:"call,omitempty"`
	Stats *client.Stats `json:"stats,omitempty"`
	Load  *loadSummary  `json:"load,omitempty"`
	// Endpoints answers endpoints: the client's servers, by address.
	Endpoints []endpointState `json:"endpoints,omitempty"`
	// Soak answers soak_start, soak_peek and soak_stop.
	Soak *soakStatus `json:"soak,omitempty"`
}

// endpointState is one server as a client sees it (client.EndpointStats,
// with its error as text).
type endpointState struct {
	Addr      string        `json:"addr"`
	State     string        `json:"state"` // connecting, ready, failing
	Ejected   bool          `json:"ejected,omitempty"`
	Ejections uint64        `json:"ejections,omitempty"`
	WarmUp    float64       `json:"warm_up"`
	InFlight  int64         `json:"in_flight"`
	Latency   time.Duration `json:"latency"`
	Successes uint64        `json:"successes"`
	Failures  uint64        `json:"failures"`
	LastError string        `json:"last_error,omitempty"`
}

// calls is how many calls the client made on the server.
func (e endpointState) calls() uint64 { return e.Successes + e.Failures }

// callResult is one call's outcome.
type callResult struct {
	Start int64    `json:"start"`
	End   int64    `json:"end"`
	Err   string   `json:"err,omitempty"`
	Kinds []string `json:"kinds,omitempty"` // the typed errors it matches, most specific first
}

func (c *callResult) ok() bool { return c.Err == "" }

func (c *callResult) is(kind string) bool {
	for _, k := range c.Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

func (c *callResult) took() time.Duration { return since(c.Start, c.End) }

// loadSummary is what a load saw.
type loadSummary struct {
	Calls   int            `json:"calls"`
	OK      int            `json:"ok"`
	Errors  map[string]int `json:"errors,omitempty"`  // by kind: the first of the call's kinds
	Untyped []string       `json:"untyped,omitempty"` // errors matching no typed error (a few)
	// Hung counts calls that had not returned by their deadline plus a
	// grace period when the load stopped.
	Hung int `json:"hung"`
	// Late counts calls that returned more than lateGrace after their
	// deadline.
	Late    int     `json:"late"`
	MaxMS   float64 `json:"max_ms"`
	FirstOK []int64 `json:"first_ok"` // per mark; 0 when none
	// P50MS and P99MS are the median and 99th percentile of the
	// successful calls' times, in milliseconds (0: none succeeded).
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	// Fails are the failed calls, the first maxFails of them: when each
	// started and ended, and its kind.
	Fails []failedCall `json:"fails,omitempty"`
}

// failedCall is one failed call of a load.
type failedCall struct {
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Kind  string `json:"kind"`
}

// maxFails caps loadSummary.Fails.
const maxFails = 1000

func (l *loadSummary) failed() int { return l.Calls - l.OK }

func (l *loadSummary) errorText() string {
	if len(l.Errors) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(l.Errors))
	for k := range l.Errors {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", l.Errors[k], k)
	}
	return b.String()
}

// lateGrace is how long after its deadline a call may return before it
// counts as late; hangGrace, before it counts as hung.
const (
	lateGrace = 250 * time.Millisecond
	hangGrace = time.Second
)

// errorKinds names the typed errors a call can end with, most specific
// first.
func errorKinds(err error) []string {
	var kinds []string
	add := func(ok bool, k string) {
		if ok {
			kinds = append(kinds, k)
		}
	}
	add(errors.Is(err, session.ErrPeerDead), "peer_dead")
	add(errors.Is(err, session.ErrBusy), "busy")
	add(errors.Is(err, session.ErrOverloaded), "overloaded")
	add(errors.Is(err, session.ErrShuttingDown), "shutting_down")
	add(errors.Is(err, session.ErrWriteTimeout), "write_timeout")
	add(errors.Is(err, session.ErrHandshakeTimeout), "handshake_timeout")
	add(errors.Is(err, session.ErrFrameTimeout), "frame_timeout")
	add(errors.Is(err, session.ErrControlFlood), "control_flood")
	add(errors.Is(err, session.ErrUnsupportedVersion), "unsupported_version")
	add(errors.Is(err, session.ErrGoAway), "goaway")
	add(errors.Is(err, session.ErrConnClosed), "conn_closed")
	add(errors.Is(err, session.ErrTimeout), "timeout")
	add(errors.Is(err, client.ErrUnavailable), "unavailable")
	var de *netx.DialError
	add(errors.As(err, &de) && de.Timeout, "dial_timeout")
	add(errors.As(err, &de) && !de.Timeout, "dial_failed")
	var te *tls.CertificateVerificationError
	add(errors.As(err, &te), "tls_verify")
	add(errors.Is(err, client.ErrClosed), "closed")
	var se *session.Error
	add(errors.As(err, &se), "call_error")
	return kinds
}

// AgentMain runs the client agent on standard input and output and returns
// the exit status. `tcppro verify __agent` runs it.
//
// Its only flags, --tls-ca FILE and --tls-server-name NAME, make every
// client it creates speak TLS, trusting that CA for that name.
func AgentMain(args []string) int {
	fs := flag.NewFlagSet("tcppro verify __agent", flag.ContinueOnError)
	caFile := fs.String("tls-ca", "", "speak TLS, trusting the PEM CA certificates in this file")
	serverName := fs.String("tls-server-name", TLSServerName, "the name the servers' certificate must hold")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "tcppro verify __agent: it is driven by tcppro verify; flags: --tls-ca FILE --tls-server-name NAME")
		return 2
	}
	a := &agentProc{
		out:     json.NewEncoder(os.Stdout),
		clients: make(map[string]*agentClient),
	}
	if *caFile != "" {
		pool, err := tlsfiles.LoadCertPool(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcppro verify __agent:", err)
			return 2
		}
		a.tls = clientConfigFor(pool)
		a.tls.ServerName = *serverName
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var wg sync.WaitGroup
	for sc.Scan() {
		var req agentReq
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "agent: bad request %q: %v\n", sc.Text(), err)
			return 2
		}
		wg.Go(func() { a.reply(a.handle(req)) })
	}
	// Standard input closed: the parent is done (or gone).
	a.closeAll()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(os.Stderr, "agent: requests still running 5s after the end of input")
	}
	return 0
}

type agentProc struct {
	outMu sync.Mutex
	out   *json.Encoder
	tls   *tls.Config // every client's, nil for plain TCP

	mu      sync.Mutex
	clients map[string]*agentClient
	soak    *agentSoak // the soak, once started
}

type agentClient struct {
	c    *client.Client
	load *agentLoad
}

func (a *agentProc) reply(r agentResp) {
	a.outMu.Lock()
	defer a.outMu.Unlock()
	if err := a.out.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "agent: writing a reply:", err)
	}
}

func (a *agentProc) get(name string) (*agentClient, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.clients[name]
	if !ok {
		return nil, fmt.Errorf("no client %q", name)
	}
	return c, nil
}

func (a *agentProc) closeAll() {
	a.mu.Lock()
	clients := a.clients
	a.clients = map[string]*agentClient{}
	loads := make([]*agentLoad, 0, len(clients))
	for _, c := range clients {
		if c.load != nil {
			loads = append(loads, c.load)
			c.load = nil
		}
	}
	soak := a.soak
	a.soak = nil
	a.mu.Unlock()
	if soak != nil {
		soak.end()
	}
	for _, l := range loads {
		l.stop(nil)
	}
	for _, c := range clients {
		c.c.Close()
	}
}

func (a *agentProc) newClient(req agentReq) (*client.Client, error) {
	return client.New(client.Config{
		Addrs:       req.Addrs,
		Target:      req.Target,
		Discovery:   discovery.Options{Refresh: req.Refresh, MinRefresh: min(req.Refresh, discovery.DefaultMinRefresh)},
		DialTimeout: req.DialTimeout,
		Balancer:    balancer.Config{Policy: balancer.Policy(req.Balancer), Subset: req.Subset, SubsetID: req.SubsetID},
		Session: session.Config{
			HeartbeatInterval: req.HeartbeatInterval,
			HeartbeatTimeout:  req.HeartbeatTimeout,
		},
		TLS:    a.tls,
		Logger: slog.New(slog.DiscardHandler),
	})
}

func (req agentReq) body() []byte {
	if req.BodySize > 0 {
		b := make([]byte, req.BodySize)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	return []byte(req.Body)
}

func doCall(c *client.Client, method string, body []byte, timeout time.Duration) *callResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := &callResult{Start: mono()}
	_, err := c.Call(ctx, method, body)
	r.End = mono()
	if err != nil {
		r.Err = err.Error()
		r.Kinds = errorKinds(err)
	}
	return r
}

func (a *agentProc) handle(req agentReq) agentResp {
	resp := agentResp{ID: req.ID}
	fail := func(err error) agentResp {
		resp.Err = err.Error()
		return resp
	}
	switch req.Op {
	case "new":
		a.mu.Lock()
		_, dup := a.clients[req.Client]
		a.mu.Unlock()
		if dup {
			return fail(fmt.Errorf("client %q exists", req.Client))
		}
		resp.Mono = mono()
		c, err := a.newClient(req)
		if err != nil {
			return fail(err)
		}
		a.mu.Lock()
		a.clients[req.Client] = &agentClient{c: c}
		a.mu.Unlock()
	case "probe":
		// A fresh client making one call, timed from its creation.
		start := mono()
		c, err := a.newClient(req)
		if err != nil {
			return fail(err)
		}
		resp.Call = doCall(c, req.Method, req.body(), req.Timeout)
		resp.Call.Start = start
		c.Close()
	case "call":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		resp.Call = doCall(c.c, req.Method, req.body(), req.Timeout)
	case "stats":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		resp.Mono = mono()
		st := c.c.Stats()
		resp.Stats = &st
	case "endpoints":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		resp.Mono = mono()
		for _, e := range c.c.Endpoints() {
			st := endpointState{Addr: e.Addr, State: e.State, Ejected: e.Ejected, Ejections: e.Ejections,
				WarmUp: e.WarmUp, InFlight: e.InFlight, Latency: e.Latency, Successes: e.Successes, Failures: e.Failures}
			if e.LastError != nil {
				st.LastError = e.LastError.Error()
			}
			resp.Endpoints = append(resp.Endpoints, st)
		}
	case "wait_dead":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		deadline := time.Now().Add(req.Timeout)
		for {
			t := mono()
			if st := c.c.Stats(); st.DeadPeers >= req.N {
				resp.Mono = t
				resp.Stats = &st
				break
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("no dead peer detected within %v", req.Timeout))
			}
			time.Sleep(time.Millisecond)
		}
	case "load_start":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		a.mu.Lock()
		if c.load != nil {
			a.mu.Unlock()
			return fail(errors.New("a load is already running"))
		}
		c.load = startLoad(c.c, req)
		a.mu.Unlock()
		resp.Mono = mono()
	case "load_stop":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		a.mu.Lock()
		l := c.load
		c.load = nil
		a.mu.Unlock()
		if l == nil {
			return fail(errors.New("no load running"))
		}
		resp.Load = l.stop(req.Marks)
		resp.Mono = mono()
	case "load_peek":
		c, err := a.get(req.Client)
		if err != nil {
			return fail(err)
		}
		a.mu.Lock()
		l := c.load
		a.mu.Unlock()
		if l == nil {
			return fail(errors.New("no load running"))
		}
		resp.Load = l.summary(req.Marks)
		resp.Mono = mono()
	case "close":
		a.mu.Lock()
		c, ok := a.clients[req.Client]
		delete(a.clients, req.Client)
		var l *agentLoad
		if ok {
			l, c.load = c.load, nil
		}
		a.mu.Unlock()
		if !ok {
			return fail(fmt.Errorf("no client %q", req.Client))
		}
		if l != nil {
			l.stop(nil)
		}
		c.c.Close()
	case "soak_start", "soak_peek", "soak_stop":
		st, err := a.handleSoak(req)
		if err != nil {
			return fail(err)
		}
		resp.Soak = st
		resp.Mono = mono()
	default:
		return fail(fmt.Errorf("unknown op %q", req.Op))
	}
	return resp
}
