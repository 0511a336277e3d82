package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// PONG-delay scenario (tcppro only: the raw line protocol has no PING). A
// tcppro server child at its defaults serves "sleep" and "echo". Frame-level
// peers (wire.Framer) each keep PongSlow "sleep PongSleep" calls running on
// their connection, renewed as they complete, and send a PING every
// PongEvery; a reader goroutine per peer timestamps each PONG. A PING's RTT
// runs from just before its write to its PONG's arrival. The same is
// measured on connections without slow calls, as the baseline. The
// protocol requires a PONG at once, ahead of queued frames and without
// waiting for a worker (docs/protocol.md §1, §8), so slow handlers should
// add nothing.

// pongPhase is one phase of a PONG-delay measurement: PINGs sent in the
// window and their RTTs.
type pongPhase struct {
	SlowPerConn int     `json:"slow_calls_per_conn"`
	Pings       int     `json:"pings"`
	P50         float64 `json:"rtt_p50_ms"`
	P99         float64 `json:"rtt_p99_ms"`
	Max         float64 `json:"rtt_max_ms"`
	SleepsDone  int     `json:"sleeps_completed"`
	Window      float64 `json:"window_s"`
	// HostPressure: as in tputSample, over this phase's window.
	HostPressure float64 `json:"host_cpu_pressure_pct"`
}

// pongSample is one PONG-delay measurement: both phases, one server.
type pongSample struct {
	Conns int       `json:"conns"`
	Idle  pongPhase `json:"idle"`
	Slow  pongPhase `json:"slow"`
}

// measurePong starts a fresh tcppro server child and measures both phases
// on it, with new connections for each, the idle phase first on odd reps.
func measurePong(ctx context.Context, cfg *Config, sc scenario, rep int) (pongSample, error) {
	s := pongSample{Conns: sc.conns}
	lifetime := 2*(cfg.Warmup+cfg.PongWindow) + 2*time.Minute
	srv, err := startServerChild(ctx, cfg, kindTcppro, sc.conns+100, lifetime, func(spec *childSpec) {
		spec.Handler = "sleep"
	})
	if err != nil {
		return s, err
	}
	defer srv.stop(5 * time.Second)
	phases := []*pongPhase{&s.Idle, &s.Slow}
	if rep%2 == 1 {
		phases = []*pongPhase{&s.Slow, &s.Idle}
	}
	for _, ph := range phases {
		slow := 0
		if ph == &s.Slow {
			slow = sc.inflight
		}
		if *ph, err = runPongPhase(ctx, cfg, srv.addr, sc.conns, slow); err != nil {
			what := "idle conns"
			if slow > 0 {
				what = "with slow calls"
			}
			return s, fmt.Errorf("%s: %w", what, err)
		}
	}
	return s, nil
}

// pongRun is one phase in progress.
type pongRun struct {
	cfg       *Config
	slow      int
	sleepBody []byte
	done      chan struct{} // closed: writers stop
	stopping  atomic.Bool   // set before the connections are closed

	errMu    sync.Mutex
	firstErr error
}

func (r *pongRun) fail(err error) {
	if err == nil || r.stopping.Load() {
		return
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.firstErr == nil {
		r.firstErr = err
	}
}

func (r *pongRun) err() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.firstErr
}

// pongPeer is one connection of the frame-level peer.
type pongPeer struct {
	run *pongRun
	id  int
	c   net.Conn
	fr  *wire.Framer
	wmu sync.Mutex // one frame written at a time: PINGs, REQUESTs, PONGs

	mu      sync.Mutex
	pending map[uint64]time.Time // PING data → time just before its write

	renew chan struct{} // reader → writer: a sleep completed (capacity slow)
	// Written by the reader goroutine only, read after it has returned.
	rtts  []latRec    // PING send time, RTT
	slept []time.Time // arrival of each sleep's answer
}

func runPongPhase(ctx context.Context, cfg *Config, addr string, n, slow int) (pongPhase, error) {
	ph := pongPhase{SlowPerConn: slow}
	run := &pongRun{cfg: cfg, slow: slow, sleepBody: []byte(cfg.PongSleep.String()), done: make(chan struct{})}
	peers := make([]*pongPeer, n)
	err := dialAll(addr, n, func(c net.Conn, i int) error {
		p, err := newPongPeer(run, c, i)
		if err != nil {
			c.Close()
			return err
		}
		peers[i] = p
		return nil
	})
	var writers, readers sync.WaitGroup
	defer func() {
		// On every path: stop the writers, close the connections (the
		// server then cancels the sleeps still running), wait for all.
		run.stopping.Store(true)
		select {
		case <-run.done:
		default:
			close(run.done)
		}
		writers.Wait()
		for _, p := range peers {
			if p != nil {
				p.c.Close()
			}
		}
		readers.Wait()
	}()
	if err != nil {
		return ph, err
	}
	hard := time.Now().Add(cfg.Warmup + cfg.PongWindow + 30*time.Second)
	for i, p := range peers {
		_ = p.c.SetDeadline(hard)
		writers.Add(1)
		go func() {
			defer writers.Done()
			// Spread the PINGs of the connections over the interval.
			run.fail(p.writer(time.Duration(i)*cfg.PongEvery/time.Duration(n), hard))
		}()
		readers.Add(1)
		go func() {
			defer readers.Done()
			run.fail(p.reader())
		}()
	}
	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		return ph, err
	}
	if err := run.err(); err != nil {
		return ph, fmt.Errorf("warm-up: %w", err)
	}
	psi0, t0 := hostCPUPressure(), time.Now()
	if err := sleepCtx(ctx, cfg.PongWindow); err != nil {
		return ph, err
	}
	psi1, t1 := hostCPUPressure(), time.Now()
	ph.HostPressure = pressurePct(psi0, psi1, t1.Sub(t0))
	close(run.done)
	writers.Wait()
	// Let the last PINGs' PONGs arrive (bounded), then read the records.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if unansweredIn(peers, t0, t1) == 0 || run.err() != nil {
			break
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return ph, err
		}
	}
	lost := unansweredIn(peers, t0, t1)
	run.stopping.Store(true)
	for _, p := range peers {
		p.c.Close()
	}
	readers.Wait()
	if err := run.err(); err != nil {
		return ph, err
	}
	if lost > 0 {
		return ph, fmt.Errorf("%d PINGs sent in the window got no PONG within 2s", lost)
	}
	var rtts []time.Duration
	for _, p := range peers {
		for _, r := range p.rtts {
			if !r.start.Before(t0) && r.start.Before(t1) {
				rtts = append(rtts, r.d)
			}
		}
		for _, at := range p.slept {
			if !at.Before(t0) && at.Before(t1) {
				ph.SleepsDone++
			}
		}
	}
	if len(rtts) == 0 {
		return ph, errors.New("no PING sent in the measured window")
	}
	if slow > 0 && ph.SleepsDone == 0 && cfg.PongWindow > cfg.PongSleep {
		return ph, errors.New("no sleep call completed in the measured window")
	}
	slices.Sort(rtts)
	ph.Pings = len(rtts)
	ph.P50, ph.P99, ph.Max = ms(quantile(rtts, 0.50)), ms(quantile(rtts, 0.99)), ms(rtts[len(rtts)-1])
	ph.Window = t1.Sub(t0).Seconds()
	return ph, nil
}

// unansweredIn counts the PINGs sent in [from, to) still awaiting a PONG.
func unansweredIn(peers []*pongPeer, from, to time.Time) int {
	n := 0
	for _, p := range peers {
		p.mu.Lock()
		for _, sent := range p.pending {
			if !sent.Before(from) && sent.Before(to) {
				n++
			}
		}
		p.mu.Unlock()
	}
	return n
}

// newPongPeer opens the connection: the HELLO exchange, then one echo call
// to check that the server answers requests.
func newPongPeer(run *pongRun, c net.Conn, id int) (*pongPeer, error) {
	p := &pongPeer{
		run: run, id: id, c: c,
		fr:      wire.NewFramer(c, bufio.NewReader(c)),
		pending: map[uint64]time.Time{},
		renew:   make(chan struct{}, run.slow),
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.fr.ClientHandshake(wire.Hello{}); err != nil {
		return nil, fmt.Errorf("HELLO exchange: %w", err)
	}
	var body [msgSize]byte
	fillMsg(body[:], id, 0)
	if err := p.fr.WriteRequest(1, false, 10_000, "echo", nil, body[:]); err != nil {
		return nil, err
	}
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("echo: %w", err)
		}
		switch f.Type {
		case wire.TypePing:
			data, err := wire.ParsePing(f.Payload)
			if err == nil {
				err = p.fr.WritePong(data)
			}
			if err != nil {
				return nil, err
			}
			continue
		case wire.TypeResponse:
			_, got, err := wire.ParseResponse(f.Flags, f.Payload)
			if err != nil || f.ID != 1 || !bytes.Equal(got, body[:]) {
				return nil, fmt.Errorf("echo: bad answer id=%d body=%q err=%v", f.ID, got, err)
			}
		default:
			return nil, fmt.Errorf("echo: unexpected %v", f.Header)
		}
		break
	}
	_ = c.SetDeadline(time.Time{})
	return p, nil
}

// writer sends a PING every PongEvery (after offset) and keeps run.slow
// sleep calls running: the first ones spread over one sleep, then a new one
// each time one completes. It stops when run.done closes, at hard, or after
// a count far above what the window needs.
func (p *pongPeer) writer(offset time.Duration, hard time.Time) error {
	cfg := p.run.cfg
	t := time.NewTimer(offset)
	select {
	case <-t.C:
	case <-p.run.done:
		t.Stop()
		return nil
	}
	tick := time.NewTicker(cfg.PongEvery)
	defer tick.Stop()
	started := time.Now()
	nextID, issued := uint64(1), 0 // id 1 was the echo
	sleep := func() error {
		p.wmu.Lock()
		defer p.wmu.Unlock()
		nextID++
		return p.fr.WriteRequest(nextID, false, uint32((cfg.PongSleep + 30*time.Second).Milliseconds()), "sleep", nil, p.run.sleepBody)
	}
	limit := 2*int(time.Until(hard)/cfg.PongEvery) + 1000
	for seq := uint64(0); seq < uint64(limit) && time.Now().Before(hard); {
		for issued < p.run.slow && time.Since(started) >= time.Duration(issued)*cfg.PongSleep/time.Duration(p.run.slow) {
			if err := sleep(); err != nil {
				return err
			}
			issued++
		}
		select {
		case <-tick.C:
			if err := p.ping(seq); err != nil {
				return err
			}
			seq++
		case <-p.renew:
			if err := sleep(); err != nil {
				return err
			}
		case <-p.run.done:
			return nil
		}
	}
	return nil
}

func (p *pongPeer) ping(seq uint64) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.mu.Lock()
	p.pending[seq] = time.Now()
	p.mu.Unlock()
	return p.fr.WritePing(seq)
}

// reader times the PONGs, answers the server's PINGs, and hands completed
// sleeps to the writer for renewal. It returns when the connection fails
// or is closed.
func (p *pongPeer) reader() error {
	for {
		f, err := p.fr.ReadFrame()
		now := time.Now()
		if err != nil {
			return fmt.Errorf("conn %d: %w", p.id, err)
		}
		switch f.Type {
		case wire.TypePong:
			data, err := wire.ParsePing(f.Payload)
			if err != nil {
				return err
			}
			p.mu.Lock()
			sent, ok := p.pending[data]
			delete(p.pending, data)
			p.mu.Unlock()
			if !ok {
				return fmt.Errorf("conn %d: PONG %d answers no PING awaiting one", p.id, data)
			}
			p.rtts = append(p.rtts, latRec{sent, now.Sub(sent)})
		case wire.TypePing:
			data, err := wire.ParsePing(f.Payload)
			if err == nil {
				p.wmu.Lock()
				err = p.fr.WritePong(data)
				p.wmu.Unlock()
			}
			if err != nil {
				return err
			}
		case wire.TypeResponse:
			_, body, err := wire.ParseResponse(f.Flags, f.Payload)
			if err != nil || f.More() || !bytes.Equal(body, p.run.sleepBody) {
				return fmt.Errorf("conn %d: bad sleep answer %v body=%q err=%v", p.id, f.Header, body, err)
			}
			p.slept = append(p.slept, now)
			select {
			case p.renew <- struct{}{}:
			default:
				return fmt.Errorf("conn %d: more sleep answers than sleeps running", p.id)
			}
		case wire.TypeError:
			code, _, msg, _ := wire.ParseError(f.ID, f.Flags, f.Payload)
			return fmt.Errorf("conn %d: ERROR id=%d %v: %s", p.id, f.ID, code, msg)
		case wire.TypeGoAway:
			return fmt.Errorf("conn %d: GOAWAY from server", p.id)
		default:
			return fmt.Errorf("conn %d: unexpected %v", p.id, f.Header)
		}
	}
}
