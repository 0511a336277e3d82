package client

import (
	"math/rand/v2"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
)

// Backoff is exponential backoff with full jitter: before retry n (n = 0
// for the first retry after a failure) the client waits a uniformly random
// time in [0, min(Max, Base·Multiplier^n)). The first retry is jittered too,
// so clients that lost the same server at the same moment do not come back
// in lockstep. Zero fields take the defaults below.
type Backoff struct {
	Base       time.Duration // default 100ms
	Multiplier float64       // default 2
	Max        time.Duration // default 10s
}

// Backoff defaults.
const (
	DefaultBackoffBase       = 100 * time.Millisecond
	DefaultBackoffMultiplier = 2.0
	DefaultBackoffMax        = 10 * time.Second
)

func (b Backoff) withDefaults() Backoff {
	defaults.Set(&b.Base, DefaultBackoffBase)
	defaults.Set(&b.Multiplier, DefaultBackoffMultiplier)
	defaults.Set(&b.Max, DefaultBackoffMax)
	return b
}

// Ceiling is the upper bound of the delay before retry n.
func (b Backoff) Ceiling(n int) time.Duration {
	b = b.withDefaults()
	c := float64(b.Base)
	for i := 0; i < n && c < float64(b.Max); i++ {
		c *= b.Multiplier
	}
	return time.Duration(min(c, float64(b.Max)))
}

// Delay returns a random delay for retry n, in [0, Ceiling(n)).
func (b Backoff) Delay(n int) time.Duration {
	c := b.Ceiling(n)
	if c <= 0 {
		return 0
	}
	return rand.N(c)
}
