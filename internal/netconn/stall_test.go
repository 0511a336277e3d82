package netconn

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// stallConn holds the reader: while stalled, a Read waits (without
// reading) until resume, as a reader does that is not scheduled. NetConn
// exposes the TCP connection under it, as a TLS connection does.
type stallConn struct {
	*net.TCPConn
	mu      sync.Mutex
	gate    chan struct{} // not nil: reads wait for it to be closed
	waiting chan struct{} // receives when a Read starts waiting
	closed  chan struct{}
	once    sync.Once
}

func (s *stallConn) NetConn() net.Conn { return s.TCPConn }

func (s *stallConn) stall() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *stallConn) resume() {
	s.mu.Lock()
	close(s.gate)
	s.gate = nil
	s.mu.Unlock()
}

func (s *stallConn) Read(b []byte) (int, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		s.waiting <- struct{}{}
		select {
		case <-gate:
		case <-s.closed:
			return 0, net.ErrClosed
		}
	}
	return s.TCPConn.Read(b)
}

func (s *stallConn) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.TCPConn.Close()
}

// TestReaderStallIsNotPeerSilence: a reader that does not run for longer
// than the heartbeat timeout (its process stopped or starved) while the
// peer keeps sending must not have the peer declared dead: its bytes wait
// in the socket, and the timer lets the reader hand them over first.
func TestReaderStallIsNotPeerSilence(t *testing.T) {
	cli, srv := tcpPair(t)
	sc := &stallConn{TCPConn: srv.(*net.TCPConn), waiting: make(chan struct{}, 1), closed: make(chan struct{})}
	cfg := session.Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond}
	e := start(t, sc, core.Server, cfg, nil)
	peer := newRawPeer(cli)
	peer.handshake(t)

	// Stall the reader: the next Read it starts waits at the gate. A PING
	// makes it return from the Read it is in.
	sc.stall()
	if err := peer.fr.WritePing(1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sc.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not come back for another read")
	}
	// Three heartbeat timeouts of stall, the peer sending a PING every
	// 50 ms throughout; nothing is read.
	tick := time.NewTicker(50 * time.Millisecond)
	for i := range 18 {
		<-tick.C
		if err := peer.fr.WritePing(uint64(100 + i)); err != nil {
			t.Fatalf("the peer's PING %d: %v", i, err)
		}
	}
	tick.Stop()
	if err := e.Err(); err != nil {
		t.Fatalf("during the reader's stall the connection failed: %v", err)
	}
	sc.resume()
	// Alive: a PING is answered.
	_ = cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := peer.fr.WritePing(999); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := peer.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after the stall: %v (connection error: %v)", err, e.Err())
		}
		if f.Type == wire.TypePong {
			if d, _ := wire.ParsePing(f.Payload); d == 999 {
				break
			}
		}
	}
	if err := e.Err(); errors.Is(err, session.ErrPeerDead) {
		t.Fatalf("the peer was declared dead: %v", err)
	}
}
