package server_test

import (
	"os"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/wire"
)

// boundedLoad is the shape of the bounded-memory test: conns connections
// each pipelining n echoes of size bytes without reading their answers, to
// a server whose memory budget is budget.
type boundedLoad struct {
	conns, n, size int
	budget         int64
}

// TestBoundedMemory guards the memory bounds as a whole: 100 connections
// each pipelining 128 echoes without reading their answers leave the
// server's heap within its budget + 10 %, and another client's echo is
// still served meanwhile. Each greedy connection holds at most ConnMemory
// (plus an answer), and the server stops reading it, so together they stay
// below the budget and leave room for everyone else. This runs the
// scenario with 1 MiB messages, the per-connection bound and the budget
// scaled alike; TestBoundedMemoryFullSize runs it with 4 MiB messages.
func TestBoundedMemory(t *testing.T) {
	runBoundedLoad(t, boundedLoad{conns: 100, n: 128, size: mib, budget: 256 * mib})
}

// TestBoundedMemoryFullSize is TestBoundedMemory at the size:
// 128 × 4 MiB echoes on each of 100 connections, a 1 GiB budget. The
// server then holds about 400 MiB, the race detector multiplies that, and
// the run takes 15 to 30 s under -race, so it runs only with
// TCPPRO_LONG=1.
func TestBoundedMemoryFullSize(t *testing.T) {
	if os.Getenv("TCPPRO_LONG") != "1" {
		t.Skip("long and memory-hungry (about 3 GB of RSS and 20 s under -race): set TCPPRO_LONG=1 to run it; TestBoundedMemory runs it scaled down")
	}
	runBoundedLoad(t, boundedLoad{conns: 100, n: 128, size: 4 * mib, budget: 1 << 30})
}

func runBoundedLoad(t *testing.T, load boundedLoad) {
	cfg := baseConfig()
	// The defaults' ratios, scaled to the message size: a 4 MiB message,
	// 8 MiB per connection, a 1 MiB write queue.
	cfg.Session.MaxMessageSize = uint32(load.size)
	cfg.Session.ConnMemory = 2 * load.size
	cfg.Session.WriteQueueSize = load.size / 4
	cfg.MemoryBudget = load.budget
	// Stalled connections must stay stalled while the heap is measured,
	// and connections kept busy must not be taken for dead.
	cfg.Session.WriteTimeout = time.Minute
	cfg.Session.HeartbeatInterval = 5 * time.Second
	cfg.Session.HeartbeatTimeout = 10 * time.Second
	cfg.Session.FrameReadTimeout = 10 * time.Second
	// Small socket buffers, as for the peers: what the kernel holds is not
	// under test, and moving less of it keeps the test short.
	cfg.Socket.SendBuffer = 64 << 10
	cfg.Socket.RecvBuffer = 64 << 10
	ts := startServer(t, cfg, echoMux())
	other := newClient(t, client.Config{Addrs: []string{ts.addr}})
	if _, err := call(t, other, "echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}

	body := make([]byte, load.size)
	stop := make(chan struct{})
	defer close(stop)
	begin := make(chan struct{})
	ps := make([]*pipeliner, load.conns)
	for i := range ps {
		ps[i] = startPipeliner(t, ts.addr, load.n, body, begin, stop)
	}
	base := liveHeap()
	heap := sampleHeap(100 * time.Millisecond)
	start := time.Now()
	close(begin)
	if !stalled(t, ps, time.Second, 2*time.Minute) {
		t.Fatal("the peers' writes never stalled")
	}
	stalledAfter := time.Since(start)
	echoStart := time.Now()
	resp, err := call(t, other, "echo", []byte("still served"))
	echoTook := time.Since(echoStart)
	peak := heap.Stop()
	st := ts.Stats()

	var frames int64
	for _, p := range ps {
		frames += p.frames.Load()
	}
	perRequest := int64(1 + (load.size+wire.DefaultMaxFrameSize-1)/wire.DefaultMaxFrameSize)
	grew := int64(peak) - int64(base)
	t.Logf("%d conns × %d × %d MiB: stalled after %v with %d of %d requests' frames sent; "+
		"heap grew %d MiB at most (budget %d MiB); MemoryHeld %d MiB; RefusedMemory %d; other client's echo %v",
		load.conns, load.n, load.size/mib, stalledAfter.Round(time.Millisecond), frames/perRequest, int64(load.conns*load.n),
		grew/mib, load.budget/mib, st.MemoryHeld/mib, st.RefusedMemory, echoTook.Round(time.Microsecond))
	if err != nil || string(resp) != "still served" {
		t.Errorf("another client's echo under the load: %q, %v", resp, err)
	}
	if limit := load.budget + load.budget/10; grew > limit {
		t.Errorf("the heap grew by %d MiB under the load, want at most the budget + 10%% (%d MiB)", grew/mib, limit/mib)
	}
	if st.MemoryHeld > load.budget {
		t.Errorf("MemoryHeld = %d MiB, above the budget %d MiB", st.MemoryHeld/mib, load.budget/mib)
	}
	if frames >= int64(load.conns*load.n)*perRequest {
		t.Errorf("every request was read though no answer was: nothing was bounded")
	}
	for _, p := range ps {
		p.conn.Close()
	}
	if !waitFor(t, 10*time.Second, func() bool { return ts.Stats().MemoryHeld == 0 }) {
		t.Errorf("MemoryHeld = %d once the peers closed, want 0", ts.Stats().MemoryHeld)
	}
}
