package server_test

import (
	"bytes"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// TestIdleReaderStackStaysSmall: a connection that served one request and
// went idle keeps its reader's stack at the size it started with. The
// first request after an idle spell runs on a goroutine of its own, so the
// work it does (taking a worker, the handler, the answer) never grows the
// parked reader's stack; were it done on the reader, every idle connection
// would hold a stack of twice the size for as long as it stays open.
func TestIdleReaderStackStaysSmall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation starts every stack larger; .ci/run runs this test without -race")
	}
	const n = 400
	cfg := baseConfig()
	cfg.Session.HeartbeatInterval = time.Minute // the raw peers answer no PING
	cfg.Session.HeartbeatTimeout = time.Minute
	ts := startServer(t, cfg, echoMux())

	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// The test's peers read and write on this goroutine: the only
	// goroutines per connection are the server's.
	if !waitFor(t, 10*time.Second, func() bool { return goroutinesIn("session.(*Conn).serveLoop(") == n }) {
		t.Fatalf("%d readers, want %d", goroutinesIn("session.(*Conn).serveLoop("), n)
	}
	before := stackInuse()

	for i, c := range conns {
		fr := wire.NewFramer(c, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := fr.WriteRequest(1, 10_000, "echo", []byte("hello")); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		f, err := fr.ReadFrame()
		if err != nil || f.Type != wire.TypeResponse {
			t.Fatalf("conn %d: frame %v, err %v; want a RESPONSE", i, f.Type, err)
		}
	}
	// Wait for the requests' goroutines to end.
	if !waitFor(t, 10*time.Second, func() bool { return goroutinesIn("server.(*conn).serve") == 0 }) {
		t.Fatalf("%d requests still being served", goroutinesIn("server.(*conn).serve"))
	}
	after := stackInuse()

	grown := (int64(after) - int64(before)) / n
	t.Logf("stack in use: %d KiB before, %d KiB after one request per connection (%+d bytes per connection)",
		before>>10, after>>10, grown)
	// A reader whose stack doubled from 2 KiB would add 2 KiB per
	// connection; half of that leaves room for the runtime's own churn.
	if grown >= 1024 {
		t.Fatalf("stack in use grew by %d bytes per idle connection after one request; want the readers' stacks unchanged", grown)
	}
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte(fn))
}

// stackInuse returns the bytes of goroutine stacks in use after a GC (which
// frees the stacks of goroutines that have ended).
func stackInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}
