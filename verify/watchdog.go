package verify

import (
	"sync"
	"time"
)

// watchdog notes the spans during which its process did not run: a
// goroutine ticks every soakWatchTick, and a tick that comes soakStallMin
// late or more is a stall (the process was frozen, or the machine did not
// schedule it). The soak's agents and its monitor each run one; a stall
// explains a late call, and failures its peers rightly saw.
type watchdog struct {
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	last   int64    // mono: the last tick
	stalls []window // the last soakMaxStalls stalls
	count  int
	max    time.Duration
	total  time.Duration
}

func startWatchdog() *watchdog {
	w := &watchdog{stop: make(chan struct{}), done: make(chan struct{}), last: mono()}
	go w.run()
	return w
}

func (w *watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(soakWatchTick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := mono()
		w.mu.Lock()
		if since(w.last, now)-soakWatchTick >= soakStallMin {
			w.noteLocked(window{from: w.last + int64(soakWatchTick), to: now})
		}
		w.last = now
		w.mu.Unlock()
	}
}

// close stops the watchdog; it is idempotent.
func (w *watchdog) close() {
	w.mu.Lock()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	<-w.done
}

func (w *watchdog) noteLocked(s window) {
	d := since(s.from, s.to)
	w.count++
	w.max = max(w.max, d)
	w.total += d
	if len(w.stalls) == soakMaxStalls {
		w.stalls = append(w.stalls[:0], w.stalls[1:]...)
	}
	w.stalls = append(w.stalls, s)
}

// spansLocked returns the stalls with one going on that the watchdog has
// not seen end yet (its next tick is late now).
func (w *watchdog) spansLocked() []window {
	out := w.stalls
	if now := mono(); since(w.last, now)-soakWatchTick >= soakStallMin {
		out = append(out[:len(out):len(out)], window{from: w.last + int64(soakWatchTick), to: now})
	}
	return out
}

// stalledIn is how long the process did not run between mono times a and
// b.
func (w *watchdog) stalledIn(a, b int64) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d time.Duration
	for _, s := range w.spansLocked() {
		if lo, hi := max(a, s.from), min(b, s.to); hi > lo {
			d += since(lo, hi)
		}
	}
	return d
}

// longestIn is the longest stall overlapping [a, b].
func (w *watchdog) longestIn(a, b int64) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d time.Duration
	for _, s := range w.spansLocked() {
		if s.overlaps(a, b) {
			d = max(d, since(s.from, s.to))
		}
	}
	return d
}

// recent returns the last n stalls as spans.
func (w *watchdog) recent(n int) []span {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []span
	for _, s := range w.stalls[max(len(w.stalls)-n, 0):] {
		out = append(out, span{From: s.from, To: s.to})
	}
	return out
}

// counts returns the stalls seen, the longest and their sum.
func (w *watchdog) counts() (int, time.Duration, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count, w.max, w.total
}
