package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"time"
)

// Burst scenario: every connection alternates an idle gap (uniform in
// [BurstGapMin, BurstGapMax], from a generator seeded with BurstSeed and the
// connection's index, so both sides draw the same gaps) and a burst of two
// concurrent calls; the next gap starts once both answers are in. The
// latency of every call is recorded, from just before its request is
// written (raw) or its Call starts (tcppro) to the verified answer.

// latencyLoad is a load generator that records the latency of each call.
type latencyLoad interface {
	// latencies returns, sorted, those of the calls started in [from, to)
	// and completed (call it after stop).
	latencies(from, to time.Time) []time.Duration
}

type latRec struct {
	start time.Time
	d     time.Duration
}

// latLog is one goroutine's record of its calls.
type latLog struct {
	recs []latRec
}

func collectLatencies(logs []latLog, from, to time.Time) []time.Duration {
	var out []time.Duration
	for i := range logs {
		for _, r := range logs[i].recs {
			if !r.start.Before(from) && r.start.Before(to) {
				out = append(out, r.d)
			}
		}
	}
	slices.Sort(out)
	return out
}

// quantile is the nearest-rank q-quantile of sorted (not empty).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// gapGen draws one connection's idle gaps.
type gapGen struct {
	rng      *rand.Rand
	min, max time.Duration
}

func newGapGen(cfg *Config, conn int) gapGen {
	return gapGen{rng: rand.New(rand.NewPCG(cfg.BurstSeed, uint64(conn))), min: cfg.BurstGapMin, max: cfg.BurstGapMax}
}

// wait sleeps for the next gap; false if done closed first.
func (g gapGen) wait(t *time.Timer, done <-chan struct{}) bool {
	t.Reset(g.min + time.Duration(g.rng.Int64N(int64(g.max-g.min)+1)))
	select {
	case <-t.C:
		return true
	case <-done:
		t.Stop()
		return false
	}
}

// burstStopGrace is how long stop lets the bursts in flight finish (so the
// calls at the end of the window are not cut off) before failing their I/O.
const burstStopGrace = 2 * time.Second

// stopGracefully stops new bursts, waits up to grace for the load goroutines
// to finish their burst, then calls force and waits for them.
func (b *base) stopGracefully(grace time.Duration, force func()) {
	b.stopOnce.Do(func() {
		b.stopped.Store(true)
		close(b.done)
		finished := make(chan struct{})
		go func() {
			b.wg.Wait()
			close(finished)
		}()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			force()
			<-finished
		}
	})
	b.wg.Wait()
}

func newBurstLoad(cfg *Config, kind, addr string, conns int) (loadGen, error) {
	switch kind {
	case kindRaw, kindGnet:
		return newRawBurstLoad(cfg, addr, conns)
	case kindTcppro, kindTcpproNetConn, kindGrpc:
		return newCallBurstLoad(cfg, kind, addr, conns)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// ---- raw: a writer and a reader goroutine per connection ----

type rawBurstLoad struct {
	cfg   *Config
	conns []net.Conn
	logs  []latLog // one per connection, its reader's
	base
}

func newRawBurstLoad(cfg *Config, addr string, conns int) (*rawBurstLoad, error) {
	l := &rawBurstLoad{cfg: cfg, conns: make([]net.Conn, conns), logs: make([]latLog, conns)}
	l.init(conns)
	for i := range l.conns {
		c, err := dialRaw(addr, nil)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("raw dial %d: %w", i, err)
		}
		l.conns[i] = c
	}
	return l, nil
}

func (l *rawBurstLoad) start(hardDeadline time.Time, maxPerConn uint64) {
	for i, c := range l.conns {
		_ = c.SetDeadline(hardDeadline)
		// starts carries each message's send time to the reader, sent just
		// before the message is written; next tells the writer that both
		// echoes of the burst are in. Each goroutine closes its channel when
		// it returns, which releases the other.
		starts := make(chan time.Time, 2)
		next := make(chan struct{}, 1)
		l.wg.Add(2)
		go func() {
			defer l.wg.Done()
			l.fail(l.writer(c, i, starts, next, hardDeadline, maxPerConn/2+1))
		}()
		go func() {
			defer l.wg.Done()
			l.fail(l.reader(c, i, starts, next))
		}()
	}
}

func (l *rawBurstLoad) writer(c net.Conn, id int, starts chan<- time.Time, next <-chan struct{}, hard time.Time, maxBursts uint64) error {
	defer close(starts)
	gaps := newGapGen(l.cfg, id)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var a, b [msgSize]byte
	for k := uint64(0); k < maxBursts && time.Now().Before(hard); k++ {
		if !gaps.wait(t, l.done) {
			return nil
		}
		fillMsg(a[:], id, 2*k)
		fillMsg(b[:], id, 2*k+1)
		starts <- time.Now()
		if _, err := c.Write(a[:]); err != nil {
			return err
		}
		starts <- time.Now()
		if _, err := c.Write(b[:]); err != nil {
			return err
		}
		if _, ok := <-next; !ok {
			return nil // the reader failed (and said why) or was stopped
		}
	}
	return nil
}

func (l *rawBurstLoad) reader(c net.Conn, id int, starts <-chan time.Time, next chan<- struct{}) error {
	defer close(next)
	log, ctr := &l.logs[id], &l.counters[id]
	var got, want [msgSize]byte
	for seq := uint64(0); ; seq++ {
		sent, ok := <-starts
		if !ok {
			return nil
		}
		if _, err := io.ReadFull(c, got[:]); err != nil {
			return err
		}
		d := time.Since(sent)
		fillMsg(want[:], id, seq)
		if got != want {
			return fmt.Errorf("conn %d seq %d: echo mismatch: %q", id, seq, got[:])
		}
		log.recs = append(log.recs, latRec{sent, d})
		ctr.n.Add(1)
		if seq%2 == 1 {
			next <- struct{}{} // the writer waits for it: never full
		}
	}
}

func (l *rawBurstLoad) stop() {
	l.stopGracefully(burstStopGrace, func() {
		for _, c := range l.conns {
			_ = c.SetDeadline(time.Now())
		}
	})
}

func (l *rawBurstLoad) close() {
	for _, c := range l.conns {
		if c != nil {
			c.Close()
		}
	}
}

func (l *rawBurstLoad) latencies(from, to time.Time) []time.Duration {
	return collectLatencies(l.logs, from, to)
}

// ---- tcppro: two goroutines calling one client at each burst ----

type callBurstLoad struct {
	cfg    *Config
	conns  []rpcConn
	logs   []latLog // two per connection, one per calling goroutine
	cancel context.CancelFunc
	base
}

func newCallBurstLoad(cfg *Config, kind, addr string, conns int) (*callBurstLoad, error) {
	l := &callBurstLoad{cfg: cfg, logs: make([]latLog, 2*conns), cancel: func() {}}
	l.init(2 * conns)
	var err error
	if l.conns, err = newRPCConns(kind, addr, conns, nil); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *callBurstLoad) start(hardDeadline time.Time, maxPerConn uint64) {
	ctx, cancel := context.WithDeadline(context.Background(), hardDeadline)
	l.cancel = cancel
	for i, cl := range l.conns {
		// The coordinator hands each caller its sequence number at the
		// burst and waits for both results before the next gap.
		calls := [2]chan uint64{make(chan uint64), make(chan uint64)}
		results := make(chan error, 2)
		for j := range 2 {
			id := 2*i + j
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				err := l.caller(ctx, cl, i, &l.logs[id], &l.counters[id], calls[j], results)
				l.fail(err)
			}()
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer close(calls[0])
			defer close(calls[1])
			gaps := newGapGen(l.cfg, i)
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for k := uint64(0); k < maxPerConn/2+1 && time.Now().Before(hardDeadline); k++ {
				if !gaps.wait(t, l.done) {
					return
				}
				calls[0] <- 2 * k
				calls[1] <- 2*k + 1
				if e0, e1 := <-results, <-results; e0 != nil || e1 != nil {
					return // the caller recorded the error
				}
			}
		}()
	}
}

// caller makes one call per sequence number received, and reports each
// result; it returns after the first failure.
func (l *callBurstLoad) caller(ctx context.Context, cl rpcConn, conn int, log *latLog, ctr *counter, calls <-chan uint64, results chan<- error) error {
	var payload [msgSize]byte
	resp := make([]byte, 0, msgSize)
	for seq := range calls {
		fillMsg(payload[:], conn, seq)
		start := time.Now()
		var err error
		resp, err = cl.call(ctx, payload[:], resp[:0])
		d := time.Since(start)
		switch {
		case err != nil:
			err = fmt.Errorf("conn %d seq %d: %w", conn, seq, err)
		case !bytes.Equal(resp, payload[:]):
			err = fmt.Errorf("conn %d seq %d: echo mismatch: %q", conn, seq, resp)
		}
		results <- err
		if err != nil {
			return err
		}
		log.recs = append(log.recs, latRec{start, d})
		ctr.n.Add(1)
	}
	return nil
}

func (l *callBurstLoad) stop() {
	l.stopGracefully(burstStopGrace, func() { l.cancel() })
	l.cancel()
}

func (l *callBurstLoad) close() { closeRPCConns(l.conns) }

func (l *callBurstLoad) latencies(from, to time.Time) []time.Duration {
	return collectLatencies(l.logs, from, to)
}
