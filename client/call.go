package client

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// invoke performs a call: it picks a ready connection, sends the call on
// it and waits for the answer, and retries a call the server certainly did
// not process — on another server when there is one.
func (c *Client) invoke(ctx context.Context, method string, body, dst []byte, opts *CallOptions) ([]byte, error) {
	if ctx.Err() != nil {
		return dst, ctxError(ctx) // never sent
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.cfg.CallTimeout)
	}
	cl := getCall()
	defer putCall(cl)
	cl.core.Method, cl.core.Body, cl.core.Deadline = method, body, netconn.At(deadline)
	if opts != nil {
		cl.core.Metadata = opts.Metadata
	}
	var avoid *endpoint
	for attempt := 0; ; attempt++ {
		cc, err := c.pick(ctx, cl, deadline, avoid)
		if err != nil {
			return dst, err
		}
		start := c.bal.Start(cc.ep.be)
		resp, md, err := cc.roundTrip(ctx, cl, dst)
		c.bal.Done(cc.ep.be, start, outcome(err))
		if opts != nil && opts.ResponseMetadata != nil {
			*opts.ResponseMetadata = md
		}
		if err == nil {
			c.budget.success()
			return resp, nil
		}
		if !session.RetrySafe(err) || attempt >= c.cfg.MaxRetries {
			return dst, err
		}
		if refused(err) {
			// The server is short of capacity: back off, spend the retry
			// budget, and try another server.
			if !c.budget.retry() {
				c.stats.retriesThrottled.Add(1)
				return dst, err
			}
			avoid = cc.ep
			if werr := cl.sleep(ctx, deadline, c.cfg.RetryBackoff.Delay(attempt)); werr != nil {
				return dst, err
			}
		}
		c.stats.retries.Add(1)
	}
}

// outcome is how the balancer counts a call that ended with err: answers
// (application errors too) are samples of the server's latency; refusals
// and timeouts count against its success rate; the end of its connection
// is a transport failure; a GOAWAY, the caller's cancellation and local
// refusals count for nothing.
func outcome(err error) balancer.Outcome {
	if err == nil {
		return balancer.Answered
	}
	var se *session.Error
	var de *session.DeadlineError
	switch {
	case errors.As(err, &se):
		if se.Conn || se.Code.Retryable() {
			return balancer.Refused
		}
		return balancer.Answered
	case errors.As(err, &de):
		return balancer.TimedOut
	case errors.Is(err, session.ErrGoAway), errors.Is(err, context.Canceled),
		errors.Is(err, ErrClosed), errors.Is(err, session.ErrTooLarge):
		return balancer.Abandoned
	}
	return balancer.TransportFailure
}

// call is one call's state; pooled.
type call struct {
	core core.Call     // what the connection's core holds; Owner is the call
	done chan struct{} // capacity 1: the core ended the call
	dst  []byte
	resp []byte
	md   wire.Metadata
	err  error
	// A timer, armed only while the call waits outside a connection.
	timer *time.Timer
	armed bool
}

var callPool = sync.Pool{New: func() any {
	cl := &call{done: make(chan struct{}, 1)}
	cl.core.Owner = cl
	return cl
}}

func getCall() *call { return callPool.Get().(*call) }

func putCall(cl *call) {
	if cl.armed {
		cl.timer.Stop()
		cl.armed = false
	}
	cl.core.Method, cl.core.Body, cl.core.Metadata = "", nil, nil
	cl.dst, cl.resp, cl.md, cl.err = nil, nil, nil, nil
	callPool.Put(cl)
}

// ended is called by the connection's core, through its Sink, when it ends
// the call: the answer is appended to dst at once (body aliases the core's
// buffers).
func (cl *call) ended(body []byte, md wire.Metadata, err error) {
	if err == nil {
		cl.resp = append(cl.dst, body...)
	} else if md == nil {
		md = errorMetadata(err) // an ERROR's, for ResponseMetadata
	}
	cl.md, cl.err = md, err
	cl.done <- struct{}{}
}

// errorMetadata is the metadata of an ERROR answer, nil for other errors.
func errorMetadata(err error) wire.Metadata {
	var e *session.Error
	if errors.As(err, &e) {
		return e.Metadata
	}
	return nil
}

// expired returns a channel that fires at the call's deadline, arming a
// timer the first time: only calls that wait outside a connection (for
// one to be ready, or between retries) need one; on a connection, the
// core ends the call at its deadline.
func (cl *call) expired(deadline time.Time) <-chan time.Time {
	if !cl.armed {
		if cl.timer == nil {
			cl.timer = time.NewTimer(time.Until(deadline))
		} else {
			cl.timer.Reset(time.Until(deadline))
		}
		cl.armed = true
	}
	return cl.timer.C
}

// sleep waits d before a retry, or fails when ctx or the deadline ends
// first.
func (cl *call) sleep(ctx context.Context, deadline time.Time, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	if time.Until(deadline) <= d {
		return &session.DeadlineError{}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxError(ctx)
	}
}

// RetryBudget limits the retries of refused calls (the model of grpc-go's
// retry throttling): the budget holds up to Tokens tokens and starts full;
// each refused attempt takes one, each successful call gives back Ratio;
// a refused call is retried only while more than half the tokens remain.
// So when a fleet refuses most calls, clients stop multiplying the load.
type RetryBudget struct {
	Tokens float64 // default 10
	Ratio  float64 // default 0.1
}

// RetryBudget defaults.
const (
	DefaultRetryTokens = 10
	DefaultRetryRatio  = 0.1
)

func (b RetryBudget) withDefaults() RetryBudget {
	if b.Tokens == 0 {
		b.Tokens = DefaultRetryTokens
	}
	if b.Ratio == 0 {
		b.Ratio = DefaultRetryRatio
	}
	return b
}

// retryBudget is a RetryBudget's tokens, in thousandths.
type retryBudget struct {
	max, ratio int64
	tokens     atomic.Int64
}

func newRetryBudget(b RetryBudget) *retryBudget {
	r := &retryBudget{max: int64(b.Tokens * 1000), ratio: int64(math.Round(b.Ratio * 1000))}
	r.tokens.Store(r.max)
	return r
}

// retry takes a token for a refused attempt and reports whether it may be
// retried.
func (r *retryBudget) retry() bool {
	for {
		t := r.tokens.Load()
		n := max(t-1000, 0)
		if r.tokens.CompareAndSwap(t, n) {
			return n > r.max/2
		}
	}
}

// success gives back a fraction of a token.
func (r *retryBudget) success() {
	for {
		t := r.tokens.Load()
		if t >= r.max {
			return
		}
		if r.tokens.CompareAndSwap(t, min(t+r.ratio, r.max)) {
			return
		}
	}
}
