// Package bufpool lends byte buffers in power-of-two size classes, so that
// connections hold buffers only while bytes move and a burst of large
// frames does not pin memory for ever (sync.Pool drops idle buffers over a
// couple of garbage collections).
package bufpool

import (
	"math/bits"
	"sync"
)

// Buffers from 1<<minShift to 1<<maxShift bytes are pooled; larger ones are
// allocated for the caller and left to the garbage collector.
const (
	minShift = 9  // 512 B
	maxShift = 24 // 16 MiB
)

var pools [maxShift - minShift + 1]sync.Pool // of *[]byte

// Get returns a buffer of length n (its capacity is n rounded up to a
// power of two of at least 512 bytes). Return it with Put.
func Get(n int) *[]byte {
	shift := max(bits.Len(uint(max(n, 1)-1)), minShift)
	if shift > maxShift {
		b := make([]byte, n)
		return &b
	}
	if p, ok := pools[shift-minShift].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

// Put returns a buffer from Get (of any length now, with its capacity
// unchanged or grown to another power of two) to its pool. Buffers whose
// capacity is not a pooled size class are dropped.
func Put(p *[]byte) {
	if p == nil {
		return
	}
	c := cap(*p)
	if c&(c-1) != 0 {
		return
	}
	if shift := bits.Len(uint(c)) - 1; shift >= minShift && shift <= maxShift {
		*p = (*p)[:0]
		pools[shift-minShift].Put(p)
	}
}
