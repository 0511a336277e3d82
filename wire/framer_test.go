package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// writeAll writes one frame of every type, plus a large one, with fr.
func writeAll(fr *Framer, large []byte) error {
	for _, err := range []func() error{
		func() error { return fr.WriteRequest(1, 250, "echo", []byte("hello")) },
		func() error { return fr.WriteResponse(1, []byte("hello")) },
		func() error { return fr.WriteError(2, CodeUnknownMethod, "no such method") },
		func() error { return fr.WritePing(77) },
		func() error { return fr.WritePong(77) },
		func() error { return fr.WriteGoAway(2, ReasonShutdown, "bye") },
		func() error { return fr.WriteResponse(3, large) },
		func() error { return fr.WriteRequest(4, 0, "m", nil) },
	} {
		if err := err(); err != nil {
			return err
		}
	}
	return nil
}

// readAll reads back what writeAll wrote. It returns an error rather than
// failing t, so that it can run on any goroutine.
func readAll(fr *Framer, large []byte) error {
	var err error
	next := func(typ Type, id uint64) []byte {
		if err != nil {
			return nil
		}
		var f Frame
		if f, err = fr.ReadFrame(); err != nil {
			return nil
		}
		if f.Type != typ || f.ID != id || int(f.Length) != len(f.Payload) {
			err = fmt.Errorf("ReadFrame = %v, want %v id=%d", f.Header, typ, id)
		}
		return f.Payload
	}
	check := func(ok bool, format string, args ...any) {
		if err == nil && !ok {
			err = fmt.Errorf(format, args...)
		}
	}
	to, m, body, perr := ParseRequest(next(TypeRequest, 1))
	check(perr == nil && to == 250 && string(m) == "echo" && string(body) == "hello", "REQUEST: %d %q %q %v", to, m, body, perr)
	p := next(TypeResponse, 1)
	check(string(p) == "hello", "RESPONSE: %q", p)
	c, msg, perr := ParseError(next(TypeError, 2))
	check(perr == nil && c == CodeUnknownMethod && string(msg) == "no such method", "ERROR: %v %q %v", c, msg, perr)
	v, perr := ParsePing(next(TypePing, 0))
	check(perr == nil && v == 77, "PING: %d %v", v, perr)
	v, perr = ParsePing(next(TypePong, 0))
	check(perr == nil && v == 77, "PONG: %d %v", v, perr)
	last, r, msg, perr := ParseGoAway(next(TypeGoAway, 0))
	check(perr == nil && last == 2 && r == ReasonShutdown && string(msg) == "bye", "GOAWAY: %d %v %q %v", last, r, msg, perr)
	p = next(TypeResponse, 3)
	check(bytes.Equal(p, large), "large RESPONSE: %d bytes differ", len(p))
	_, m, body, perr = ParseRequest(next(TypeRequest, 4))
	check(perr == nil && string(m) == "m" && len(body) == 0, "REQUEST: %q %q %v", m, body, perr)
	return err
}

func largeBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestFramerRoundTripBuffer(t *testing.T) {
	large := largeBody(DefaultMaxFrameSize)
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	if err := writeAll(fr, large); err != nil {
		t.Fatal(err)
	}
	if err := readAll(fr, large); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("ReadFrame at the end = %v, want io.EOF", err)
	}
}

// Over net.Pipe (synchronous, unbuffered) both sides run at once: one
// goroutine reads while another writes on the same Framers.
func TestFramerRoundTripPipe(t *testing.T) {
	large := largeBody(1<<20 + 3)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(20 * time.Second) // fail rather than hang
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	fa, fb := NewFramer(a, a), NewFramer(b, b)
	errc := make(chan error, 4)
	go func() { errc <- writeAll(fa, large) }()
	go func() { errc <- writeAll(fb, large) }()
	go func() { errc <- readAll(fa, large) }()
	go func() { errc <- readAll(fb, large) }()
	for range 4 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

type countingWriter struct {
	writes [][]byte
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestFramerOneWritePerFrame(t *testing.T) {
	var w countingWriter
	fr := NewFramer(&w, nil)
	large := largeBody(100000)
	long := strings.Repeat("m", 3000)
	for _, tc := range []struct {
		write func() error
		want  []byte
	}{
		{func() error { return fr.WriteRequest(1, 2, "echo", []byte("x")) }, AppendRequest(nil, 1, 2, "echo", []byte("x"))},
		{func() error { return fr.WriteRequest(5, 2, "echo", large) }, AppendRequest(nil, 5, 2, "echo", large)},
		{func() error { return fr.WriteResponse(1, large) }, AppendResponse(nil, 1, large)},
		{func() error { return fr.WriteResponse(1, nil) }, AppendResponse(nil, 1, nil)},
		{func() error { return fr.WriteError(0, CodeBusy, long) }, AppendError(nil, 0, CodeBusy, long)},
		{func() error { return fr.WritePing(1) }, AppendPing(nil, 1)},
		{func() error { return fr.WritePong(1) }, AppendPong(nil, 1)},
		{func() error { return fr.WriteGoAway(9, ReasonMaxAge, long) }, AppendGoAway(nil, 9, ReasonMaxAge, long)},
	} {
		w.writes = nil
		if err := tc.write(); err != nil {
			t.Fatal(err)
		}
		if len(w.writes) != 1 || !bytes.Equal(w.writes[0], tc.want) {
			t.Errorf("%d writes; first %.40x, want one write of %.40x", len(w.writes), w.writes, tc.want)
		}
	}
	if cap(fr.wbuf) > keepBufLen || fr.wbig != nil {
		t.Errorf("write buffer kept: cap %d, pooled %v", cap(fr.wbuf), fr.wbig != nil)
	}
}

type shortWriter struct{ err error }

func (w shortWriter) Write(p []byte) (int, error) { return len(p) / 2, w.err }

func TestFramerWriteErrors(t *testing.T) {
	if err := NewFramer(shortWriter{}, nil).WritePing(1); err != io.ErrShortWrite {
		t.Errorf("short write: err = %v, want io.ErrShortWrite", err)
	}
	boom := errors.New("boom")
	if err := NewFramer(shortWriter{boom}, nil).WriteResponse(1, largeBody(1<<20)); err != boom {
		t.Errorf("failed write: err = %v, want %v", err, boom)
	}
}

func TestFramerOversize(t *testing.T) {
	for _, tc := range []struct{ max, length, wantMax uint32 }{
		{0, 1 << 30, DefaultMaxFrameSize},
		{0, DefaultMaxFrameSize + 1, DefaultMaxFrameSize},
		{1000, 1001, 1000},
	} {
		// Only the header is there: ReadFrame must not wait for, or
		// allocate, the payload.
		hdr := header(tc.length, byte(TypeResponse), 0, 0, 1)
		r := bytes.NewReader(hdr)
		fr := NewFramer(nil, r)
		fr.MaxFrameSize = tc.max
		f, err := fr.ReadFrame()
		var fe *FrameTooLargeError
		if !errors.As(err, &fe) || !errors.Is(err, ErrFrameTooLarge) || fe.Length != tc.length || fe.Max != tc.wantMax {
			t.Fatalf("max %d, length %d: err = %v, want *FrameTooLargeError", tc.max, tc.length, err)
		}
		if f.Length != tc.length || f.Payload != nil {
			t.Errorf("frame = %v with %d payload bytes", f.Header, len(f.Payload))
		}
		allocs := testing.AllocsPerRun(20, func() {
			r.Reset(hdr)
			if _, err := fr.ReadFrame(); err == nil {
				panic("no error")
			}
		})
		if allocs > 1 { // the error value
			t.Errorf("oversize ReadFrame: %v allocs, want at most 1", allocs)
		}
	}
	// At the limit is fine.
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	fr.MaxFrameSize = 100
	fr.WriteResponse(1, make([]byte, 100))
	if f, err := fr.ReadFrame(); err != nil || len(f.Payload) != 100 {
		t.Errorf("payload at the limit: %v, %v", f.Header, err)
	}
}

func TestFramerEOF(t *testing.T) {
	for name, b := range validFrames() {
		for i := 0; i < len(b); i++ {
			_, err := NewFramer(nil, bytes.NewReader(b[:i])).ReadFrame()
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			if err != want {
				t.Fatalf("%s cut at %d: err = %v, want %v", name, i, err, want)
			}
		}
	}
}

func TestFramerProtocolErrors(t *testing.T) {
	for _, tc := range badHeaders {
		b := append(append([]byte(nil), tc.hdr...), make([]byte, 16)...)
		_, err := NewFramer(nil, bytes.NewReader(b)).ReadFrame()
		wantProtocolError(t, tc.name, err)
	}
	b := append(header(8, 1, 0, 0, 1), 0, 0, 0, 0, 4, 'a', 'b', 'c')
	_, err := NewFramer(nil, bytes.NewReader(b)).ReadFrame()
	wantProtocolError(t, "method overrun", err)
}

// A large payload is held in a pooled buffer only until the next ReadFrame,
// and small payloads use the Framer's own small buffer.
func TestFramerReleasesLargeBuffers(t *testing.T) {
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	large := largeBody(DefaultMaxFrameSize)
	fr.WriteResponse(1, large)
	fr.WriteResponse(2, []byte("small"))
	fr.WriteResponse(3, largeBody(keepBufLen))

	f, err := fr.ReadFrame()
	if err != nil || !bytes.Equal(f.Payload, large) || fr.rbig == nil {
		t.Fatalf("large frame: %v, %v", f.Header, err)
	}
	if f, err = fr.ReadFrame(); err != nil || string(f.Payload) != "small" {
		t.Fatalf("small frame: %v, %v", f.Header, err)
	}
	if fr.rbig != nil || cap(fr.rbuf) > keepBufLen {
		t.Errorf("after a small frame: pooled buffer held %v, own buffer cap %d", fr.rbig != nil, cap(fr.rbuf))
	}
	if f, err = fr.ReadFrame(); err != nil || len(f.Payload) != keepBufLen || fr.rbig != nil {
		t.Errorf("frame at keepBufLen: %v, %v, pooled %v", f.Header, err, fr.rbig != nil)
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{keepBufLen + 1, 1 << 15, 1<<15 + 1, DefaultMaxFrameSize, 1 << maxPoolShift, 1<<maxPoolShift + 1} {
		p := getBuf(n)
		if len(*p) != n || cap(*p) < n {
			t.Fatalf("getBuf(%d): len %d cap %d", n, len(*p), cap(*p))
		}
		if n <= 1<<maxPoolShift && cap(*p)&(cap(*p)-1) != 0 {
			t.Errorf("getBuf(%d): cap %d is not a size class", n, cap(*p))
		}
		putBuf(p)
	}
	for n, want := range map[int]int{0: 512, 1: 512, 512: 512, 513: 1024, keepBufLen: keepBufLen} {
		if got := smallBufCap(n); got != want {
			t.Errorf("smallBufCap(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestFramerZeroAllocs(t *testing.T) {
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	body := make([]byte, 64)
	roundTrip := func() {
		if err := fr.WriteRequest(1, 100, "echo", body); err != nil {
			panic(err)
		}
		if err := fr.WritePing(1); err != nil {
			panic(err)
		}
		for range 2 {
			if _, err := fr.ReadFrame(); err != nil {
				panic(err)
			}
		}
	}
	roundTrip() // size the buffers
	if a := testing.AllocsPerRun(100, roundTrip); a != 0 {
		t.Errorf("Framer round trip: %v allocs, want 0", a)
	}
}
