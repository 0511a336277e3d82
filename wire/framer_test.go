package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// writeAll writes one frame of every type, plus a large one, with fr.
func writeAll(fr *Framer, large []byte) error {
	for _, err := range []func() error{
		func() error { return fr.WriteHello(DefaultHello()) },
		func() error { return fr.WriteRequest(1, false, 250, "echo", nil, []byte("hello")) },
		func() error { return fr.WriteRequest(2, true, 0, "upload", testMD, []byte("part 1")) },
		func() error { return fr.WriteData(2, false, []byte("part 2")) },
		func() error { return fr.WriteResponse(1, false, nil, []byte("hello")) },
		func() error { return fr.WriteResponse(2, true, testMD, nil) },
		func() error { return fr.WriteError(3, CodeUnknownMethod, testMD, "no such method") },
		func() error { return fr.WriteError(0, CodeControlFlood, testMD, "flood") },
		func() error { return fr.WritePing(77) },
		func() error { return fr.WritePong(77) },
		func() error { return fr.WriteGoAway(2, ReasonShutdown, "bye") },
		func() error { return fr.WriteCancel(4) },
		func() error { return fr.WriteData(3, false, large) },
		func() error { return fr.WriteRequest(5, false, 0, "m", nil, nil) },
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
	next := func(typ Type, id uint64, flags uint8) Frame {
		if err != nil {
			return Frame{}
		}
		var f Frame
		if f, err = fr.ReadFrame(); err != nil {
			return Frame{}
		}
		if f.Type != typ || f.ID != id || f.Flags != flags || int(f.Length) != len(f.Payload) {
			err = fmt.Errorf("ReadFrame = %v, want %v id=%d flags=%#x", f.Header, typ, id, flags)
		}
		return f
	}
	check := func(ok bool, format string, args ...any) {
		if err == nil && !ok {
			err = fmt.Errorf(format, args...)
		}
	}
	h, perr := ParseHello(next(TypeHello, 0, 0).Payload)
	check(perr == nil && h == DefaultHello(), "HELLO: %+v %v", h, perr)
	f := next(TypeRequest, 1, 0)
	to, m, md, body, perr := ParseRequest(f.Flags, f.Payload)
	check(perr == nil && to == 250 && string(m) == "echo" && md == nil && string(body) == "hello", "REQUEST: %d %q %q %v", to, m, body, perr)
	f = next(TypeRequest, 2, FlagMore|FlagMetadata)
	_, m, md, body, perr = ParseRequest(f.Flags, f.Payload)
	check(perr == nil && string(m) == "upload" && slices.Equal(md.Metadata(), testMD) && string(body) == "part 1", "REQUEST: %q %v %q %v", m, md, body, perr)
	p := next(TypeData, 2, 0).Payload
	check(string(p) == "part 2", "DATA: %q", p)
	f = next(TypeResponse, 1, 0)
	check(string(f.Payload) == "hello", "RESPONSE: %q", f.Payload)
	f = next(TypeResponse, 2, FlagMore|FlagMetadata)
	md, body, perr = ParseResponse(f.Flags, f.Payload)
	check(perr == nil && slices.Equal(md.Metadata(), testMD) && len(body) == 0, "RESPONSE: %v %q %v", md, body, perr)
	f = next(TypeError, 3, FlagMetadata)
	c, md, msg, perr := ParseError(f.ID, f.Flags, f.Payload)
	check(perr == nil && c == CodeUnknownMethod && slices.Equal(md.Metadata(), testMD) && string(msg) == "no such method", "ERROR: %v %v %q %v", c, md, msg, perr)
	f = next(TypeError, 0, 0)
	c, md, msg, perr = ParseError(f.ID, f.Flags, f.Payload)
	check(perr == nil && c == CodeControlFlood && md == nil && string(msg) == "flood", "ERROR: %v %v %q %v", c, md, msg, perr)
	v, perr := ParsePing(next(TypePing, 0, 0).Payload)
	check(perr == nil && v == 77, "PING: %d %v", v, perr)
	v, perr = ParsePing(next(TypePong, 0, 0).Payload)
	check(perr == nil && v == 77, "PONG: %d %v", v, perr)
	last, r, msg, perr := ParseGoAway(next(TypeGoAway, 0, 0).Payload)
	check(perr == nil && last == 2 && r == ReasonShutdown && string(msg) == "bye", "GOAWAY: %d %v %q %v", last, r, msg, perr)
	p = next(TypeCancel, 4, 0).Payload
	check(len(p) == 0, "CANCEL: %q", p)
	p = next(TypeData, 3, 0).Payload
	check(bytes.Equal(p, large), "large DATA: %d bytes differ", len(p))
	f = next(TypeRequest, 5, 0)
	_, m, _, body, perr = ParseRequest(f.Flags, f.Payload)
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
	a, b := pipe(t)
	fa, fb := NewFramer(a, a), NewFramer(b, b)
	fa.MaxFrameSize, fb.MaxFrameSize = 2<<20, 2<<20
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
		{func() error { return fr.WriteRequest(1, false, 2, "echo", nil, []byte("x")) }, AppendRequest(nil, 1, false, 2, "echo", nil, []byte("x"))},
		{func() error { return fr.WriteRequest(5, true, 2, "echo", maxMD, large) }, AppendRequest(nil, 5, true, 2, "echo", maxMD, large)},
		{func() error { return fr.WriteResponse(1, true, testMD, large) }, AppendResponse(nil, 1, true, testMD, large)},
		{func() error { return fr.WriteResponse(1, false, nil, nil) }, AppendResponse(nil, 1, false, nil, nil)},
		{func() error { return fr.WriteData(1, true, large) }, AppendData(nil, 1, true, large)},
		{func() error { return fr.WriteData(1, false, nil) }, AppendData(nil, 1, false, nil)},
		{func() error { return fr.WriteError(0, CodeBusy, testMD, long) }, AppendError(nil, 0, CodeBusy, nil, long)},
		{func() error { return fr.WriteError(7, CodeApplication, maxMD, long) }, AppendError(nil, 7, CodeApplication, maxMD, long)},
		{func() error { return fr.WritePing(1) }, AppendPing(nil, 1)},
		{func() error { return fr.WritePong(1) }, AppendPong(nil, 1)},
		{func() error { return fr.WriteGoAway(9, ReasonMaxAge, long) }, AppendGoAway(nil, 9, ReasonMaxAge, long)},
		{func() error { return fr.WriteCancel(9) }, AppendCancel(nil, 9)},
		{func() error { return fr.WriteHello(DefaultHello()) }, AppendHello(nil, DefaultHello())},
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
	if err := NewFramer(shortWriter{boom}, nil).WriteData(1, false, largeBody(1<<20)); err != boom {
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
	fr.WriteData(1, false, make([]byte, 100))
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
	for name, b := range badPayloads() {
		f, err := NewFramer(nil, bytes.NewReader(b)).ReadFrame()
		wantProtocolError(t, name, err)
		if f.Payload != nil || f.Type != Type(b[4]) {
			t.Errorf("%s: frame %v with %d payload bytes", name, f.Header, len(f.Payload))
		}
	}
}

// Extension frames are read whole, so that the caller can skip them.
func TestFramerExtension(t *testing.T) {
	b := cat(frame(130, 0xff, 0, []byte("opaque")...), AppendPing(nil, 1))
	fr := NewFramer(nil, bytes.NewReader(b))
	if f, err := fr.ReadFrame(); err != nil || f.Type != 130 || string(f.Payload) != "opaque" {
		t.Fatalf("extension: %v, %v", f.Header, err)
	}
	if f, err := fr.ReadFrame(); err != nil || f.Type != TypePing {
		t.Fatalf("after the extension: %v, %v", f.Header, err)
	}
}

// A large payload is held in a pooled buffer only until the next ReadFrame,
// and small payloads use the Framer's own small buffer.
func TestFramerReleasesLargeBuffers(t *testing.T) {
	var buf bytes.Buffer
	fr := NewFramer(&buf, &buf)
	large := largeBody(DefaultMaxFrameSize)
	fr.WriteData(1, false, large)
	fr.WriteData(2, false, []byte("small"))
	fr.WriteData(3, false, largeBody(keepBufLen))

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
		if err := fr.WriteRequest(1, false, 100, "echo", testMD, body); err != nil {
			panic(err)
		}
		if err := fr.WriteData(1, false, body); err != nil {
			panic(err)
		}
		if err := fr.WritePing(1); err != nil {
			panic(err)
		}
		for range 3 {
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
