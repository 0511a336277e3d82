package verify

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tcppro/tcppro/client"
)

// The soak's side of the agent: many clients, one connection each, created
// at a bounded pace, under a bounded call rate spread over them at random
// (soak_start); cumulative counters on request (soak_peek); the end of the
// load, a wait for the calls in flight and the final counters (soak_stop).
// An agent runs at most one soak.

// soakStatus is what an agent's soak has done so far. The counters are
// cumulative from its soak_start.
type soakStatus struct {
	Clients    int    `json:"clients"`               // created so far
	Ready      int    `json:"ready"`                 // with a ready connection now
	Warm       int    `json:"warm"`                  // whose first call has ended
	NewErrors  int    `json:"new_errors,omitempty"`  // client.New failures
	FirstError string `json:"first_error,omitempty"` // the first of them

	Started int64            `json:"started"` // calls started
	OK      int64            `json:"ok"`
	Failed  int64            `json:"failed"`
	Errors  map[string]int64 `json:"errors,omitempty"`  // failed calls by kind (the first of errorKinds)
	Untyped []string         `json:"untyped,omitempty"` // the first few errors matching no typed error
	// InFlight is the calls started and not ended; Overdue those of them
	// past their deadline + hangGrace (after soak_stop: hung).
	InFlight int `json:"in_flight"`
	Overdue  int `json:"overdue"`
	// Skipped counts calls not started because soakMaxInFlight calls
	// were in flight already (calls that do not end would show here).
	Skipped int64 `json:"skipped,omitempty"`
	// Late counts the calls that ended more than lateGrace after their
	// deadline, LateCalls are the first soakMaxLate of them; LateStalled
	// counts those that were late by no more than the time their own
	// process did not run (see Stalls) and lateGrace.
	Late        int64        `json:"late"`
	LateCalls   []failedCall `json:"late_calls,omitempty"`
	LateStalled int64        `json:"late_stalled,omitempty"`
	MaxMS       float64      `json:"max_ms"`

	// Stalls counts the times the agent's process did not run for
	// soakStallMin or more (frozen, or not scheduled by a busy machine),
	// as its watchdog saw them; StallMaxMS is the longest, StallTotalMS
	// their sum.
	Stalls       int     `json:"stalls,omitempty"`
	StallMaxMS   float64 `json:"stall_max_ms,omitempty"`
	StallTotalMS float64 `json:"stall_total_ms,omitempty"`
	// RecentStalls are the last soakRecentStalls stalls (mono times).
	RecentStalls []span `json:"recent_stalls,omitempty"`

	// Sums over the clients' client.Stats.
	Dials        uint64 `json:"dials"`
	DialFailures uint64 `json:"dial_failures"`
	Reconnects   uint64 `json:"reconnects"`
	DeadPeers    uint64 `json:"dead_peers"`
	GoAways      uint64 `json:"goaways"`
}

const (
	// soakMaxLate caps soakStatus.LateCalls.
	soakMaxLate = 1000
	// soakMaxInFlight bounds an agent's calls in flight: at the rates the
	// soak uses, calls that end by their deadline never come near it.
	soakMaxInFlight = 2000
	// soakBodySize is the echo calls' body.
	soakBodySize = 64
	// soakSleep is the body of the sleep calls (one call in five): a call
	// the server holds a little, so that some are in flight when a fault
	// strikes.
	soakSleep = "20ms"
	// soakWatchTick is the watchdog's period; a tick that comes
	// soakStallMin late or more is a stall of the process.
	soakWatchTick = 100 * time.Millisecond
	soakStallMin  = 300 * time.Millisecond
	// soakMaxStalls caps the stalls kept (the oldest are dropped: only
	// the calls of the last minutes need them); soakRecentStalls are
	// reported with every status.
	soakMaxStalls    = 4096
	soakRecentStalls = 32
)

// span is a window in a report: mono times.
type span struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// agentSoak is one agent's soak: its clients, its ramp and its load. Each
// client makes a first call as soon as it is created (counted with the
// others), so that every connection has served a call before the soak's
// first window: what a server keeps for a connection that has served one
// is then in both windows.
type agentSoak struct {
	req  agentReq
	stop chan struct{}
	ramp sync.WaitGroup // the ramp and the load's pacer
	wg   sync.WaitGroup // the calls

	mu        sync.Mutex
	clients   []*client.Client
	newErrors int
	firstErr  string
	st        soakStatus              // call counters
	inFlight  map[uint64]inFlightCall // by call id
	// loadInFlight counts the load's calls in flight (not the first calls).
	loadInFlight int
	nextID       uint64
	warm         int // first calls ended
	stopped      bool
	watch        *watchdog // when the process did not run
}

// startSoak creates req.Conns clients of req.Addrs at req.RampRate per
// second and starts req.Rate calls per second spread over them.
func (a *agentProc) startSoak(req agentReq) (*agentSoak, error) {
	if req.Conns <= 0 || req.Rate < 0 || req.RampRate <= 0 || req.Timeout <= 0 {
		return nil, fmt.Errorf("soak_start: conns %d, rate %v, ramp rate %v, timeout %v: want > 0, >= 0, > 0, > 0", req.Conns, req.Rate, req.RampRate, req.Timeout)
	}
	s := &agentSoak{req: req, stop: make(chan struct{}), inFlight: map[uint64]inFlightCall{}, watch: startWatchdog()}
	s.st.Errors = map[string]int64{}
	s.ramp.Go(func() { s.rampUp(a) })
	s.ramp.Go(s.load)
	return s, nil
}

// paced calls fn every 10 ms with the number of events due at rate per
// second since the last call, until stop is closed or fn returns false.
func paced(stop <-chan struct{}, rate float64, fn func(n int) bool) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	last, due := time.Now(), 0.0
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			due += rate * now.Sub(last).Seconds()
			last = now
			n := int(due)
			due -= float64(n)
			if n > 0 && !fn(n) {
				return
			}
		}
	}
}

// rampUp creates the clients at the ramp's pace.
func (s *agentSoak) rampUp(a *agentProc) {
	paced(s.stop, s.req.RampRate, func(n int) bool {
		for range n {
			s.mu.Lock()
			done := len(s.clients)+s.newErrors >= s.req.Conns || s.stopped
			s.mu.Unlock()
			if done {
				return false
			}
			c, err := a.newClient(s.req)
			s.mu.Lock()
			switch {
			case err != nil:
				s.newErrors++
				if s.firstErr == "" {
					s.firstErr = err.Error()
				}
			case s.stopped:
				s.mu.Unlock()
				c.Close()
				return false
			default:
				s.clients = append(s.clients, c)
				// Not capped: the first calls are bounded by the
				// clients.
				if id, ok := s.startLocked(false); ok {
					go func() {
						s.call(c, id, "echo", soakEcho)
						s.mu.Lock()
						s.warm++
						s.mu.Unlock()
					}()
				}
			}
			s.mu.Unlock()
		}
		return true
	})
}

// load starts calls at the soak's rate on clients picked at random (from
// a generator seeded with req.Seed: the same picks in a replay).
func (s *agentSoak) load() {
	if s.req.Rate == 0 {
		return
	}
	rng := rand.New(rand.NewPCG(s.req.Seed, 0x50a6))
	paced(s.stop, s.req.Rate, func(n int) bool {
		for range n {
			s.mu.Lock()
			if len(s.clients) == 0 {
				s.mu.Unlock()
				continue
			}
			c := s.clients[rng.IntN(len(s.clients))]
			id, ok := s.startLocked(true)
			s.mu.Unlock()
			if !ok {
				continue
			}
			method, body := "echo", soakEcho
			if rng.IntN(5) == 0 {
				method, body = "sleep", []byte(soakSleep)
			}
			go s.call(c, id, method, body)
		}
		return true
	})
}

// soakEcho is the echo calls' body.
var soakEcho = func() []byte {
	b := make([]byte, soakBodySize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// startLocked counts a call about to start and returns its id; false when
// the soak has stopped or, for a call of the load (capped), when
// soakMaxInFlight of the load's calls are in flight (the first calls do not
// count: a new agent's wait for their connections). s.mu is held.
func (s *agentSoak) startLocked(capped bool) (uint64, bool) {
	if s.stopped {
		return 0, false
	}
	if capped && s.loadInFlight >= soakMaxInFlight {
		s.st.Skipped++
		return 0, false
	}
	if capped {
		s.loadInFlight++
	}
	s.nextID++
	s.inFlight[s.nextID] = inFlightCall{start: mono(), capped: capped}
	s.st.Started++
	s.wg.Add(1)
	return s.nextID, true
}

// inFlightCall is a call in flight: when it started, and whether it is
// one of the load's (not a first call).
type inFlightCall struct {
	start  int64
	capped bool
}

// call makes one call and counts its outcome.
func (s *agentSoak) call(c *client.Client, id uint64, method string, body []byte) {
	defer s.wg.Done()
	r := doCall(c, method, body, s.req.Timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[id].capped {
		s.loadInFlight--
	}
	delete(s.inFlight, id)
	took := r.took()
	s.st.MaxMS = max(s.st.MaxMS, ms(took))
	kind := ""
	if !r.ok() {
		kind = "untyped"
		if len(r.Kinds) > 0 {
			kind = r.Kinds[0]
		}
	}
	if late := took - s.req.Timeout; late > lateGrace {
		switch {
		case s.watch.stalledIn(r.Start, r.End) >= late-lateGrace:
			s.st.LateStalled++
		default:
			s.st.Late++
			if len(s.st.LateCalls) < soakMaxLate {
				s.st.LateCalls = append(s.st.LateCalls, failedCall{Start: r.Start, End: r.End, Kind: kind})
			}
		}
	}
	if kind == "" {
		s.st.OK++
		return
	}
	s.st.Failed++
	s.st.Errors[kind]++
	if kind == "untyped" && len(s.st.Untyped) < 5 {
		s.st.Untyped = append(s.st.Untyped, r.Err)
	}
}

// status returns the counters so far, with the clients' state and
// statistics.
func (s *agentSoak) status() *soakStatus {
	s.mu.Lock()
	clients := append([]*client.Client(nil), s.clients...)
	st := s.st
	st.Errors = make(map[string]int64, len(s.st.Errors))
	for k, v := range s.st.Errors {
		st.Errors[k] = v
	}
	st.Untyped = append([]string(nil), s.st.Untyped...)
	st.LateCalls = append([]failedCall(nil), s.st.LateCalls...)
	st.NewErrors, st.FirstError, st.Warm = s.newErrors, s.firstErr, s.warm
	st.RecentStalls = s.watch.recent(soakRecentStalls)
	n, longest, total := s.watch.counts()
	st.Stalls, st.StallMaxMS, st.StallTotalMS = n, ms(longest), ms(total)
	now := mono()
	st.InFlight = len(s.inFlight)
	for _, c := range s.inFlight {
		if since(c.start, now) > s.req.Timeout+hangGrace {
			st.Overdue++
		}
	}
	s.mu.Unlock()
	st.Clients = len(clients)
	for _, c := range clients {
		for _, e := range c.Endpoints() {
			if e.State == "ready" {
				st.Ready++
			}
		}
		cs := c.Stats()
		st.Dials += cs.Dials
		st.DialFailures += cs.DialFailures
		st.Reconnects += cs.Reconnects
		st.DeadPeers += cs.DeadPeers
		st.GoAways += cs.GoAways
	}
	return &st
}

// end stops the ramp and the load, waits for the calls in flight until
// their deadline + hangGrace, takes the final counters (the calls still in
// flight are hung) and closes the clients.
func (s *agentSoak) end() *soakStatus {
	s.mu.Lock()
	already := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if !already {
		close(s.stop)
	}
	s.ramp.Wait()
	defer s.watch.close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(s.req.Timeout + hangGrace)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	st := s.status()
	s.mu.Lock()
	clients := s.clients
	s.clients = nil
	s.mu.Unlock()
	closeClients(clients)
	return st
}

// closeClients closes clients, a few at a time.
func closeClients(clients []*client.Client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.Close()
		})
	}
	wg.Wait()
}

// handleSoak answers the soak's requests.
func (a *agentProc) handleSoak(req agentReq) (*soakStatus, error) {
	a.mu.Lock()
	s := a.soak
	if req.Op == "soak_start" {
		defer a.mu.Unlock()
		if s != nil {
			return nil, errors.New("a soak is already running")
		}
		s, err := a.startSoak(req)
		if err != nil {
			return nil, err
		}
		a.soak = s
		return &soakStatus{}, nil
	}
	a.mu.Unlock()
	switch {
	case s == nil:
		return nil, errors.New("no soak running")
	case req.Op == "soak_stop":
		return s.end(), nil
	case req.Op == "soak_peek":
		return s.status(), nil
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}
