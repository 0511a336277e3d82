//go:build linux

package evloop

import (
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// blockingSink stalls the loop: its Request, called on the loop's
// goroutine, waits until release is closed.
type blockingSink struct {
	*sink
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSink) Request(core.Incoming) bool {
	close(b.entered)
	<-b.release
	return false
}

// TestLoopStallIsNotPeerSilence: a loop that does not run for longer than
// a connection's heartbeat timeout (here held by another connection's
// Sink; in life its process stopped or starved) while that connection's
// peer keeps sending must not declare the peer dead when it runs again:
// the deadline has passed, but the peer's bytes wait in the socket, and
// the loop reads them before it judges.
func TestLoopStallIsNotPeerSilence(t *testing.T) {
	l := newLoops(t, 1)
	cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}

	// A: the connection whose peer keeps sending.
	aCli, aSrv := tcpPair(t, 0)
	a := startEv(t, l, aSrv, core.Server, cfg, nil)
	aPeer := newRawPeer(aCli)
	aPeer.handshake(t)

	// B: its request stalls the loop.
	bCli, bSrv := tcpPair(t, 0)
	bs := &blockingSink{sink: newSink(), entered: make(chan struct{}), release: make(chan struct{})}
	bConn, err := l.Adopt(bSrv, core.NewParams(core.Server, session.Config{}, core.Options{}), bs)
	if err != nil {
		t.Fatal(err)
	}
	bs.conn = bConn
	bRan := make(chan struct{})
	bConn.Start(func() { close(bRan) })
	t.Cleanup(func() {
		bConn.Close(nil)
		waitClosed(t, bRan, 5*time.Second, "onDone")
	})
	bPeer := newRawPeer(bCli)
	bPeer.handshake(t)
	if err := bPeer.fr.WriteRequest(1, false, 0, "stall", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bs.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalling request never reached its Sink")
	}

	// Three of A's heartbeat timeouts with the loop stalled; A's peer
	// sends a PING every 50 ms throughout.
	tick := time.NewTicker(50 * time.Millisecond)
	for i := range 18 {
		<-tick.C
		if err := aPeer.fr.WritePing(uint64(100 + i)); err != nil {
			t.Fatalf("A's peer's PING %d: %v", i, err)
		}
	}
	tick.Stop()
	close(bs.release)

	// A is alive: a PING is answered.
	_ = aCli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := aPeer.fr.WritePing(999); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := aPeer.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after the stall: %v (connection error: %v)", err, a.Err())
		}
		if f.Type == wire.TypePong {
			if d, _ := wire.ParsePing(f.Payload); d == 999 {
				break
			}
		}
	}
	if err := a.Err(); err != nil {
		t.Fatalf("A failed: %v", err)
	}
}
