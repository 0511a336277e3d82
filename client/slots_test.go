package client

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestSlotsBound: never more than max slots are taken at once, and no
// waiter is left asleep while a slot is free, however gives and waits
// interleave (run with -race).
func TestSlotsBound(t *testing.T) {
	const limit, workers, rounds = 3, 16, 2000
	var s slots
	s.init(limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	inUse, peak := 0, 0
	for range workers {
		wg.Go(func() {
			for range rounds {
				err := s.acquire(func(freed <-chan struct{}) error {
					select {
					case <-freed:
						return nil
					case <-time.After(10 * time.Second):
						return errors.New("a waiter was not woken with slots free")
					}
				})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				inUse++
				peak = max(peak, inUse)
				mu.Unlock()
				mu.Lock()
				inUse--
				mu.Unlock()
				s.give()
			}
		})
	}
	wg.Wait()
	if peak > limit {
		t.Fatalf("%d slots in use at once, max %d", peak, limit)
	}
	if n := s.inUse(); n != 0 {
		t.Fatalf("%d slots still taken", n)
	}
}

// TestSlotsWakeEveryWaiter: two slots given back at once, with two callers
// waiting, wake both, although only one wake-up fits in the channel.
func TestSlotsWakeEveryWaiter(t *testing.T) {
	var s slots
	s.init(2)
	if !s.tryTake() || !s.tryTake() || s.tryTake() {
		t.Fatal("want exactly 2 slots")
	}
	parked := make(chan struct{}, 2)
	got := make(chan error, 2)
	for range 2 {
		go func() {
			first := true
			got <- s.acquire(func(freed <-chan struct{}) error {
				if first {
					first = false
					parked <- struct{}{}
				}
				select {
				case <-freed:
					return nil
				case <-time.After(5 * time.Second):
					return errors.New("waiter never woken")
				}
			})
		}()
	}
	<-parked
	<-parked
	s.give()
	s.give()
	for range 2 {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	if n := s.inUse(); n != 2 {
		t.Fatalf("%d slots taken, want 2", n)
	}
}
