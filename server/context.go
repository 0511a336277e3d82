package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcppro/tcppro/session"
)

// reqCtx is a handler's context: the connection's context plus the
// request's deadline. It arms a timer and a cancellation hook only if the
// handler asks for Done, so a handler that never waits costs neither, and
// finishing such a request takes no lock.
type reqCtx struct {
	sc       *session.Conn
	deadline time.Time // zero: none

	mu    sync.Mutex    // guards done, err and armed once the state is ctxArmed
	state atomic.Uint32 // ctxRunning, ctxArmed or ctxFinished
	done  chan struct{}
	err   error
	armed *ctxTimers
}

// ctxTimers is what Done arms: the deadline's timer and the hook that
// cancels the context when the connection closes.
type ctxTimers struct {
	timer *time.Timer
	hook  *session.CloseHook
}

// A reqCtx's state. It leaves ctxRunning once: to ctxArmed, under mu, when
// Done is called or Err finds the context ended while the handler runs (mu
// then guards the truth), or to ctxFinished, without the lock, when the
// handler returns first (the context is then simply cancelled).
const (
	ctxRunning uint32 = iota
	ctxArmed
	ctxFinished
)

func newReqCtx(sc *session.Conn, deadline time.Time) *reqCtx {
	return &reqCtx{sc: sc, deadline: deadline}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *reqCtx) Value(key any) any { return nil }

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
	a := &ctxTimers{hook: &session.CloseHook{Fn: func() { c.cancel(context.Canceled) }}}
	if !c.deadline.IsZero() {
		a.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	c.armed = a
	if !c.sc.AddCloseHook(a.hook) {
		c.err = context.Canceled
		close(c.done)
	}
	return c.done
}

// currentErr is the error the context has by now, without any timer.
func (c *reqCtx) currentErr() error {
	if c.sc.Closed() {
		return context.Canceled
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

func (c *reqCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
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
	c.mu.Unlock()
	if a == nil {
		return
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	c.sc.RemoveCloseHook(a.hook)
}
