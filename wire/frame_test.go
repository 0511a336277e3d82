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
)

// Metadata used across the tests.
var (
	testMD = Metadata{{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, {"user", "ann"}, {"empty", ""}}
	// maxMD is the largest block allowed: 64 entries, 8192 bytes of entries.
	maxMD = func() Metadata {
		var m Metadata
		for i := range MaxMetadataEntries {
			m = append(m, Field{Key: "k" + strconv.Itoa(100 + i)[1:], Value: strings.Repeat(string(rune('a'+i%26)), 122)})
		}
		return m
	}()
)

// validFrames holds one or more encoded frames of every type, with and
// without metadata and MORE.
func validFrames() map[string][]byte {
	return map[string][]byte{
		"request":                  AppendRequest(nil, 1, false, 1000, "echo", nil, []byte("hi")),
		"request-more":             AppendRequest(nil, 2, true, 0, "upload", nil, []byte("first chunk")),
		"request-metadata":         AppendRequest(nil, 3, false, 5, "echo", testMD, []byte("hi")),
		"request-metadata-more":    AppendRequest(nil, 4, true, 5, "echo", Metadata{{"k", "v"}}, nil),
		"request-nobody":           AppendRequest(nil, 1<<63, false, 0, "m", nil, nil),
		"request-maxmethod":        AppendRequest(nil, 9, false, 5, strings.Repeat("x", MaxMethodLen), nil, []byte{0}),
		"request-maxmetadata":      AppendRequest(nil, 10, false, 5, strings.Repeat("x", MaxMethodLen), maxMD, nil),
		"response":                 AppendResponse(nil, 1, false, nil, []byte("hi")),
		"response-empty":           AppendResponse(nil, 42, false, nil, nil),
		"response-more":            AppendResponse(nil, 2, true, nil, []byte("part")),
		"response-metadata":        AppendResponse(nil, 3, false, testMD, []byte("hi")),
		"response-metadata-nobody": AppendResponse(nil, 3, true, Metadata{{"k", "v"}}, nil),
		"data":                     AppendData(nil, 2, false, []byte("last chunk")),
		"data-more":                AppendData(nil, 2, true, []byte("middle chunk")),
		"data-empty":               AppendData(nil, 7, false, nil),
		"error":                    AppendError(nil, 3, CodeApplication, nil, "boom"),
		"error-metadata":           AppendError(nil, 3, CodeApplication, testMD, "boom"),
		"error-conn":               AppendError(nil, 0, CodeBusy, nil, ""),
		"error-unknown-code":       AppendError(nil, 0, Code(999), nil, "future"),
		"ping":                     AppendPing(nil, 0x0102030405060708),
		"pong":                     AppendPong(nil, ^uint64(0)),
		"goaway":                   AppendGoAway(nil, 17, ReasonDrain, "bye"),
		"goaway-empty":             AppendGoAway(nil, 0, ReasonShutdown, ""),
		"hello-client":             AppendHello(nil, Hello{Version: 2, MaxFrameSize: 65536, MaxMessageSize: 4194304, HeartbeatInterval: 5000}),
		"hello-server":             AppendHello(nil, Hello{Version: 2, MaxFrameSize: MaxMaxFrameSize, MaxMessageSize: 1<<32 - 1, MaxInFlight: 1, HeartbeatInterval: 1}),
		"hello-empty":              frame(TypeHello, 0, 0, 0, 2, 0, 0),
		"cancel":                   AppendCancel(nil, 5),
		"extension":                frame(200, 0x5a, 77, 1, 2, 3),
	}
}

// frame builds a frame by hand: a header with the payload's length, and the
// payload.
func frame(t Type, flags uint8, id uint64, payload ...byte) []byte {
	b := AppendHeader(nil, Header{Length: uint32(len(payload)), Type: t, Flags: flags, ID: id})
	return append(b, payload...)
}

// header builds a raw 16-byte header.
func header(length uint32, typ byte, flags byte, reserved uint16, id uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = append(b, typ, flags)
	b = binary.BigEndian.AppendUint16(b, reserved)
	return binary.BigEndian.AppendUint64(b, id)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func wantProtocolError(t *testing.T, what string, err error) {
	t.Helper()
	var pe *ProtocolError
	if !errors.Is(err, ErrProtocol) || !errors.As(err, &pe) || pe.Reason == "" || errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("%s: err = %v, want a *ProtocolError", what, err)
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
		{TypeHello.String(), "HELLO"},
		{TypeCancel.String(), "CANCEL"},
		{TypeData.String(), "DATA"},
		{Type(0).String(), "UNKNOWN(0)"},
		{Type(10).String(), "UNKNOWN(10)"},
		{Type(127).String(), "UNKNOWN(127)"},
		{Type(128).String(), "EXTENSION(128)"},
		{Type(255).String(), "EXTENSION(255)"},
		{CodeBusy.String(), "BUSY"},
		{CodeFrameTooLarge.String(), "FRAME_TOO_LARGE"},
		{CodeProtocol.String(), "PROTOCOL"},
		{CodeUnknownMethod.String(), "UNKNOWN_METHOD"},
		{CodeApplication.String(), "APPLICATION"},
		{CodeTimeout.String(), "TIMEOUT"},
		{CodeOverloaded.String(), "OVERLOADED"},
		{CodeShuttingDown.String(), "SHUTTING_DOWN"},
		{CodeInternal.String(), "INTERNAL"},
		{CodeUnsupportedVersion.String(), "UNSUPPORTED_VERSION"},
		{CodeControlFlood.String(), "CONTROL_FLOOD"},
		{Code(0).String(), "CODE(0)"},
		{Code(12).String(), "CODE(12)"},
		{Code(4242).String(), "CODE(4242)"},
		{ReasonShutdown.String(), "SHUTDOWN"},
		{ReasonMaxAge.String(), "MAX_AGE"},
		{ReasonDrain.String(), "DRAIN"},
		{ReasonProtocolError.String(), "PROTOCOL_ERROR"},
		{Reason(0).String(), "REASON(0)"},
		{Reason(5).String(), "REASON(5)"},
		{Header{Type: TypeRequest, ID: 7, Length: 42}.String(), "REQUEST id=7 len=42"},
		{Header{Type: TypeData, ID: 7, Length: 3, Flags: FlagMore}.String(), "DATA id=7 len=3 flags=0x1"},
		{Header{Type: TypePing, Length: 8, Flags: 0x81}.String(), "PING id=0 len=8 flags=0x81"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestTypeClasses(t *testing.T) {
	control := map[Type]bool{TypePing: true, TypePong: true, TypeGoAway: true, TypeHello: true, TypeCancel: true}
	for i := range 256 {
		typ := Type(i)
		if got, want := typ.Extension(), i >= 128; got != want {
			t.Errorf("%v.Extension() = %v, want %v", typ, got, want)
		}
		if got := typ.Control(); got != control[typ] {
			t.Errorf("%v.Control() = %v, want %v", typ, got, control[typ])
		}
	}
}

func TestRetryable(t *testing.T) {
	want := map[Code]bool{CodeBusy: true, CodeOverloaded: true, CodeShuttingDown: true, CodeUnsupportedVersion: true}
	for c := Code(0); c < 20; c++ {
		if got := c.Retryable(); got != want[c] {
			t.Errorf("%v.Retryable() = %v, want %v", c, got, want[c])
		}
	}
}

// More and HasMetadata read the flag bits only where they are defined.
func TestHeaderFlags(t *testing.T) {
	for _, tc := range []struct {
		h           Header
		more, hasMD bool
	}{
		{Header{Type: TypeRequest, ID: 1, Flags: 0xff}, true, true},
		{Header{Type: TypeRequest, ID: 1, Flags: 0xfc}, false, false},
		{Header{Type: TypeResponse, ID: 1, Flags: FlagMore}, true, false},
		{Header{Type: TypeResponse, ID: 1, Flags: FlagMetadata}, false, true},
		{Header{Type: TypeData, ID: 1, Flags: 0xff}, true, false},
		{Header{Type: TypeError, ID: 1, Flags: FlagMetadata}, false, true},
		{Header{Type: TypeError, ID: 0, Flags: FlagMetadata}, false, false},
		{Header{Type: TypeCancel, ID: 1, Flags: 0xff}, false, false},
		{Header{Type: TypePing, Flags: 0xff}, false, false},
		{Header{Type: TypeHello, Flags: 0xff}, false, false},
		{Header{Type: 200, ID: 1, Flags: 0xff}, false, false},
	} {
		if tc.h.More() != tc.more || tc.h.HasMetadata() != tc.hasMD {
			t.Errorf("%v: More %v, HasMetadata %v; want %v, %v", tc.h, tc.h.More(), tc.h.HasMetadata(), tc.more, tc.hasMD)
		}
	}
}

// Reserved flag bits are ignored: the frame decodes and parses as without
// them.
func TestReservedFlagsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     []byte
		flags uint8 // set on top of the encoder's
	}{
		{"ping", AppendPing(nil, 1), 0xff},
		{"pong", AppendPong(nil, 1), 0xff},
		{"goaway", AppendGoAway(nil, 1, ReasonDrain, "x"), 0xff},
		{"hello", AppendHello(nil, DefaultHello()), 0xff},
		{"cancel", AppendCancel(nil, 1), 0xff},
		{"data", AppendData(nil, 1, true, []byte("abc")), 0xfe},
		{"request", AppendRequest(nil, 1, true, 0, "m", nil, []byte("abc")), 0xfc},
		{"response", AppendResponse(nil, 1, false, testMD, []byte("abc")), 0xfc},
		{"error", AppendError(nil, 1, CodeApplication, testMD, "abc"), 0xfc},
		{"error-conn", AppendError(nil, 0, CodeBusy, nil, "\x00\x05abc"), 0xfe}, // METADATA ignored with id 0
	} {
		plain := append([]byte(nil), tc.b...)
		flagged := append([]byte(nil), tc.b...)
		flagged[5] |= tc.flags
		fp, _, err := new(Decoder).Next(plain)
		if err != nil {
			t.Fatal(err)
		}
		ff, n, err := new(Decoder).Next(flagged)
		if err != nil || n != len(flagged) || ff.Flags != flagged[5] {
			t.Errorf("%s with flags %#x: %v, %d, %v", tc.name, flagged[5], ff.Header, n, err)
			continue
		}
		if ff.More() != fp.More() || ff.HasMetadata() != fp.HasMetadata() {
			t.Errorf("%s: More %v HasMetadata %v, want %v %v", tc.name, ff.More(), ff.HasMetadata(), fp.More(), fp.HasMetadata())
		}
		switch ff.Type {
		case TypeRequest:
			_, _, md, body, err := ParseRequest(ff.Flags, ff.Payload)
			if err != nil || string(body) != "abc" || md.Len() != 0 {
				t.Errorf("%s: %v %q %v", tc.name, md, body, err)
			}
		case TypeResponse:
			md, body, err := ParseResponse(ff.Flags, ff.Payload)
			if err != nil || string(body) != "abc" || md.Len() != len(testMD) {
				t.Errorf("%s: %v %q %v", tc.name, md, body, err)
			}
		case TypeError:
			_, md, msg, err := ParseError(ff.ID, ff.Flags, ff.Payload)
			want := "abc"
			if ff.ID == 0 {
				want = "\x00\x05abc"
			}
			if err != nil || string(msg) != want || (md.Len() != 0) != (ff.ID != 0) {
				t.Errorf("%s: %v %q %v", tc.name, md, msg, err)
			}
		}
	}
}

// Extension types pass Next with only their reserved bytes and length
// checked, so that a receiver can skip them.
func TestExtensionTypes(t *testing.T) {
	for _, typ := range []Type{128, 200, 255} {
		for _, id := range []uint64{0, 1, ^uint64(0)} {
			for _, payload := range [][]byte{nil, {1}, make([]byte, 1000)} {
				b := cat(frame(typ, 0xff, id, payload...), AppendPing(nil, 3))
				f, n, err := new(Decoder).Next(b)
				if err != nil || n != HeaderLen+len(payload) || f.Type != typ || f.ID != id || !bytes.Equal(f.Payload, payload) {
					t.Fatalf("%v id %d, %d bytes: %v, %d, %v", typ, id, len(payload), f.Header, n, err)
				}
				if f, _, err := new(Decoder).Next(b[n:]); err != nil || f.Type != TypePing {
					t.Fatalf("frame after the skipped one: %v, %v", f.Header, err)
				}
			}
		}
		if _, _, err := (&Decoder{MaxFrameSize: 100}).Next(header(101, byte(typ), 0, 0, 0)); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("%v above the limit: %v", typ, err)
		}
		_, _, err := new(Decoder).Next(header(0, byte(typ), 0, 1, 0))
		wantProtocolError(t, typ.String()+" with reserved bytes", err)
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

// badHeaders are headers that ParseHeader rejects; each is followed by a
// payload of the declared length in the complete-frame tests.
var badHeaders = []struct {
	name string
	hdr  []byte
}{
	{"reserved-high", header(8, 4, 0, 0x0100, 0)},
	{"reserved-low", header(8, 4, 0, 0x0001, 0)},
	{"reserved-extension", header(0, 200, 0, 0x8000, 0)},
	{"type-0", header(0, 0, 0, 0, 0)},
	{"type-10", header(0, 10, 0, 0, 1)},
	{"type-127", header(0, 127, 0, 0, 0)},
	{"request-id-0", header(6, 1, 0, 0, 0)},
	{"request-short", header(5, 1, 0, 0, 1)},
	{"request-empty", header(0, 1, 0, 0, 1)},
	{"request-metadata-short", header(7, 1, FlagMetadata, 0, 1)},
	{"response-id-0", header(2, 2, 0, 0, 0)},
	{"response-metadata-short", header(1, 2, FlagMetadata, 0, 1)},
	{"data-id-0", header(2, 9, 0, 0, 0)},
	{"cancel-id-0", header(0, 8, 0, 0, 0)},
	{"error-short", header(1, 3, 0, 0, 1)},
	{"error-empty-conn", header(0, 3, 0, 0, 0)},
	{"error-more", header(2, 3, FlagMore, 0, 1)},
	{"error-more-conn", header(2, 3, 0xff, 0, 0)},
	{"error-metadata-short", header(3, 3, FlagMetadata, 0, 1)},
	{"ping-id", header(8, 4, 0, 0, 1)},
	{"ping-7", header(7, 4, 0, 0, 0)},
	{"ping-9", header(9, 4, 0, 0, 0)},
	{"ping-0", header(0, 4, 0, 0, 0)},
	{"pong-id", header(8, 5, 0, 0, 5)},
	{"pong-7", header(7, 5, 0, 0, 0)},
	{"pong-9", header(9, 5, 0, 0, 0)},
	{"goaway-id", header(10, 6, 0, 0, 3)},
	{"goaway-short", header(9, 6, 0, 0, 0)},
	{"hello-id", header(4, 7, 0, 0, 1)},
	{"hello-3", header(3, 7, 0, 0, 0)},
	{"hello-5", header(5, 7, 0, 0, 0)},
	{"hello-13", header(13, 7, 0, 0, 0)},
	{"hello-65-settings", header(4+65*10, 7, 0, 0, 0)},
	{"hello-huge", header(1<<30, 7, 0, 0, 0)},
}

func TestParseHeaderErrors(t *testing.T) {
	if _, err := ParseHeader(make([]byte, HeaderLen-1)); err != io.ErrShortBuffer {
		t.Errorf("short header: err = %v, want io.ErrShortBuffer", err)
	}
	for _, tc := range badHeaders {
		h, err := ParseHeader(tc.hdr)
		wantProtocolError(t, tc.name, err)
		if h.Length != binary.BigEndian.Uint32(tc.hdr) || h.Type != Type(tc.hdr[4]) || h.Flags != tc.hdr[5] || h.ID != binary.BigEndian.Uint64(tc.hdr[8:]) {
			t.Errorf("%s: header %v not decoded alongside the error", tc.name, h)
		}
	}
	// Edge cases that are valid.
	for name, hdr := range map[string][]byte{
		"error-conn":          header(2, 3, 0, 0, 0),
		"error-conn-metadata": header(2, 3, FlagMetadata, 0, 0),
		"error-metadata":      header(4, 3, FlagMetadata, 0, 1),
		"request-metadata":    header(8, 1, FlagMetadata, 0, 1),
		"response-metadata":   header(2, 2, FlagMetadata, 0, 1),
		"response-empty":      header(0, 2, 0, 0, 1),
		"data-empty":          header(0, 9, FlagMetadata, 0, 1), // METADATA is reserved on DATA
		"cancel-payload":      header(5, 8, 0, 0, 1),            // a later version may define it
		"hello-64-settings":   header(4+64*10, 7, 0, 0, 0),
		"extension-any-id":    header(3, 128, 0xff, 0, 0),
		"goaway-long":         header(10000, 6, 0, 0, 0),
	} {
		if _, err := ParseHeader(hdr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestNextErrors(t *testing.T) {
	d := Decoder{MaxFrameSize: MaxMaxFrameSize}
	for _, tc := range badHeaders {
		// With the header alone, and with the whole frame.
		b := tc.hdr
		if l := binary.BigEndian.Uint32(tc.hdr); l < 1<<16 {
			b = append(append([]byte(nil), tc.hdr...), make([]byte, l)...)
		}
		for _, b := range [][]byte{tc.hdr, b} {
			f, n, err := d.Next(b)
			wantProtocolError(t, tc.name, err)
			if n != 0 || f.Payload != nil || f.Type != Type(tc.hdr[4]) {
				t.Errorf("%s: n = %d, payload %d bytes, header %v; want 0, nil", tc.name, n, len(f.Payload), f.Header)
			}
		}
	}
	// Payloads whose layout is wrong: only visible once complete.
	for name, b := range badPayloads() {
		f, n, err := d.Next(b)
		wantProtocolError(t, name, err)
		if n != 0 || f.Payload != nil {
			t.Errorf("%s: n = %d, want 0", name, n)
		}
		h, herr := ParseHeader(b)
		if _, n, err := d.Next(b[:len(b)-1]); herr == nil && (n != 0 || err != nil) {
			t.Errorf("%s, incomplete: n = %d, err = %v; want 0, nil", name, n, err)
		}
		wantProtocolError(t, name+" (parser)", parse(h, b[HeaderLen:]))
	}
}

// parse runs the payload parser of h's type.
func parse(h Header, payload []byte) error {
	var err error
	switch h.Type {
	case TypeRequest:
		_, _, _, _, err = ParseRequest(h.Flags, payload)
	case TypeResponse:
		_, _, err = ParseResponse(h.Flags, payload)
	case TypeError:
		_, _, _, err = ParseError(h.ID, h.Flags, payload)
	case TypePing, TypePong:
		_, err = ParsePing(payload)
	case TypeGoAway:
		_, _, _, err = ParseGoAway(payload)
	case TypeHello:
		_, err = ParseHello(payload)
	}
	return err
}

func TestNextFrameTooLarge(t *testing.T) {
	for _, tc := range []struct {
		max, length, wantMax uint32
	}{
		{0, 1 << 30, DefaultMaxFrameSize},
		{0, DefaultMaxFrameSize + 1, DefaultMaxFrameSize},
		{0, ^uint32(0), DefaultMaxFrameSize},
		{100, 101, 100},
		{16, 17, 16},
	} {
		d := Decoder{MaxFrameSize: tc.max}
		for _, typ := range []Type{TypeResponse, TypeData, TypeError, TypeGoAway, 128} {
			// Only the 16 header bytes are supplied.
			id := uint64(1)
			if typ == TypeGoAway {
				id = 0
			}
			f, n, err := d.Next(header(tc.length, byte(typ), 0, 0, id))
			var fe *FrameTooLargeError
			if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &fe) || errors.Is(err, ErrProtocol) {
				t.Fatalf("%v, max %d, length %d: err = %v, want *FrameTooLargeError", typ, tc.max, tc.length, err)
			}
			if fe.Length != tc.length || fe.Max != tc.wantMax || n != 0 || f.Length != tc.length {
				t.Errorf("got %+v, n %d, header %v", *fe, n, f.Header)
			}
			if msg := err.Error(); !strings.Contains(msg, itoa(tc.length)) || !strings.Contains(msg, itoa(tc.wantMax)) {
				t.Errorf("message %q does not name both %d and %d", msg, tc.length, tc.wantMax)
			}
		}
	}
	// At the limit is fine.
	b := AppendData(nil, 1, false, make([]byte, 100))
	if _, n, err := (&Decoder{MaxFrameSize: 100}).Next(b); err != nil || n != len(b) {
		t.Errorf("payload at the limit: n %d, err %v", n, err)
	}
	// A header's protocol error is reported before its size.
	_, _, err := (&Decoder{MaxFrameSize: 100}).Next(header(1000, 1, 0, 0, 0))
	wantProtocolError(t, "REQUEST id 0 above the limit", err)
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
			wantLen := HeaderLen
			if i >= HeaderLen {
				want, _ = ParseHeader(b)
				wantLen = len(b)
			}
			if f.Header != want {
				t.Fatalf("%s cut at %d: header %v, want %v", name, i, f.Header, want)
			}
			if got := FrameLen(b[:i]); got != wantLen {
				t.Fatalf("%s cut at %d: FrameLen %d, want %d", name, i, got, wantLen)
			}
		}
		// Extra bytes after a frame are left alone.
		if _, n, err := d.Next(append(b, 0xff, 0xff)); n != len(b) || err != nil || FrameLen(b) != len(b) {
			t.Fatalf("%s with trailing bytes: n %d, err %v", name, n, err)
		}
	}
	if got := FrameLen(header(^uint32(0), 0, 0, 0xffff, 0)); got != HeaderLen+1<<32-1 {
		t.Errorf("FrameLen of the largest length = %d", got)
	}
}
