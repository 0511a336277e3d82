package server_test

// Raw peers speak protocol v2 by hand with wire.Framer over a plain
// net.Conn, so they do exactly what a test tells them and nothing else: in
// particular they answer PINGs only when asked to, which is how a silent
// (dead or frozen) peer is built.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// frame is a copy of a received frame (Framer payloads are reused).
type frame struct {
	Type    wire.Type
	Flags   uint8
	ID      uint64
	Payload []byte
}

func (f frame) More() bool { return f.Flags&wire.FlagMore != 0 }

func (f frame) String() string {
	s := fmt.Sprintf("%v id=%d flags=%#x len=%d", f.Type, f.ID, f.Flags, len(f.Payload))
	switch f.Type {
	case wire.TypeError:
		if code, _, msg, err := wire.ParseError(f.ID, f.Flags, f.Payload); err == nil {
			s += fmt.Sprintf(" code=%v msg=%q", code, msg)
		}
	case wire.TypeGoAway:
		if last, reason, _, err := wire.ParseGoAway(f.Payload); err == nil {
			s += fmt.Sprintf(" last=%d reason=%v", last, reason)
		}
	}
	return s
}

// errorCode parses an ERROR frame's code and message.
func errorCode(t *testing.T, f frame) (wire.Code, string) {
	t.Helper()
	if f.Type != wire.TypeError {
		t.Fatalf("got %v, want an ERROR frame", f)
	}
	code, _, msg, err := wire.ParseError(f.ID, f.Flags, f.Payload)
	if err != nil {
		t.Fatalf("ERROR payload: %v", err)
	}
	return code, string(msg)
}

var errNoFrame = errors.New("no frame within the timeout")

// rawPeer is a client speaking the protocol by hand. Its reader goroutine
// answers PINGs only if autoPong; every other frame (and, without autoPong,
// every PING too) is handed to the test.
type rawPeer struct {
	conn     *net.TCPConn
	fr       *wire.Framer
	server   wire.Hello // the server's HELLO, after the handshake
	wmu      sync.Mutex
	autoPong bool
	frames   chan frame
	pings    atomic.Int64
	done     chan struct{} // closed when the reader stops
	readErr  error         // valid after done
	stop     chan struct{}
	stopOnce sync.Once
}

// dialTCP opens a plain TCP connection to addr.
func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return nc.(*net.TCPConn)
}

// dialRaw connects to addr, runs the HELLO exchange and starts the reader.
func dialRaw(t *testing.T, addr string, autoPong bool) *rawPeer {
	t.Helper()
	return handshakeRaw(t, dialTCP(t, addr), autoPong)
}

// handshakeRaw runs the client's HELLO exchange on conn (bounded by a
// deadline) and starts the reader; the test fails if the server refuses.
func handshakeRaw(t *testing.T, conn *net.TCPConn, autoPong bool) *rawPeer {
	t.Helper()
	fr := wire.NewFramer(conn, conn)
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	h, err := fr.ClientHandshake(wire.Hello{})
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		conn.Close()
		t.Fatalf("HELLO exchange: %v", err)
	}
	p := startRaw(t, conn, fr, autoPong)
	p.server = h
	return p
}

// startRaw starts the reader of a raw peer on conn (fr nil: a new Framer).
func startRaw(t *testing.T, conn *net.TCPConn, fr *wire.Framer, autoPong bool) *rawPeer {
	if fr == nil {
		fr = wire.NewFramer(conn, conn)
	}
	p := &rawPeer{
		conn:     conn,
		fr:       fr,
		server:   wire.DefaultHello(),
		autoPong: autoPong,
		frames:   make(chan frame, 4096),
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
	}
	go p.read()
	t.Cleanup(func() {
		p.Close()
		<-p.done
	})
	return p
}

func (p *rawPeer) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.conn.Close()
}

func (p *rawPeer) read() {
	defer close(p.done)
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.readErr = err
			return
		}
		if f.Type == wire.TypePing {
			p.pings.Add(1)
			if p.autoPong {
				data, _ := wire.ParsePing(f.Payload)
				p.wmu.Lock()
				_ = p.fr.WritePong(data)
				p.wmu.Unlock()
				continue
			}
		}
		c := frame{Type: f.Type, Flags: f.Flags, ID: f.ID, Payload: append([]byte(nil), f.Payload...)}
		select {
		case p.frames <- c:
		case <-p.stop:
			p.readErr = net.ErrClosed
			return
		}
	}
}

// next returns the next frame, or the error that ended the stream once
// every frame before it was returned, or errNoFrame after timeout.
func (p *rawPeer) next(timeout time.Duration) (frame, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case f := <-p.frames:
		return f, nil
	case <-p.done:
		select {
		case f := <-p.frames:
			return f, nil
		default:
			return frame{}, p.readErr
		}
	case <-tm.C:
		return frame{}, errNoFrame
	}
}

// expect returns the next frame that is not a PING and fails unless it has
// type want.
func (p *rawPeer) expect(t *testing.T, timeout time.Duration, want wire.Type) frame {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := p.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %v: %v", want, err)
		}
		if f.Type == wire.TypePing && want != wire.TypePing {
			continue
		}
		if f.Type != want {
			t.Fatalf("got frame %v, want %v", f, want)
		}
		return f
	}
}

// expectError expects an ERROR frame with the given id and code.
func (p *rawPeer) expectError(t *testing.T, timeout time.Duration, id uint64, want wire.Code) {
	t.Helper()
	f := p.expect(t, timeout, wire.TypeError)
	if code, msg := errorCode(t, f); code != want || f.ID != id {
		t.Fatalf("got %v (%q), want ERROR %v id %d", f, msg, want, id)
	}
}

// answer reads the next answer (skipping PINGs): a RESPONSE with its DATA
// frames reassembled, or an ERROR. It fails on an answer for another id.
func (p *rawPeer) answer(t *testing.T, timeout time.Duration, id uint64) (body []byte, errFrame *frame) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	more := false
	for {
		f, err := p.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for the answer to %d: %v", id, err)
		}
		switch {
		case f.Type == wire.TypePing:
			continue
		case f.ID != id:
			t.Fatalf("got %v while waiting for the answer to %d", f, id)
		case f.Type == wire.TypeError && !more:
			return nil, &f
		case f.Type == wire.TypeResponse && !more:
			_, b, err := wire.ParseResponse(f.Flags, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			body = append(body, b...)
		case f.Type == wire.TypeData && more:
			body = append(body, f.Payload...)
		default:
			t.Fatalf("got %v in the answer to %d", f, id)
		}
		if more = f.More(); !more {
			return body, nil
		}
	}
}

// expectEOF fails unless the stream ends cleanly (io.EOF) within timeout,
// with no frame other than PINGs before it.
func (p *rawPeer) expectEOF(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.expectEnd(t, timeout, false)
}

// expectClosed is expectEOF that also accepts a reset: a peer that keeps
// sending while the server closes gets a reset for the bytes the server
// never read.
func (p *rawPeer) expectClosed(t *testing.T, timeout time.Duration) {
	t.Helper()
	p.expectEnd(t, timeout, true)
}

func (p *rawPeer) expectEnd(t *testing.T, timeout time.Duration, resetOK bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := p.next(time.Until(deadline))
		if err == nil {
			if f.Type == wire.TypePing {
				continue
			}
			t.Fatalf("got frame %v, want the end of the stream", f)
		}
		switch {
		case errors.Is(err, io.EOF):
		case resetOK && errors.Is(err, syscall.ECONNRESET):
		case resetOK:
			t.Fatalf("want the connection closed (EOF or reset), got %v", err)
		default:
			t.Fatalf("want end of stream (EOF), got %v", err)
		}
		return
	}
}

// write runs one write of the peer's under its write lock.
func (p *rawPeer) write(t *testing.T, what string, f func(fr *wire.Framer) error) {
	t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := f(p.fr); err != nil {
		t.Fatalf("write %s: %v", what, err)
	}
}

// request sends a request, in chunks of the server's MAX_FRAME_SIZE when
// its body does not fit one frame.
func (p *rawPeer) request(t *testing.T, id uint64, timeoutMillis uint32, method string, body []byte) {
	t.Helper()
	room := int(p.server.MaxFrameSize) - wire.RequestOverhead(method, nil)
	first := body[:min(len(body), room)]
	rest := body[len(first):]
	p.write(t, fmt.Sprintf("REQUEST %d", id), func(fr *wire.Framer) error {
		return fr.WriteRequest(id, len(rest) > 0, timeoutMillis, method, nil, first)
	})
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), int(p.server.MaxFrameSize))]
		rest = rest[len(chunk):]
		p.write(t, fmt.Sprintf("DATA %d", id), func(fr *wire.Framer) error {
			return fr.WriteData(id, len(rest) > 0, chunk)
		})
	}
}

func (p *rawPeer) ping(t *testing.T, data uint64) {
	t.Helper()
	p.write(t, "PING", func(fr *wire.Framer) error { return fr.WritePing(data) })
}

func (p *rawPeer) cancel(t *testing.T, id uint64) {
	t.Helper()
	p.write(t, "CANCEL", func(fr *wire.Framer) error { return fr.WriteCancel(id) })
}

func (p *rawPeer) writeRaw(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// echo sends an echo request and checks its answer.
func (p *rawPeer) echo(t *testing.T, id uint64, body string) {
	t.Helper()
	p.request(t, id, 0, "echo", []byte(body))
	got, ef := p.answer(t, 2*time.Second, id)
	if ef != nil || string(got) != body {
		t.Fatalf("echo %d: got %q, error frame %v", id, got, ef)
	}
}

// expectPong waits for the PONG carrying data, skipping nothing else.
func (p *rawPeer) expectPong(t *testing.T, timeout time.Duration, data uint64) {
	t.Helper()
	f := p.expect(t, timeout, wire.TypePong)
	if got, err := wire.ParsePing(f.Payload); err != nil || got != data {
		t.Fatalf("PONG %#x (%v), want %#x", got, err, data)
	}
}
