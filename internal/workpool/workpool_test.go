package workpool

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// never is a retirement interval no test reaches: the tests call retire
// themselves.
const never = time.Hour

// testPool is a pool whose tasks block until their release channel is
// closed (nil: they return at once), and which reports each worker that
// goes back on the stack.
type testPool struct {
	*Pool[chan struct{}]
	waited chan struct{}
}

func newTestPool(idle time.Duration) *testPool {
	tp := &testPool{waited: make(chan struct{}, 1024)}
	tp.Pool = New(func(release chan struct{}) {
		if release != nil {
			<-release
		}
	}, idle)
	tp.onWait = func() { tp.waited <- struct{}{} }
	return tp
}

// run runs n tasks that block together, then releases them and waits for
// their workers to be back on the stack.
func (tp *testPool) run(n int) {
	release := make(chan struct{})
	for range n {
		tp.Go(release)
	}
	close(release)
	for range n {
		<-tp.waited
	}
}

func (tp *testPool) startedCount() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.started
}

func TestSequentialTasksReuseOneGoroutine(t *testing.T) {
	tp := newTestPool(never)
	defer tp.Close()
	for range 100 {
		tp.Go(nil)
		<-tp.waited
	}
	if got := tp.startedCount(); got != 1 {
		t.Fatalf("goroutines started for 100 tasks one after the other: %d, want 1", got)
	}
}

func TestBusyWorkersAreNeverWaitedFor(t *testing.T) {
	// Eight tasks that run at once need eight goroutines: Go never queues a
	// task behind a running one.
	tp := newTestPool(never)
	defer tp.Close()
	tp.run(8)
	if got := tp.startedCount(); got != 8 {
		t.Fatalf("goroutines started: %d, want 8", got)
	}
	if got := tp.Idle(); got != 8 {
		t.Fatalf("idle: %d, want 8", got)
	}
	tp.run(8) // all eight reused
	if got := tp.startedCount(); got != 8 {
		t.Fatalf("goroutines started after a second burst: %d, want 8", got)
	}
}

func TestRetireEndsWorkersIdleForAWholeInterval(t *testing.T) {
	tp := newTestPool(never)
	defer tp.Close()
	tp.run(1) // the interval starts when the first worker waits
	tp.run(4) // the four tasks at once take it, and start three more
	tp.retire()
	if got := tp.Idle(); got != 4 {
		t.Fatalf("after the first interval: %d idle, want 4 (every worker worked in it)", got)
	}
	tp.run(1) // one task: the top worker
	tp.retire()
	if got := tp.Idle(); got != 1 {
		t.Fatalf("after an interval in which one worker worked: %d idle, want 1", got)
	}
	tp.retire() // a whole interval with no task
	if got := tp.Idle(); got != 0 {
		t.Fatalf("after an idle interval: %d idle, want 0", got)
	}
	tp.run(2) // the pool still works, with new goroutines
	if got := tp.startedCount(); got != 6 {
		t.Fatalf("goroutines started: %d, want 6", got)
	}
}

func TestRetireKeepsWorkersTakenDuringTheInterval(t *testing.T) {
	tp := newTestPool(never)
	defer tp.Close()
	tp.run(2)
	tp.retire() // both waited through the interval
	tp.run(3)   // three new workers
	tp.run(3)   // all three taken again in the same interval
	tp.retire()
	if got := tp.Idle(); got != 3 {
		t.Fatalf("idle: %d, want 3: all three worked during the interval", got)
	}
	tp.retire()
	if got := tp.Idle(); got != 0 {
		t.Fatalf("idle after a whole idle interval: %d, want 0", got)
	}
}

func TestTimerRetires(t *testing.T) {
	tp := newTestPool(5 * time.Millisecond)
	defer tp.Close()
	tp.run(3)
	deadline := time.Now().Add(10 * time.Second)
	for tp.Idle() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d idle workers 10 s after their last task, with a 5 ms retirement interval", tp.Idle())
		}
		time.Sleep(time.Millisecond) // polling for a timer's effect
	}
}

func TestClose(t *testing.T) {
	tp := newTestPool(never)
	tp.run(3)
	busy := make(chan struct{})
	tp.Go(busy) // takes one of the three
	tp.Close()
	tp.Close() // idempotent
	if got := tp.Idle(); got != 0 {
		t.Fatalf("idle after Close: %d", got)
	}
	close(busy) // its worker ends after the task; goleak checks
	ran := make(chan struct{})
	p := New(func(ch chan struct{}) { close(ch) }, never)
	p.Close()
	p.Go(ran) // after Close: still runs
	<-ran
}
