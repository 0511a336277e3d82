package conntest

// Tests of a peer that does not read what a server sends it: the server
// holds a bounded amount for it, goes on reading its PINGs, and ends the
// connection by its write timeout.

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// smallBufs is the socket buffer size of these tests over TCP: a few
// answers fill both ends' buffers (loopback TCP with the system's would
// absorb them).
const smallBufs = 4 << 10

// ReadingPausesWhileAnswersWait guards the pause of a server whose peer
// does not read its answers (protocol.md §11.4): while it holds
// WriteQueueSize bytes for the peer it stops reading, so that the peer
// cannot make it hold more, after one more read — the one owed from
// before the pause, which takes the next request (so that a PING sent
// right after a request is answered) — and it resumes as soon as the
// peer reads, answering every request. With Watching, the paused socket
// is watched for writing alone, and for reading alone once all is
// written.
func ReadingPausesWhileAnswersWait(t *testing.T, d Driver) {
	const queue = 64 << 10
	const n = 10
	for _, tr := range over([]transport{tcpBufs(smallBufs), pipe}, d) {
		t.Run(tr.name, func(t *testing.T) {
			nc, ns := tr.pair(t)
			ss := NewSink()
			ss.Held = make(chan core.Incoming, n)
			srv := Start(t, d, ns, core.Server, session.Config{WriteQueueSize: queue}, ss)
			p := NewRawPeer(nc)
			p.Handshake(t)
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second)) // bounds every step below

			request := func(id uint64) error {
				return p.Fr.WriteRequest(id, false, 0, "echo", nil, fmt.Appendf(nil, "request %d", id))
			}
			if err := request(1); err != nil {
				t.Fatal(err)
			}
			var in core.Incoming
			select {
			case in = <-ss.Held:
			case <-time.After(5 * time.Second):
				t.Fatal("request 1 did not arrive within 5s")
			}
			big := bytes.Repeat([]byte("answer 1 "), 4*queue/9)
			answering := make(chan struct{})
			go func() {
				defer close(answering)
				srv.Answer(in.ID, nil, big) // the peer reads nothing: its write waits, inline or parked
			}()
			if !WaitFor(5*time.Second, func() bool { return srv.Stats().Queued >= queue }) {
				t.Fatalf("the answer was not queued within 5s (%d bytes queued)", srv.Stats().Queued)
			}
			if d.Parks {
				select {
				case <-answering:
				case <-time.After(5 * time.Second):
					t.Fatal("Answer blocked for 5s on a peer that reads nothing: a parked connection must block nobody")
				}
			}
			// The read owed from before the pause takes request 2.
			if err := request(2); err != nil {
				t.Fatal(err)
			}
			if !WaitFor(5*time.Second, func() bool { return ss.Requests.Load() == 2 }) {
				t.Fatalf("the read owed from before the pause did not take request 2 (%d requests read)", ss.Requests.Load())
			}
			if d.Watching != nil {
				if r, w := d.Watching(srv.Conn); r || !w {
					t.Errorf("paused, its answer waiting, after the owed read the socket is watched for reading %v, writing %v; want writing alone", r, w)
				}
			}

			// The peer sends its other requests, still reading nothing.
			sent := make(chan error, 1)
			go func() {
				for id := uint64(3); id <= n; id++ {
					if err := request(id); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			// An observation window, not synchronisation: what the paused
			// server reads during it.
			time.Sleep(300 * time.Millisecond)
			if got := ss.Requests.Load(); got > 2 {
				t.Errorf("the server read %d requests while holding %d bytes for a peer that reads nothing, want 2 (WriteQueueSize %d)",
					got, srv.Stats().Queued, queue)
			}

			// The peer reads: the server resumes reading, and every
			// request is answered.
			go func() {
				for range n - 1 {
					select {
					case in := <-ss.Held:
						srv.Answer(in.ID, nil, in.Body)
					case <-srv.Done():
						return
					}
				}
			}()
			bodies := map[uint64][]byte{}
			for complete := 0; complete < n; {
				f, err := p.Fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the answers (%d of %d complete): %v", complete, n, err)
				}
				var chunk []byte
				switch f.Type {
				case wire.TypeResponse:
					_, chunk, err = wire.ParseResponse(f.Flags, f.Payload)
				case wire.TypeData:
					chunk = f.Payload
				case wire.TypePing:
					continue // left unanswered: the test is shorter than a heartbeat
				default:
					t.Fatalf("unexpected %v frame %d", f.Type, f.ID)
				}
				if err != nil {
					t.Fatal(err)
				}
				bodies[f.ID] = append(bodies[f.ID], chunk...)
				if !f.More() {
					complete++
				}
			}
			if err := <-sent; err != nil {
				t.Fatalf("sending requests 3..%d: %v", n, err)
			}
			<-answering
			if !bytes.Equal(bodies[1], big) {
				t.Errorf("answer 1: %d bytes, want the %d answered", len(bodies[1]), len(big))
			}
			for id := uint64(2); id <= n; id++ {
				if want := fmt.Sprintf("request %d", id); string(bodies[id]) != want {
					t.Errorf("answer %d: %q, want %q", id, bodies[id], want)
				}
			}
			// Once the last write is out (just after the peer could read
			// it), the socket is watched for reading alone.
			if d.Watching != nil && !WaitFor(5*time.Second, func() bool { r, w := d.Watching(srv.Conn); return r && !w }) {
				r, w := d.Watching(srv.Conn)
				t.Errorf("all answers written, the socket is watched for reading %v, writing %v; want reading alone", r, w)
			}
		})
	}
}

// stuck is how a test makes a server's output wait for a peer that reads
// nothing.
type stuck struct {
	tr   transport
	fill bool // the peer asks for a 256 KiB echo first (fillOutput)
}

// stucks: over a pipe the server's first write waits, a PONG's; over TCP
// an answer fills both ends' small socket buffers first.
var stucks = []stuck{{pipe, false}, {tcpBufs(smallBufs), true}}

// fillOutput has p ask srv for an echo of 256 KiB, reading nothing, and
// returns once the request is in: its answer cannot all be written. With
// Watching, it also waits until the socket is watched for writing (the
// output parked).
func fillOutput(t *testing.T, d Driver, srv *Endpoint, p *RawPeer) {
	t.Helper()
	_ = p.NC.SetWriteDeadline(time.Now().Add(5 * time.Second))
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	if err := p.Fr.WriteRequest(1, true, 0, "echo", nil, chunk); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := p.Fr.WriteData(1, i < 6, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if !WaitFor(5*time.Second, func() bool { return srv.Sink.Requests.Load() == 1 }) {
		t.Fatal("the 256 KiB request did not arrive within 5s")
	}
	if d.Watching != nil && !WaitFor(5*time.Second, func() bool { _, w := d.Watching(srv.Conn); return w }) {
		t.Fatal("the answer to a peer that does not read did not wait for the socket (watched for writing) within 5s")
	}
}

// PeerNeverReads guards reading's independence from writing: a peer that
// never reads makes the server's output wait for ever, yet the PINGs it
// keeps sending are still read (a reader that wrote, or a loop that
// waited for the write, would be stuck), so the connection ends by
// WriteTimeout (session.ErrWriteTimeout, not ErrPeerDead), and another
// connection of the driver goes on meanwhile.
func PeerNeverReads(t *testing.T, d Driver) {
	cfg := session.Config{
		HeartbeatInterval: 300 * time.Millisecond,
		HeartbeatTimeout:  600 * time.Millisecond,
		WriteTimeout:      1200 * time.Millisecond,
		LingerTimeout:     100 * time.Millisecond,
	}
	for _, s := range stucks {
		if len(over([]transport{s.tr}, d)) == 0 {
			continue
		}
		t.Run(s.tr.name, func(t *testing.T) {
			nc, ns := s.tr.pair(t)
			srv := Start(t, d, ns, core.Server, cfg, nil)
			p := NewRawPeer(nc)
			p.Handshake(t)
			// Another connection of the driver, busy meanwhile.
			onc, ons := TCPPair(t, 0)
			Start(t, d, ons, core.Server, session.Config{}, nil)
			other := Start(t, d, onc, core.Client, session.Config{}, nil)
			otherCalls := 0

			begin := time.Now() // before the output waits: the cut is at least WriteTimeout after
			if s.fill {
				fillOutput(t, d, srv, p)
			}
			framesBefore := srv.Stats().FramesIn
			// From here on the peer sends a PING every 50ms (its pace,
			// well within HeartbeatTimeout) until the server closes.
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			pings := 0
			deadline := time.After(10 * time.Second)
		loop:
			for {
				select {
				case <-srv.Done():
					break loop
				case <-deadline:
					t.Fatalf("the connection was still open 10s after the peer stopped reading (%d PINGs sent)", pings)
				case <-tick.C:
				}
				_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if err := p.Fr.WritePing(uint64(pings + 1)); err != nil {
					// The server closes the socket, then Done: a write that
					// failed on the closed socket may come first.
					select {
					case <-srv.Done():
						break loop // closed while this PING was written
					case <-time.After(2 * time.Second):
					}
					t.Fatalf("PING %d after %v: %v, and the server not done 2s later (it stopped reading)", pings+1, time.Since(begin), err)
				}
				pings++
				if got, err := other.Echo(t, []byte("meanwhile"), 5*time.Second); err != nil || string(got) != "meanwhile" {
					t.Errorf("a call on another connection: %q, %v", got, err)
				}
				otherCalls++
			}
			took := time.Since(begin)
			err := srv.Err()
			read := srv.Stats().FramesIn - framesBefore
			t.Logf("TIMING a peer that never reads, sending %d PINGs (%d read), cut after %v with %v; %d calls on another connection meanwhile",
				pings, read, took, err, otherCalls)
			if !errors.Is(err, session.ErrWriteTimeout) || errors.Is(err, session.ErrPeerDead) {
				t.Errorf("connection ended with %v, want session.ErrWriteTimeout", err)
			}
			if want := uint64(cfg.WriteTimeout / (100 * time.Millisecond)); read < want {
				t.Errorf("%d PINGs read before the cut, want at least %d (one per 50ms for WriteTimeout %v, with slack)", read, want, cfg.WriteTimeout)
			}
			if took < cfg.WriteTimeout || took > cfg.WriteTimeout+5*time.Second {
				t.Errorf("cut after %v, want about WriteTimeout %v plus LingerTimeout %v", took, cfg.WriteTimeout, cfg.LingerTimeout)
			}
		})
	}
}

// CloseWhileOutputWaits: Close from another goroutine while the server's
// answer waits for a peer that does not read returns at once, closes the
// socket (Done), the driver is done with it, and Err and Sink.Closed give
// the error given to Close.
func CloseWhileOutputWaits(t *testing.T, d Driver) {
	for _, s := range stucks {
		if len(over([]transport{s.tr}, d)) == 0 {
			continue
		}
		t.Run(s.tr.name, func(t *testing.T) {
			nc, ns := s.tr.pair(t)
			srv := Start(t, d, ns, core.Server, session.Config{}, nil)
			p := NewRawPeer(nc)
			p.Handshake(t)
			fillOutput(t, d, srv, p)
			took := CloseBlocked(t, srv)
			t.Logf("TIMING Close with output waiting: done after %v", took)
		})
	}
}
