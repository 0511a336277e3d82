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
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
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
	Op string `json:"op"` // new, call, probe, stats, wait_dead, load_start, load_peek, load_stop, close

	Client string `json:"client,omitempty"`

	// new, probe
	Addrs             []string      `json:"addrs,omitempty"`
	Balancer          string        `json:"balancer,omitempty"` // the client's policy; "" the default
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
}

// agentResp is the agent's answer.
type agentResp struct {
	ID    int64         `json:"id"`
	Err   string        `json:"err,omitempty"` // the request itself failed
	Mono  int64         `json:"mono,omitempty"`
	Call  *callResult   `json:"call,omitempty"`
	Stats *client.Stats `json:"stats,omitempty"`
	Load  *loadSummary  `json:"load,omitempty"`
}

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
}

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
	a.mu.Unlock()
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
		DialTimeout: req.DialTimeout,
		Balancer:    balancer.Config{Policy: balancer.Policy(req.Balancer)},
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
	default:
		return fail(fmt.Errorf("unknown op %q", req.Op))
	}
	return resp
}

// agentLoad is steady load: each worker makes one call per pace, whatever
// the outcome of the last, so failures do not turn into a busy loop.
type agentLoad struct {
	req     agentReq
	stopCh  chan struct{}
	wg      sync.WaitGroup
	running atomic.Int64 // workers still running

	mu   sync.Mutex
	recs []loadRec
	// inCall holds each worker's current call start (0: none).
	inCall []atomic.Int64
}

type loadRec struct {
	start, end int64
	kind       string // "" for success
	err        string
}

func startLoad(c *client.Client, req agentReq) *agentLoad {
	if req.Workers <= 0 {
		req.Workers = 1
	}
	if req.Pace <= 0 {
		req.Pace = 10 * time.Millisecond
	}
	l := &agentLoad{req: req, stopCh: make(chan struct{}), inCall: make([]atomic.Int64, req.Workers)}
	body := req.body()
	for w := range req.Workers {
		l.running.Add(1)
		l.wg.Go(func() {
			defer l.running.Add(-1)
			// Workers start spread over one pace.
			next := time.Now().Add(req.Pace * time.Duration(w) / time.Duration(req.Workers))
			for {
				t := time.NewTimer(time.Until(next))
				select {
				case <-l.stopCh:
					t.Stop()
					return
				case <-t.C:
				}
				next = next.Add(req.Pace)
				if now := time.Now(); next.Before(now) {
					next = now // after a long call, no burst to catch up
				}
				start := mono()
				l.inCall[w].Store(start)
				r := doCall(c, req.Method, body, req.Timeout)
				l.inCall[w].Store(0)
				rec := loadRec{start: r.Start, end: r.End}
				if !r.ok() {
					rec.kind, rec.err = "untyped", r.Err
					if len(r.Kinds) > 0 {
						rec.kind = r.Kinds[0]
					}
				}
				l.mu.Lock()
				l.recs = append(l.recs, rec)
				l.mu.Unlock()
			}
		})
	}
	return l
}

// stop stops the workers, waits for the calls in flight until their
// deadline plus hangGrace, and summarises.
func (l *agentLoad) stop(marks []int64) *loadSummary {
	close(l.stopCh)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(l.req.Timeout + hangGrace):
	}
	return l.summary(marks)
}

// summary summarises the calls so far; a call still running past its
// deadline plus hangGrace counts as hung.
func (l *agentLoad) summary(marks []int64) *loadSummary {
	s := &loadSummary{Errors: map[string]int{}, FirstOK: make([]int64, len(marks))}
	now := mono()
	for w := range l.inCall {
		if st := l.inCall[w].Load(); st != 0 && since(st, now) > l.req.Timeout+hangGrace {
			s.Hung++
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		s.Calls++
		took := since(r.start, r.end)
		s.MaxMS = max(s.MaxMS, ms(took))
		if took > l.req.Timeout+lateGrace {
			s.Late++
		}
		if r.kind != "" {
			s.Errors[r.kind]++
			if r.kind == "untyped" && len(s.Untyped) < 5 {
				s.Untyped = append(s.Untyped, r.err)
			}
			continue
		}
		s.OK++
		for i, m := range marks {
			if r.start >= m && (s.FirstOK[i] == 0 || r.end < s.FirstOK[i]) {
				s.FirstOK[i] = r.end
			}
		}
	}
	return s
}
