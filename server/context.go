package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// reqCtx is a handler's context: the connection's context (its values, and
// its cancellation) plus the request's deadline, cancelled by the server
// when the client cancels the request or the connection ends. It arms a
// timer and a hook on its parent only if the handler asks for Done, so a
// handler that never waits costs neither, and finishing such a request
// takes no lock.
type reqCtx struct {
	id       uint64 // the request's
	parent   context.Context
	deadline time.Time // zero: none

	mu    sync.Mutex    // guards done, err and armed once the state is ctxArmed
	state atomic.Uint32 // ctxRunning, ctxArmed or ctxFinished
	done  chan struct{}
	err   error
	armed *ctxTimers
}

// ctxTimers is what Done arms: the deadline's timer and the hook on the
// parent's cancellation.
type ctxTimers struct {
	timer      *time.Timer
	stopParent func() bool
}

// A reqCtx's state. It leaves ctxRunning once: to ctxArmed, under mu, when
// Done is called, cancel runs, or Err finds the context ended while the
// handler runs (mu then guards the truth), or to ctxFinished, without the
// lock, when the handler returns first (the context is then simply
// cancelled).
const (
	ctxRunning uint32 = iota
	ctxArmed
	ctxFinished
)

func newReqCtx(id uint64, parent context.Context, deadline time.Time) *reqCtx {
	if d, ok := parent.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	return &reqCtx{id: id, parent: parent, deadline: deadline}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *reqCtx) Value(key any) any { return c.parent.Value(key) }

// armLocked moves a running context to ctxArmed. If the handler has
// returned already (ctxFinished), the context is cancelled instead.
func (c *reqCtx) armLocked() {
	if !c.state.CompareAndSwap(ctxRunning, ctxArmed) && c.state.Load() == ctxFinished && c.err == nil {
		c.err = context.Canceled
	}
}

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	c.armLocked()
	if c.err == nil {
		c.err = c.currentErr()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	a := &ctxTimers{}
	if !c.deadline.IsZero() {
		a.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	if c.parent.Done() != nil {
		a.stopParent = context.AfterFunc(c.parent, func() { c.cancel(context.Cause(c.parent)) })
	}
	c.armed = a
	return c.done
}

// currentErr is the error the context has by now, without any timer.
func (c *reqCtx) currentErr() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *reqCtx) Err() error {
	if c.state.Load() == ctxFinished {
		return context.Canceled
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		if err := c.currentErr(); err != nil {
			// The error found must stay the context's error: arming makes
			// finish keep it rather than report Canceled.
			c.err = err
			c.armLocked()
			if c.done != nil {
				close(c.done)
			}
		}
	}
	return c.err
}

// cancel ends the context with err (the client cancelled the request, the
// connection ended, the deadline or the parent's cancellation fired).
func (c *reqCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.armLocked()
	if c.state.Load() == ctxFinished {
		return // the handler has returned: the context is Canceled already
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
}

// finish cancels the context once the handler has returned and releases
// its timer and hook.
func (c *reqCtx) finish() {
	if c.state.CompareAndSwap(ctxRunning, ctxFinished) {
		return // never armed: nothing to close or release
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = context.Canceled
		if c.done != nil {
			close(c.done)
		}
	}
	a := c.armed
	c.armed = nil
	c.mu.Unlock()
	if a == nil {
		return
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.stopParent != nil {
		a.stopParent()
	}
}
