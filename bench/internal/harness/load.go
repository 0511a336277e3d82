package harness

import (
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// loadGen drives one side's server from the parent process.
type loadGen interface {
	// start launches the load; every loop stops by itself after maxPerConn
	// requests per connection or at hardDeadline, whichever comes first.
	start(hardDeadline time.Time, maxPerConn uint64)
	// completed is the number of verified, completed requests so far.
	completed() uint64
	// stop ends the load and waits for every load goroutine.
	stop()
	// close releases the connections (after stop).
	close()
	// err is the first failure seen before stop (nil if none).
	err() error
}

// newLoad makes the load generator of one side: conns connections with
// inflight calls each, over TLS when conf is set.
func newLoad(kind, addr string, conns, inflight int, conf *tls.Config) (loadGen, error) {
	switch kind {
	case kindRaw, kindGnet: // gnet serves the raw line protocol
		return newRawLoad(addr, conns, inflight, conf)
	case kindTcppro, kindTcpproNetConn, kindGrpc:
		return newCallLoad(kind, addr, conns, inflight, conf)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// counter is one load goroutine's completion count, padded to its own cache
// line so the counting itself does not contend.
type counter struct {
	n atomic.Uint64
	_ [56]byte
}

// base holds what every load generator shares: counters, stop state, errors.
type base struct {
	counters []counter
	wg       sync.WaitGroup
	stopped  atomic.Bool
	done     chan struct{}
	stopOnce sync.Once

	errMu    sync.Mutex
	nErrs    int
	firstErr error
}

func (b *base) init(n int) {
	b.counters = make([]counter, n)
	b.done = make(chan struct{})
}

func (b *base) completed() uint64 {
	var n uint64
	for i := range b.counters {
		n += b.counters[i].n.Load()
	}
	return n
}

// fail records a load goroutine's error unless the load was being stopped
// (stopping unblocks goroutines by failing their I/O on purpose).
func (b *base) fail(err error) {
	if err == nil || b.stopped.Load() {
		return
	}
	b.errMu.Lock()
	defer b.errMu.Unlock()
	b.nErrs++
	if b.firstErr == nil {
		b.firstErr = err
	}
}

func (b *base) err() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if b.firstErr == nil {
		return nil
	}
	return fmt.Errorf("%d load goroutine(s) failed, first: %w", b.nErrs, b.firstErr)
}
