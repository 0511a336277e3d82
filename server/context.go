package server

import (
	"context"
	"sync"
	"time"
)

// reqCtx is a handler's context: the connection's context plus the
// request's deadline. It arms a timer and a cancellation hook only if the
// handler asks for Done, so a handler that never waits costs neither.
type reqCtx struct {
	parent   context.Context
	deadline time.Time // zero: none

	mu     sync.Mutex
	done   chan struct{}
	err    error
	timer  *time.Timer
	stopAF func() bool
}

func newReqCtx(parent context.Context, deadline time.Time) *reqCtx {
	return &reqCtx{parent: parent, deadline: deadline}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *reqCtx) Value(key any) any { return c.parent.Value(key) }

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err == nil {
		c.err = c.currentErr()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	if !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	c.stopAF = context.AfterFunc(c.parent, func() { c.cancel(context.Canceled) })
	return c.done
}

// currentErr is the error the context has by now, without any timer.
func (c *reqCtx) currentErr() error {
	if c.parent.Err() != nil {
		return context.Canceled
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *reqCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = c.currentErr()
		if c.err != nil && c.done != nil {
			close(c.done)
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
	c.mu.Lock()
	if c.err == nil {
		c.err = context.Canceled
		if c.done != nil {
			close(c.done)
		}
	}
	t, af := c.timer, c.stopAF
	c.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if af != nil {
		af()
	}
}
