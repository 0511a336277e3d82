package harness

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Call latency with many calls in flight (pipe-CxD): far too many calls to
// keep each one's record (gnet's side completes millions a second), so every
// load goroutine counts its calls in a histogram of its own, log-linear with
// 32 buckets per power of two (each about 3% wide), and only the calls
// started inside the measured window count. A call's latency runs from just
// before its request is written (raw, gnet: the coalesced Write that carries
// it) or its call starts (tcppro, grpc) to its verified answer. Every side
// keeps one histogram per connection, shared by the goroutines calling on
// it (updated atomically): per calling goroutine, the call-based sides'
// 1 600 histograms (7.5 MB) would cost a cache miss per call that the
// connection-based sides' 50 do not.

// latWindow is the measured window as the load goroutines see it: times
// are nanoseconds since epoch (monotonic); from and to stay at MaxInt64
// until the window opens and closes.
type latWindow struct {
	epoch    time.Time
	from, to atomic.Int64
}

func newLatWindow() *latWindow {
	w := &latWindow{epoch: time.Now()}
	w.from.Store(math.MaxInt64)
	w.to.Store(math.MaxInt64)
	return w
}

func (w *latWindow) now() int64 { return int64(time.Since(w.epoch)) }

// in tells whether a call started at start (from now) is in the window.
func (w *latWindow) in(start int64) bool { return start >= w.from.Load() && start < w.to.Load() }

func (w *latWindow) open(t time.Time)  { w.from.Store(int64(t.Sub(w.epoch))) }
func (w *latWindow) close(t time.Time) { w.to.Store(int64(t.Sub(w.epoch))) }

const (
	latSubBits  = 5
	latSub      = 1 << latSubBits
	latMaxShift = 40 - latSubBits // up to 2^40 ns (18 min), far above any call
	latBuckets  = (latMaxShift + 2) * latSub
)

// latHist is one connection's histogram of call latencies (nanoseconds),
// updated atomically by the goroutines calling on it.
type latHist struct {
	counts [latBuckets]atomic.Uint32
	n      atomic.Uint64
	max    atomic.Int64
}

func latBucket(ns int64) int {
	if ns < latSub {
		return int(max(ns, 0))
	}
	shift := min(bits.Len64(uint64(ns))-latSubBits-1, latMaxShift)
	m := min(ns>>shift, 2*latSub-1) // in [latSub, 2*latSub)
	return (shift+1)*latSub + int(m) - latSub
}

// latValue is the middle of bucket b.
func latValue(b int) int64 {
	if b < latSub {
		return int64(b)
	}
	shift := b/latSub - 1
	m := int64(b%latSub + latSub)
	return m<<shift + (int64(1)<<shift)/2
}

func (h *latHist) add(ns int64) {
	h.counts[latBucket(ns)].Add(1)
	h.n.Add(1)
	for m := h.max.Load(); ns > m && !h.max.CompareAndSwap(m, ns); m = h.max.Load() {
	}
}

// mergeLatHists sums hists (nil ones skipped) and returns the number of
// calls, the p50 and p99 (nearest rank, each a bucket's middle) and the
// exact maximum.
func mergeLatHists(hists []*latHist) (n int, p50, p99, maxD time.Duration) {
	var sum struct {
		counts [latBuckets]uint64
		n      uint64
		max    int64
	}
	for _, h := range hists {
		if h == nil {
			continue
		}
		for i := range h.counts {
			sum.counts[i] += uint64(h.counts[i].Load())
		}
		sum.n += h.n.Load()
		sum.max = max(sum.max, h.max.Load())
	}
	if sum.n == 0 {
		return 0, 0, 0, 0
	}
	q := func(q float64) time.Duration {
		rank := uint64(math.Ceil(q * float64(sum.n)))
		var cum uint64
		for i, c := range sum.counts {
			cum += c
			if cum >= max(rank, 1) {
				return time.Duration(min(latValue(i), sum.max))
			}
		}
		return time.Duration(sum.max)
	}
	return int(sum.n), q(0.50), q(0.99), time.Duration(sum.max)
}

// windowLoad is a load generator that records the latencies of the calls
// started in the measured window (pipe-CxD).
type windowLoad interface {
	// recording tells whether this load records latencies (only with
	// several calls in flight per connection).
	recording() bool
	openWindow(t time.Time)
	closeWindow(t time.Time)
	// windowLatencies merges the histograms: call it after stop.
	windowLatencies() (n int, p50, p99, max time.Duration)
}

// latRecorder is what a load generator embeds to be a windowLoad: one
// histogram per connection.
type latRecorder struct {
	win   *latWindow
	hists []*latHist
}

// initLat makes n histograms (one per connection).
func (r *latRecorder) initLat(n int) {
	r.win = newLatWindow()
	r.hists = make([]*latHist, n)
	for i := range r.hists {
		r.hists[i] = new(latHist)
	}
}

func (r *latRecorder) recording() bool         { return r.win != nil }
func (r *latRecorder) openWindow(t time.Time)  { r.win.open(t) }
func (r *latRecorder) closeWindow(t time.Time) { r.win.close(t) }
func (r *latRecorder) windowLatencies() (int, time.Duration, time.Duration, time.Duration) {
	return mergeLatHists(r.hists)
}

// latTail is how long a windowLoad runs on after its window closes, so that
// the calls started at the end of the window complete and count.
const latTail = 100 * time.Millisecond
