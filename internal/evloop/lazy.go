package evloop

import "sync"

// Lazy is a group of loops started on first use and closed with its
// owner (a server, a client), so that an owner that never adopts a
// connection starts no loop. The zero value is ready for use.
type Lazy struct {
	once  sync.Once
	loops *Loops
	err   error
}

// Get returns the loops, starting them (NewLoops(0)) on the first call;
// after Close, or when they could not start, it returns nil and the
// reason.
func (l *Lazy) Get() (*Loops, error) {
	l.once.Do(func() { l.loops, l.err = NewLoops(0) })
	return l.loops, l.err
}

// Close closes the loops if they were started, and makes later calls of
// Get return ErrLoopsClosed.
func (l *Lazy) Close() {
	l.once.Do(func() { l.err = ErrLoopsClosed })
	if l.loops != nil {
		l.loops.Close()
	}
}

// shared is the process's group of loops for owners that hold few
// connections each (clients: a proxy or a fan-out makes one Client per
// server, each with one or a few connections): started when the first
// owner needs it, closed when the last one lets go, so that many owners do
// not each start a loop per core.
var shared struct {
	mu    sync.Mutex
	loops *Loops
	refs  int
}

// SharedRef is an owner's hold on the process's shared loops. The zero
// value holds nothing.
type SharedRef struct {
	mu     sync.Mutex
	loops  *Loops
	err    error
	closed bool
}

// Get returns the shared loops, taking a hold on them on the first call
// (and starting them if nobody holds them); after Close, or when they
// could not start, it returns nil and the reason.
func (r *SharedRef) Get() (*Loops, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrLoopsClosed
	}
	if r.loops == nil && r.err == nil {
		r.loops, r.err = acquireShared()
	}
	return r.loops, r.err
}

// Close lets go of the hold, if Get took one: the shared loops are closed
// when the last hold goes (closing the connections still on them). The
// owner closes its own connections first. Later calls of Get return
// ErrLoopsClosed. Close is idempotent.
func (r *SharedRef) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.loops != nil {
		releaseShared()
		r.loops = nil
	}
}

func acquireShared() (*Loops, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.loops == nil {
		l, err := NewLoops(0)
		if err != nil {
			return nil, err
		}
		shared.loops = l
	}
	shared.refs++
	return shared.loops, nil
}

func releaseShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.refs--; shared.refs == 0 {
		shared.loops.Close()
		shared.loops = nil
	}
}
