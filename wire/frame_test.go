package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// validFrames holds one or more encoded frames of every type.
func validFrames() map[string][]byte {
	return map[string][]byte{
		"request":           AppendRequest(nil, 1, 1000, "echo", []byte("hi")),
		"request-nobody":    AppendRequest(nil, 1<<63, 0, "m", nil),
		"request-maxmethod": AppendRequest(nil, 9, 5, strings.Repeat("x", MaxMethodLen), []byte{0}),
		"response":          AppendResponse(nil, 1, []byte("hi")),
		"response-empty":    AppendResponse(nil, 42, nil),
		"error":             AppendError(nil, 3, CodeApplication, "boom"),
		"error-conn":        AppendError(nil, 0, CodeBusy, ""),
		"ping":              AppendPing(nil, 0x0102030405060708),
		"pong":              AppendPong(nil, ^uint64(0)),
		"goaway":            AppendGoAway(nil, 17, ReasonDrain, "bye"),
		"goaway-empty":      AppendGoAway(nil, 0, ReasonShutdown, ""),
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{TypeRequest.String(), "REQUEST"},
		{TypeResponse.String(), "RESPONSE"},
		{TypeError.String(), "ERROR"},
		{TypePing.String(), "PING"},
		{TypePong.String(), "PONG"},
		{TypeGoAway.String(), "GOAWAY"},
		{Type(0).String(), "UNKNOWN(0)"},
		{Type(7).String(), "UNKNOWN(7)"},
		{Type(255).String(), "UNKNOWN(255)"},
		{CodeBusy.String(), "BUSY"},
		{CodeFrameTooLarge.String(), "FRAME_TOO_LARGE"},
		{CodeProtocol.String(), "PROTOCOL"},
		{CodeUnknownMethod.String(), "UNKNOWN_METHOD"},
		{CodeApplication.String(), "APPLICATION"},
		{CodeTimeout.String(), "TIMEOUT"},
		{CodeOverloaded.String(), "OVERLOADED"},
		{CodeShuttingDown.String(), "SHUTTING_DOWN"},
		{CodeInternal.String(), "INTERNAL"},
		{Code(0).String(), "CODE(0)"},
		{Code(4242).String(), "CODE(4242)"},
		{ReasonShutdown.String(), "SHUTDOWN"},
		{ReasonMaxAge.String(), "MAX_AGE"},
		{ReasonDrain.String(), "DRAIN"},
		{ReasonProtocolError.String(), "PROTOCOL_ERROR"},
		{Reason(0).String(), "REASON(0)"},
		{Reason(5).String(), "REASON(5)"},
		{Header{Type: TypeRequest, ID: 7, Length: 42}.String(), "REQUEST id=7 len=42"},
		{Header{Type: TypePing, Length: 8, Flags: 0x81}.String(), "PING id=0 len=8 flags=0x81"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	want := map[Code]bool{CodeBusy: true, CodeOverloaded: true, CodeShuttingDown: true}
	for c := Code(0); c < 20; c++ {
		if got := c.Retryable(); got != want[c] {
			t.Errorf("%v.Retryable() = %v, want %v", c, got, want[c])
		}
	}
}

// TestWorkedExample pins the bytes of the example in docs/protocol.md.
func TestWorkedExample(t *testing.T) {
	req := hex.EncodeToString(AppendRequest(nil, 1, 1000, "echo", []byte("hi")))
	if want := "0000000b010000000000000000000001" + "000003e8046563686f6869"; req != want {
		t.Errorf("request = %s, want %s", req, want)
	}
	resp := hex.EncodeToString(AppendResponse(nil, 1, []byte("hi")))
	if want := "00000002020000000000000000000001" + "6869"; resp != want {
		t.Errorf("response = %s, want %s", resp, want)
	}
	if got, want := hex.EncodeToString(AppendPing(nil, 7)), "00000008040000000000000000000000"+"0000000000000007"; got != want {
		t.Errorf("ping = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(AppendError(nil, 0, CodeBusy, "")), "00000002030000000000000000000000"+"0001"; got != want {
		t.Errorf("busy = %s, want %s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	var d Decoder
	check := func(t *testing.T, b []byte, typ Type, id uint64) Frame {
		t.Helper()
		f, n, err := d.Next(b)
		if err != nil || n != len(b) {
			t.Fatalf("Next = n %d, err %v; want n %d", n, err, len(b))
		}
		if f.Type != typ || f.ID != id || f.Flags != 0 || int(f.Length) != len(b)-HeaderLen || !bytes.Equal(f.Payload, b[HeaderLen:]) {
			t.Fatalf("Next = %v, want %v id=%d len=%d", f.Header, typ, id, len(b)-HeaderLen)
		}
		return f
	}
	t.Run("request", func(t *testing.T) {
		for _, method := range []string{"m", "echo", strings.Repeat("x", MaxMethodLen)} {
			for _, body := range [][]byte{nil, []byte("body"), make([]byte, 70000)} {
				f := check(t, AppendRequest(nil, 1<<40, 123456, method, body), TypeRequest, 1<<40)
				to, m, bd, err := ParseRequest(f.Payload)
				if err != nil || to != 123456 || string(m) != method || !bytes.Equal(bd, body) {
					t.Fatalf("ParseRequest = %d %q %d bytes %v", to, m, len(bd), err)
				}
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		for _, body := range [][]byte{nil, []byte("body"), make([]byte, 70000)} {
			f := check(t, AppendResponse(nil, 5, body), TypeResponse, 5)
			if !bytes.Equal(f.Payload, body) {
				t.Fatal("payload differs")
			}
		}
	})
	t.Run("error", func(t *testing.T) {
		for _, id := range []uint64{0, 1, ^uint64(0)} {
			f := check(t, AppendError(nil, id, CodeTimeout, "deadline passed"), TypeError, id)
			c, msg, err := ParseError(f.Payload)
			if err != nil || c != CodeTimeout || string(msg) != "deadline passed" {
				t.Fatalf("ParseError = %v %q %v", c, msg, err)
			}
		}
	})
	t.Run("ping-pong", func(t *testing.T) {
		for _, v := range []uint64{0, 1, 0xdeadbeefcafebabe} {
			for typ, b := range map[Type][]byte{TypePing: AppendPing(nil, v), TypePong: AppendPong(nil, v)} {
				f := check(t, b, typ, 0)
				if got, err := ParsePing(f.Payload); err != nil || got != v {
					t.Fatalf("ParsePing = %x %v, want %x", got, err, v)
				}
			}
		}
	})
	t.Run("goaway", func(t *testing.T) {
		f := check(t, AppendGoAway(nil, 99, ReasonMaxAge, "max age"), TypeGoAway, 0)
		last, r, msg, err := ParseGoAway(f.Payload)
		if err != nil || last != 99 || r != ReasonMaxAge || string(msg) != "max age" {
			t.Fatalf("ParseGoAway = %d %v %q %v", last, r, msg, err)
		}
	})
}

func TestAppendKeepsPrefixAndStreams(t *testing.T) {
	prefix := []byte("prefix")
	b := append([]byte(nil), prefix...)
	b = AppendRequest(b, 1, 0, "a", []byte("x"))
	b = AppendResponse(b, 1, []byte("y"))
	b = AppendPing(b, 7)
	if !bytes.HasPrefix(b, prefix) {
		t.Fatal("prefix overwritten")
	}
	b = b[len(prefix):]
	var d Decoder
	var types []Type
	for len(b) > 0 {
		f, n, err := d.Next(b)
		if err != nil || n == 0 {
			t.Fatalf("Next: n %d, err %v", n, err)
		}
		types = append(types, f.Type)
		b = b[n:]
	}
	if len(types) != 3 || types[0] != TypeRequest || types[1] != TypeResponse || types[2] != TypePing {
		t.Fatalf("decoded %v", types)
	}
}

// The payload and method that Next and ParseRequest return must not let an
// append run into the next frame.
func TestPayloadCapacityIsLimited(t *testing.T) {
	b := AppendRequest(nil, 1, 0, "m", []byte("x"))
	b = AppendPing(b, 1)
	f, n, err := new(Decoder).Next(b)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(f.Payload, 0xff)
	_, m, _, _ := ParseRequest(f.Payload)
	_ = append(m, 0xff)
	if _, _, err := new(Decoder).Next(b[n:]); err != nil {
		t.Fatalf("next frame corrupted: %v", err)
	}
}

func TestFlagsIgnored(t *testing.T) {
	b := AppendPing(nil, 1)
	b[5] = 0xff
	f, n, err := new(Decoder).Next(b)
	if err != nil || n != len(b) || f.Flags != 0xff {
		t.Fatalf("Next = %v, %d, %v", f.Header, n, err)
	}
}

func TestAppendRequestPanics(t *testing.T) {
	for _, method := range []string{"", strings.Repeat("x", MaxMethodLen+1)} {
		func() {
			defer func() {
				r := recover()
				if s, _ := r.(string); !strings.Contains(s, "ValidMethod") {
					t.Errorf("method of %d bytes: recovered %v, want a panic naming ValidMethod", len(method), r)
				}
			}()
			AppendRequest(nil, 1, 0, method, nil)
		}()
	}
}

func TestValidMethod(t *testing.T) {
	for _, m := range []string{"a", "echo", "svc.Method", "/pkg.Service/Call", strings.Repeat("x", MaxMethodLen), "!~"} {
		if err := ValidMethod(m); err != nil {
			t.Errorf("ValidMethod(%q) = %v", m, err)
		}
	}
	for _, m := range []string{"", strings.Repeat("x", MaxMethodLen+1), "has space", "tab\t", "nul\x00", "del\x7f", "é"} {
		err := ValidMethod(m)
		if !errors.Is(err, ErrInvalidMethod) {
			t.Errorf("ValidMethod(%q) = %v, want ErrInvalidMethod", m, err)
		}
	}
}

func TestMessageTruncation(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want int
	}{
		{strings.Repeat("a", MaxErrorMessageLen), MaxErrorMessageLen},
		{strings.Repeat("a", 5000), MaxErrorMessageLen},
		{strings.Repeat("a", MaxErrorMessageLen-1) + "é", MaxErrorMessageLen - 1}, // é straddles the limit
		{strings.Repeat("a", MaxErrorMessageLen-2) + "€", MaxErrorMessageLen - 2}, // 3-byte rune
		{strings.Repeat("a", MaxErrorMessageLen-2) + "é" + "b", MaxErrorMessageLen},
	} {
		_, msg, err := ParseError(AppendError(nil, 1, CodeInternal, tc.msg)[HeaderLen:])
		if err != nil || len(msg) != tc.want || !utf8.Valid(msg) || !strings.HasPrefix(tc.msg, string(msg)) {
			t.Errorf("ERROR message of %d bytes: got %d bytes (valid %v, err %v), want %d", len(tc.msg), len(msg), utf8.Valid(msg), err, tc.want)
		}
		_, _, msg, err = ParseGoAway(AppendGoAway(nil, 1, ReasonDrain, tc.msg)[HeaderLen:])
		if err != nil || len(msg) != tc.want || !strings.HasPrefix(tc.msg, string(msg)) {
			t.Errorf("GOAWAY message of %d bytes: got %d bytes (err %v), want %d", len(tc.msg), len(msg), err, tc.want)
		}
	}
}

// header builds a raw 16-byte header.
func header(length uint32, typ byte, flags byte, reserved uint16, id uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = append(b, typ, flags)
	b = binary.BigEndian.AppendUint16(b, reserved)
	return binary.BigEndian.AppendUint64(b, id)
}

func wantProtocolError(t *testing.T, what string, err error) {
	t.Helper()
	var pe *ProtocolError
	if !errors.Is(err, ErrProtocol) || !errors.As(err, &pe) || pe.Reason == "" || errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("%s: err = %v, want a *ProtocolError", what, err)
	}
}

// badHeaders are headers that ParseHeader rejects; each is followed by a
// payload of the declared length (capped) in the complete-frame tests.
var badHeaders = []struct {
	name string
	hdr  []byte
}{
	{"reserved-high", header(8, 4, 0, 0x0100, 0)},
	{"reserved-low", header(8, 4, 0, 0x0001, 0)},
	{"type-0", header(0, 0, 0, 0, 0)},
	{"type-7", header(0, 7, 0, 0, 1)},
	{"type-255", header(0, 255, 0, 0, 1)},
	{"request-id-0", header(6, 1, 0, 0, 0)},
	{"request-short", header(5, 1, 0, 0, 1)},
	{"request-empty", header(0, 1, 0, 0, 1)},
	{"response-id-0", header(2, 2, 0, 0, 0)},
	{"error-short", header(1, 3, 0, 0, 1)},
	{"ping-id", header(8, 4, 0, 0, 1)},
	{"ping-7", header(7, 4, 0, 0, 0)},
	{"ping-9", header(9, 4, 0, 0, 0)},
	{"ping-0", header(0, 4, 0, 0, 0)},
	{"pong-id", header(8, 5, 0, 0, 5)},
	{"pong-7", header(7, 5, 0, 0, 0)},
	{"pong-9", header(9, 5, 0, 0, 0)},
	{"goaway-id", header(10, 6, 0, 0, 3)},
	{"goaway-short", header(9, 6, 0, 0, 0)},
}

func TestParseHeaderErrors(t *testing.T) {
	if _, err := ParseHeader(make([]byte, HeaderLen-1)); err != io.ErrShortBuffer {
		t.Errorf("short header: err = %v, want io.ErrShortBuffer", err)
	}
	for _, tc := range badHeaders {
		h, err := ParseHeader(tc.hdr)
		wantProtocolError(t, tc.name, err)
		if h.Length != binary.BigEndian.Uint32(tc.hdr) || h.Type != Type(tc.hdr[4]) {
			t.Errorf("%s: header %v not decoded alongside the error", tc.name, h)
		}
	}
}

func TestNextErrors(t *testing.T) {
	var d Decoder
	for _, tc := range badHeaders {
		// With the header alone, and with the whole frame.
		full := append(append([]byte(nil), tc.hdr...), make([]byte, binary.BigEndian.Uint32(tc.hdr))...)
		for _, b := range [][]byte{tc.hdr, full} {
			f, n, err := d.Next(b)
			wantProtocolError(t, tc.name, err)
			if n != 0 || f.Payload != nil {
				t.Errorf("%s: n = %d, payload %d bytes; want 0, nil", tc.name, n, len(f.Payload))
			}
		}
	}
	// REQUEST payloads whose layout is wrong: only visible once complete.
	for name, b := range map[string][]byte{
		"empty-method":       append(header(6, 1, 0, 0, 1), 0, 0, 0, 0, 0, 'x'),
		"method-overrun":     append(header(8, 1, 0, 0, 1), 0, 0, 0, 0, 4, 'a', 'b', 'c'),
		"method-255-overrun": append(header(6, 1, 0, 0, 1), 0, 0, 0, 0, 255, 'a'),
	} {
		f, n, err := d.Next(b)
		wantProtocolError(t, name, err)
		if n != 0 || f.Payload != nil {
			t.Errorf("%s: n = %d, want 0", name, n)
		}
		if _, n, err := d.Next(b[:len(b)-1]); n != 0 || err != nil {
			t.Errorf("%s, incomplete: n = %d, err = %v; want 0, nil", name, n, err)
		}
	}
}

func TestNextFrameTooLarge(t *testing.T) {
	for _, tc := range []struct {
		max, length, wantMax uint32
	}{
		{0, 1 << 30, DefaultMaxFrameSize},
		{0, DefaultMaxFrameSize + 1, DefaultMaxFrameSize},
		{0, ^uint32(0), DefaultMaxFrameSize},
		{100, 101, 100},
		{1, 2, 1},
	} {
		d := Decoder{MaxFrameSize: tc.max}
		// Only the 16 header bytes are supplied.
		f, n, err := d.Next(header(tc.length, byte(TypeResponse), 0, 0, 1))
		var fe *FrameTooLargeError
		if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &fe) || errors.Is(err, ErrProtocol) {
			t.Fatalf("max %d, length %d: err = %v, want *FrameTooLargeError", tc.max, tc.length, err)
		}
		if fe.Length != tc.length || fe.Max != tc.wantMax || n != 0 || f.Length != tc.length {
			t.Errorf("got %+v, n %d, header %v", *fe, n, f.Header)
		}
		if msg := err.Error(); !strings.Contains(msg, itoa(tc.length)) || !strings.Contains(msg, itoa(tc.wantMax)) {
			t.Errorf("message %q does not name both %d and %d", msg, tc.length, tc.wantMax)
		}
	}
	// At the limit is fine.
	b := AppendResponse(nil, 1, make([]byte, 100))
	if _, n, err := (&Decoder{MaxFrameSize: 100}).Next(b); err != nil || n != len(b) {
		t.Errorf("payload at the limit: n %d, err %v", n, err)
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func TestNextIncomplete(t *testing.T) {
	var d Decoder
	for name, b := range validFrames() {
		for i := 0; i < len(b); i++ {
			f, n, err := d.Next(b[:i])
			if n != 0 || err != nil || f.Payload != nil {
				t.Fatalf("%s cut at %d: n %d, err %v, payload %v", name, i, n, err, f.Payload)
			}
			want := Header{}
			if i >= HeaderLen {
				want, _ = ParseHeader(b)
			}
			if f.Header != want {
				t.Fatalf("%s cut at %d: header %v, want %v", name, i, f.Header, want)
			}
		}
		// Extra bytes after a frame are left alone.
		if _, n, err := d.Next(append(b, 0xff, 0xff)); n != len(b) || err != nil {
			t.Fatalf("%s with trailing bytes: n %d, err %v", name, n, err)
		}
	}
}

func TestParserErrors(t *testing.T) {
	for name, err := range map[string]error{
		"request-nil":     func() error { _, _, _, err := ParseRequest(nil); return err }(),
		"request-5":       func() error { _, _, _, err := ParseRequest([]byte{0, 0, 0, 0, 1}); return err }(),
		"request-empty":   func() error { _, _, _, err := ParseRequest([]byte{0, 0, 0, 0, 0, 'x'}); return err }(),
		"request-overrun": func() error { _, _, _, err := ParseRequest([]byte{0, 0, 0, 0, 2, 'x'}); return err }(),
		"error-nil":       func() error { _, _, err := ParseError(nil); return err }(),
		"error-1":         func() error { _, _, err := ParseError([]byte{1}); return err }(),
		"ping-nil":        func() error { _, err := ParsePing(nil); return err }(),
		"ping-7":          func() error { _, err := ParsePing(make([]byte, 7)); return err }(),
		"ping-9":          func() error { _, err := ParsePing(make([]byte, 9)); return err }(),
		"goaway-nil":      func() error { _, _, _, err := ParseGoAway(nil); return err }(),
		"goaway-9":        func() error { _, _, _, err := ParseGoAway(make([]byte, 9)); return err }(),
	} {
		wantProtocolError(t, name, err)
	}
	// Minimal valid payloads.
	if to, m, body, err := ParseRequest([]byte{0, 0, 0, 9, 1, 'x'}); err != nil || to != 9 || string(m) != "x" || len(body) != 0 {
		t.Errorf("minimal REQUEST: %d %q %q %v", to, m, body, err)
	}
	if c, msg, err := ParseError([]byte{0, 42}); err != nil || c != 42 || len(msg) != 0 {
		t.Errorf("minimal ERROR: %v %q %v", c, msg, err)
	}
	if last, r, msg, err := ParseGoAway(make([]byte, 10)); err != nil || last != 0 || r != 0 || len(msg) != 0 {
		t.Errorf("minimal GOAWAY: %d %v %q %v", last, r, msg, err)
	}
}

func TestZeroAllocs(t *testing.T) {
	buf := make([]byte, 0, 4096)
	body := make([]byte, 64)
	for name, fn := range map[string]func(){
		"AppendRequest":  func() { buf = AppendRequest(buf[:0], 1, 100, "echo", body) },
		"AppendResponse": func() { buf = AppendResponse(buf[:0], 1, body) },
		"AppendError":    func() { buf = AppendError(buf[:0], 1, CodeApplication, "failed") },
		"AppendPing":     func() { buf = AppendPing(buf[:0], 1) },
		"AppendPong":     func() { buf = AppendPong(buf[:0], 1) },
		"AppendGoAway":   func() { buf = AppendGoAway(buf[:0], 1, ReasonDrain, "bye") },
		"AppendHeader":   func() { buf = AppendHeader(buf[:0], Header{Type: TypeResponse, ID: 1}) },
	} {
		if a := testing.AllocsPerRun(100, fn); a != 0 {
			t.Errorf("%s: %v allocs, want 0", name, a)
		}
	}

	var stream []byte
	for _, b := range validFrames() {
		stream = append(stream, b...)
	}
	var d Decoder
	incomplete := AppendPing(nil, 1)[:HeaderLen+1]
	decodeAll := func() {
		for b := stream; len(b) > 0; {
			f, n, err := d.Next(b)
			if err != nil || n == 0 {
				panic(err)
			}
			var perr error
			switch f.Type {
			case TypeRequest:
				_, _, _, perr = ParseRequest(f.Payload)
			case TypeError:
				_, _, perr = ParseError(f.Payload)
			case TypePing, TypePong:
				_, perr = ParsePing(f.Payload)
			case TypeGoAway:
				_, _, _, perr = ParseGoAway(f.Payload)
			}
			if perr != nil {
				panic(perr)
			}
			b = b[n:]
		}
		// An incomplete frame costs nothing either. (Not a prefix of stream:
		// map order puts any frame first, the empty RESPONSE included.)
		if _, n, err := d.Next(incomplete); n != 0 || err != nil {
			panic("incomplete")
		}
	}
	if a := testing.AllocsPerRun(100, decodeAll); a != 0 {
		t.Errorf("Decoder.Next + parsers: %v allocs, want 0", a)
	}
}
