package main

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// TestServeSurvivesItsOwnStall: a server process that does not run for a
// while (stopped, or not scheduled by a loaded machine or a CPU quota) must
// not declare dead, when it runs again, the peers whose bytes arrived on
// time meanwhile: they are waiting in its sockets, and any bytes received
// prove a peer alive (docs/protocol.md, liveness).
//
// With 10 peers and a 4 s stop (timeout 3 s) the event loop used to drop
// all 10 and netconn 4: expired deadlines were acted on before what the
// sockets held was read (core.Conn.Silent now tells the transports to read
// first).
func TestServeSurvivesItsOwnStall(t *testing.T) {
	for _, transport := range []string{"epoll", "netconn"} {
		t.Run(transport, func(t *testing.T) {
			s := startServe(t, "--transport", transport, "--heartbeat-interval", "1s", "--heartbeat-timeout", "3s")
			const n = 10
			peers := make([]*stallPeer, n)
			for i := range peers {
				peers[i] = dialStallPeer(t, s.addr)
			}
			defer func() {
				for _, p := range peers {
					p.close()
				}
			}()
			for _, p := range peers {
				if !p.roundTrip(1, 5*time.Second) {
					t.Fatal("a peer got no PONG before the stall")
				}
			}
			pid := s.cmd.Process.Pid
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(4 * time.Second) // the stall: longer than the heartbeat timeout
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			dropped := 0
			for _, p := range peers {
				if !p.roundTrip(2, 5*time.Second) {
					dropped++
				}
			}
			if dropped > 0 {
				t.Errorf("%s: the server dropped %d of %d peers that kept sending through its 4 s stall", transport, dropped, n)
			}
		})
	}
}

// stallPeer is a frame-level client that sends a PING every 300 ms and
// answers the server's PINGs.
type stallPeer struct {
	c      net.Conn
	fr     *wire.Framer
	mu     sync.Mutex // serialises writes
	pongs  chan uint64
	closed chan struct{} // the server ended the connection
	stop   chan struct{}
	wg     sync.WaitGroup
}

// stallPeerBase offsets the periodic PINGs' data from the round trips'.
const stallPeerBase = 1 << 32

func dialStallPeer(t *testing.T, addr string) *stallPeer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := &stallPeer{c: c, fr: wire.NewFramer(c, c), pongs: make(chan uint64, 16), closed: make(chan struct{}), stop: make(chan struct{})}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.fr.ClientHandshake(wire.Hello{}); err != nil {
		c.Close()
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	p.wg.Go(p.read)
	p.wg.Go(p.ping)
	return p
}

func (p *stallPeer) read() {
	defer close(p.closed)
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f.Type {
		case wire.TypePing:
			d, _ := wire.ParsePing(f.Payload)
			p.mu.Lock()
			_ = p.fr.WritePong(d)
			p.mu.Unlock()
		case wire.TypePong:
			if d, err := wire.ParsePing(f.Payload); err == nil && d < stallPeerBase {
				p.pongs <- d
			}
		}
	}
}

func (p *stallPeer) ping() {
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for i := uint64(stallPeerBase); ; i++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		err := p.fr.WritePing(i)
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// roundTrip sends PING id and reports whether its PONG came back within
// limit (false: the connection ended, or no answer).
func (p *stallPeer) roundTrip(id uint64, limit time.Duration) bool {
	p.mu.Lock()
	err := p.fr.WritePing(id)
	p.mu.Unlock()
	if err != nil {
		return false
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case d := <-p.pongs:
			if d == id {
				return true
			}
		case <-p.closed:
			return false
		case <-timer.C:
			return false
		}
	}
}

func (p *stallPeer) close() {
	close(p.stop)
	p.c.Close()
	p.wg.Wait()
}
