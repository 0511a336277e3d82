package netconn

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestBodyStallUnderFrameFlood: a peer starts a request in several
// frames, never sends the rest of its body, and floods empty DATA frames
// (no progress, protocol.md §8) so that its socket nearly always holds
// unread bytes. The body progress timeout (FrameReadTimeout, 200 ms) must
// still end the connection.
func TestBodyStallUnderFrameFlood(t *testing.T) {
	cli, srv := tcpPair(t)
	cfg := session.Config{FrameReadTimeout: 200 * time.Millisecond}
	s := newSink()
	s.held = make(chan core.Incoming, 1)
	start(t, srv, core.Server, cfg, s)
	peer := newRawPeer(cli)
	peer.handshake(t)
	if err := peer.fr.WriteRequest(1, true, 0, "m", nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	var batch []byte
	for len(batch) < 64<<10 {
		batch = wire.AppendData(batch, 1, true, nil)
	}
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for {
			if _, err := cli.Write(batch); err != nil {
				return // the server closed, or the test did
			}
		}
	}()
	t0 := time.Now()
	var err error
	select {
	case <-s.closed:
		err = s.closeErr
	case <-time.After(3 * time.Second):
	}
	el := time.Since(t0)
	cli.Close()
	<-flooded
	if err == nil {
		t.Fatalf("after %v of a flood of empty DATA frames the connection is still open (FrameReadTimeout 200 ms)", el)
	}
	if !errors.Is(err, session.ErrFrameTimeout) {
		t.Fatalf("closed after %v with %v, want ErrFrameTimeout", el, err)
	}
	t.Logf("closed after %v with %v", el, err)
}
