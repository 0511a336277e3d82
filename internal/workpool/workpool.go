// Package workpool runs tasks on goroutines it keeps for reuse.
//
// A server that starts a goroutine per request pays, on every request,
// for the goroutine's creation and for growing its small initial stack to
// what the request's path needs (a copy of the stack at each doubling). A
// Pool hands each task to a goroutine that ran a task before and waits
// for the next, its stack already grown; it starts a goroutine only when
// every one it has is busy. It bounds nothing: the caller decides how many
// tasks may run at once (the server's Workers).
//
// Idle goroutines are kept last-in, first-out, so that the busiest few are
// reused and the rest stay at the bottom of the stack: a goroutine that
// was not taken during a whole retirement interval (between one and two
// intervals idle) exits, so that a burst's goroutines and their stacks do
// not outlive it by long.
package workpool

import (
	"sync"
	"time"
)

// DefaultIdle is the retirement interval New uses for idle <= 0.
const DefaultIdle = time.Second

// Pool runs tasks of type T with one function. The zero Pool is not
// usable: use New.
type Pool[T any] struct {
	run  func(T)
	idle time.Duration

	mu      sync.Mutex
	waiting []*worker[T] // idle workers; the most recently idle last
	low     int          // the fewest workers waiting since the last retirement
	timer   *time.Timer  // armed while workers wait
	armed   bool
	closed  bool

	started int    // goroutines started (for tests)
	onWait  func() // called when a worker has put itself on the stack (for tests)
}

// worker is one goroutine of the pool: it waits for its next task on ch
// (buffered: handing a task never blocks), and exits when ch is closed.
type worker[T any] struct {
	ch chan T
}

// New returns a pool that runs run(t) for every task t given to Go.
// Goroutines idle for a whole interval of idle (DefaultIdle if idle <= 0)
// exit.
func New[T any](run func(T), idle time.Duration) *Pool[T] {
	if idle <= 0 {
		idle = DefaultIdle
	}
	return &Pool[T]{run: run, idle: idle}
}

// Go runs run(t) on an idle goroutine of the pool, or on a new one if none
// waits. It never blocks. After Close, t runs on a goroutine of its own.
func (p *Pool[T]) Go(t T) {
	p.mu.Lock()
	if n := len(p.waiting); n > 0 {
		w := p.waiting[n-1]
		p.waiting[n-1] = nil
		p.waiting = p.waiting[:n-1]
		p.low = min(p.low, n-1)
		p.mu.Unlock()
		w.ch <- t
		return
	}
	p.started++
	p.mu.Unlock()
	go p.work(&worker[T]{ch: make(chan T, 1)}, t)
}

// work is a worker's goroutine.
func (p *Pool[T]) work(w *worker[T], t T) {
	var zero T
	for {
		p.run(t)
		t = zero // an idle worker holds on to nothing of its last task
		if !p.wait(w) {
			return
		}
		var ok bool
		if t, ok = <-w.ch; !ok {
			return
		}
	}
}

// wait puts w on the idle stack; false if the pool is closed (w exits).
func (p *Pool[T]) wait(w *worker[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.onWait != nil {
		defer p.onWait()
	}
	p.waiting = append(p.waiting, w)
	if !p.armed {
		p.armed = true
		p.low = len(p.waiting)
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idle, p.retire)
		} else {
			p.timer.Reset(p.idle)
		}
	}
	return true
}

// retire, once per interval while workers wait, ends the workers that
// waited through the whole interval: the bottom low of the stack, which
// nobody took since the last retirement.
func (p *Pool[T]) retire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	n, old := p.low, len(p.waiting)
	for _, w := range p.waiting[:n] {
		close(w.ch)
	}
	copy(p.waiting, p.waiting[n:])
	clear(p.waiting[old-n : old])
	p.waiting = p.waiting[:old-n]
	p.low = len(p.waiting)
	p.armed = len(p.waiting) > 0
	if p.armed {
		p.timer.Reset(p.idle)
	}
}

// Idle is how many goroutines wait for a task.
func (p *Pool[T]) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

// Close ends the idle goroutines; those running a task end after it.
// Tasks given to Go afterwards still run (each on a goroutine of its own).
// Close is idempotent.
func (p *Pool[T]) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for i, w := range p.waiting {
		close(w.ch)
		p.waiting[i] = nil
	}
	p.waiting = nil
	if p.timer != nil {
		p.timer.Stop()
	}
}
