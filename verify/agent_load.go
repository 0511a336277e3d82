package verify

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/client"
)

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
	var oks []time.Duration
	defer func() {
		if len(oks) > 0 {
			slices.Sort(oks)
			s.P50MS = ms(oks[len(oks)/2])
			s.P99MS = ms(oks[min(len(oks)-1, len(oks)*99/100)])
		}
	}()
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
			if len(s.Fails) < maxFails {
				s.Fails = append(s.Fails, failedCall{Start: r.start, End: r.end, Kind: r.kind})
			}
			continue
		}
		s.OK++
		oks = append(oks, took)
		for i, m := range marks {
			if r.start >= m && (s.FirstOK[i] == 0 || r.end < s.FirstOK[i]) {
				s.FirstOK[i] = r.end
			}
		}
	}
	return s
}
