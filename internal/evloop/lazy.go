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
