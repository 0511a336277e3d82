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
	deadline int64         // session.Mono; 0: none
	state    atomic.Uint32 // ctxRunning, ctxArmed or ctxFinished

	mu    sync.Mutex // guards the fields below, used once armed
	done  chan struct{}
	err   error
	timer *time.Timer
	hook  *session.CloseHook
}

// A reqCtx's state: Done arms it (under mu); finish moves an unarmed one
// to ctxFinished without the lock.
const (
	ctxRunning uint32 = iota
	ctxArmed
	ctxFinished
)

func newReqCtx(sc *session.Conn, deadline int64) *reqCtx {
	return &reqCtx{sc: sc, deadline: deadline}
}

func (c *reqCtx) Deadline() (time.Time, bool) {
	if c.deadline == 0 {
		return time.Time{}, false
	}
	return session.MonoTime(c.deadline), true
}

func (c *reqCtx) Value(key any) any { return nil }

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if !c.state.CompareAndSwap(ctxRunning, ctxArmed) {
		c.err = context.Canceled // the handler has returned
	}
	if c.err == nil {
		c.err = c.currentErr()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	if c.deadline != 0 {
		c.timer = time.AfterFunc(time.Duration(c.deadline-session.Mono()), func() { c.cancel(context.DeadlineExceeded) })
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
	if c.state.Load() == ctxFinished || c.sc.Closed() {
		return context.Canceled
	}
	if c.deadline != 0 && session.Mono() >= c.deadline {
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
	t, h := c.timer, c.hook
	c.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if h != nil {
		c.sc.RemoveCloseHook(h)
	}
}
