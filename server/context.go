package server

import (
	"context"
	"sync"
	"time"

	"github.com/tcppro/tcppro/session"
)

// reqCtx is a handler's context: the connection's context plus the
// request's deadline. It arms a timer and a cancellation hook only if the
// handler asks for Done, so a handler that never waits costs neither.
type reqCtx struct {
	sc       *session.Conn
	deadline time.Time // zero: none

	mu    sync.Mutex
	done  chan struct{}
	err   error
	timer *time.Timer
	hook  *session.CloseHook
}

func newReqCtx(sc *session.Conn, deadline time.Time) *reqCtx {
	return &reqCtx{sc: sc, deadline: deadline}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *reqCtx) Value(key any) any { return nil }

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
	c.hook = &session.CloseHook{Fn: func() { c.cancel(context.Canceled) }}
	if !c.sc.AddCloseHook(c.hook) {
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
	t, h := c.timer, c.hook
	c.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if h != nil {
		c.sc.RemoveCloseHook(h)
	}
}
