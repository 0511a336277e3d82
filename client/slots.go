package client

import "sync/atomic"

// slots counts a connection's calls in flight against Session.MaxInFlight.
// Taking and giving back a slot is one atomic operation; only a caller
// that finds every slot taken waits on a channel. Waiters are not served
// in order: a slot goes to whichever caller asks first once it is free,
// and every waiter is bounded by its call's deadline.
type slots struct {
	used    atomic.Int32
	max     int32
	waiting atomic.Int32  // callers in wait
	freed   chan struct{} // capacity 1: a slot was given back while callers waited
}

func (s *slots) init(max int) {
	s.max = int32(max)
	s.freed = make(chan struct{}, 1)
}

// tryTake takes a slot if one is free.
func (s *slots) tryTake() bool {
	for {
		n := s.used.Load()
		if n >= s.max {
			return false
		}
		if s.used.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// give gives a slot back, waking a waiter if there is one.
func (s *slots) give() {
	s.used.Add(-1)
	if s.waiting.Load() > 0 {
		s.signal()
	}
}

func (s *slots) signal() {
	select {
	case s.freed <- struct{}{}:
	default: // a wake-up is already pending; its waiter passes it on
	}
}

// inUse is the number of slots taken.
func (s *slots) inUse() int { return int(s.used.Load()) }

// acquire takes a slot, waiting for one while every slot is taken: wait
// is called with a channel that is ready when a slot was given back, and
// acquire gives up with wait's error if it returns one.
func (s *slots) acquire(wait func(freed <-chan struct{}) error) error {
	if s.tryTake() {
		return nil
	}
	// Between enter and leave, give signals; leave passes a wake-up on to
	// the next waiter if a slot is free, so that none is lost when several
	// were given back at once.
	s.waiting.Add(1)
	defer func() {
		if s.waiting.Add(-1) > 0 && s.used.Load() < s.max {
			s.signal()
		}
	}()
	for !s.tryTake() {
		if err := wait(s.freed); err != nil {
			return err
		}
	}
	return nil
}
