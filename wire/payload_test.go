package wire

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestWorkedExample pins the bytes of the examples in docs/protocol.md §14.
func TestWorkedExample(t *testing.T) {
	clientHello := Hello{Version: 2, MaxFrameSize: 65536, MaxMessageSize: 4194304, MaxInFlight: 0, HeartbeatInterval: 5000}
	serverHello := clientHello
	serverHello.MaxInFlight = 128
	helloHex := func(inFlight string) string {
		return "0000002c 07 00 0000 0000000000000000" + "0002 0000" +
			"0001 0000000000010000" + "0002 0000000000400000" + "0003 " + inFlight + "0004 0000000000001388"
	}
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"client HELLO", AppendHello(nil, clientHello), helloHex("0000000000000000")},
		{"server HELLO", AppendHello(nil, serverHello), helloHex("0000000000000080")},
		{"REQUEST", AppendRequest(nil, 1, false, 1000, "echo", nil, []byte("hi")), "0000000b010000000000000000000001000003e8046563686f6869"},
		{"RESPONSE", AppendResponse(nil, 1, false, nil, []byte("hi")), "000000020200000000000000000000016869"},
		{"REQUEST with metadata", AppendRequest(nil, 1, false, 1000, "echo", Metadata{{"k", "v"}}, []byte("hi")), "00000012010200000000000000000001000003e8046563686f0005016b0001766869"},
		{"PING", AppendPing(nil, 7), "00000008040000000000000000000000" + "0000000000000007"},
		{"CANCEL", AppendCancel(nil, 5), "00000000080000000000000000000005"},
		{"BUSY", AppendError(nil, 0, CodeBusy, nil, ""), "00000002030000000000000000000000" + "0001"},
	} {
		want := mustHex(tc.want)
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tc.name, tc.got, want)
			continue
		}
		if _, n, err := new(Decoder).Next(tc.got); err != nil || n != len(tc.got) {
			t.Errorf("%s: Next = %d, %v", tc.name, n, err)
		}
	}
	if n := len(AppendHello(nil, clientHello)); n != 60 {
		t.Errorf("HELLO is %d bytes, want 60", n)
	}
	for _, h := range []Hello{clientHello, serverHello} {
		if got, err := ParseHello(AppendHello(nil, h)[HeaderLen:]); err != nil || got != h {
			t.Errorf("ParseHello = %+v, %v; want %+v", got, err, h)
		}
	}
	md, _, _ := ParseResponse(FlagMetadata, mustHex("0005016b000176"))
	if v, ok := md.Get("k"); !ok || string(v) != "v" || md.Len() != 1 {
		t.Errorf("metadata block of the example: %q %v, %d entries", v, ok, md.Len())
	}

	// A 100 000-byte body to a server whose MAX_FRAME_SIZE is 65536: a
	// REQUEST flagged MORE with 65527 body bytes, then a DATA with 34473.
	body := largeBody(100000)
	const peerMax = 65536
	first := peerMax - RequestOverhead("echo", nil)
	stream := AppendRequest(nil, 1, true, 1000, "echo", nil, body[:first])
	stream = AppendData(stream, 1, false, body[first:])
	d := Decoder{MaxFrameSize: peerMax}
	f, n, err := d.Next(stream)
	if err != nil || f.Type != TypeRequest || f.Flags != FlagMore || f.Length != peerMax || !f.More() {
		t.Fatalf("split REQUEST: %v, %v", f.Header, err)
	}
	_, _, _, chunk, _ := ParseRequest(f.Flags, f.Payload)
	got := append([]byte(nil), chunk...)
	if len(chunk) != 65527 {
		t.Errorf("REQUEST chunk of %d bytes, want 65527", len(chunk))
	}
	f, m, err := d.Next(stream[n:])
	if err != nil || n+m != len(stream) || f.Type != TypeData || f.More() || f.Length != 34473 || f.ID != 1 {
		t.Fatalf("split DATA: %v, %v", f.Header, err)
	}
	if got = append(got, f.Payload...); !bytes.Equal(got, body) {
		t.Error("reassembled body differs")
	}
}

// roundTrip decodes b, which must hold exactly one valid frame of type typ,
// flags and id, and returns it.
func roundTrip(t *testing.T, b []byte, typ Type, flags uint8, id uint64) Frame {
	t.Helper()
	d := Decoder{MaxFrameSize: MaxMaxFrameSize}
	f, n, err := d.Next(b)
	if err != nil || n != len(b) {
		t.Fatalf("Next = n %d, err %v; want n %d", n, err, len(b))
	}
	if f.Type != typ || f.ID != id || f.Flags != flags || int(f.Length) != len(b)-HeaderLen || !bytes.Equal(f.Payload, b[HeaderLen:]) {
		t.Fatalf("Next = %v, want %v id=%d len=%d flags=%#x", f.Header, typ, id, len(b)-HeaderLen, flags)
	}
	return f
}

func wantFlags(more bool, md Metadata) uint8 {
	f := moreFlag(more)
	if len(md) > 0 {
		f |= FlagMetadata
	}
	return f
}

func TestRoundTrip(t *testing.T) {
	mds := []Metadata{nil, {}, {{"k", "v"}}, testMD, maxMD}
	bodies := [][]byte{nil, []byte("body"), largeBody(70000)}
	t.Run("request", func(t *testing.T) {
		for _, method := range []string{"m", "echo", strings.Repeat("x", MaxMethodLen)} {
			for _, md := range mds {
				for _, more := range []bool{false, true} {
					for _, body := range bodies {
						b := AppendRequest(nil, 1<<40, more, 123456, method, md, body)
						if len(b) != HeaderLen+RequestOverhead(method, md)+len(body) {
							t.Fatalf("REQUEST of %d bytes, overhead %d", len(b), RequestOverhead(method, md))
						}
						f := roundTrip(t, b, TypeRequest, wantFlags(more, md), 1<<40)
						to, m, gotMD, bd, err := ParseRequest(f.Flags, f.Payload)
						if err != nil || to != 123456 || string(m) != method || !bytes.Equal(bd, body) || !slices.Equal(gotMD.Metadata(), md) || f.More() != more {
							t.Fatalf("ParseRequest = %d %q %v %d bytes %v", to, m, gotMD.Metadata(), len(bd), err)
						}
					}
				}
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		for _, md := range mds {
			for _, more := range []bool{false, true} {
				for _, body := range bodies {
					b := AppendResponse(nil, 5, more, md, body)
					if len(b) != HeaderLen+ResponseOverhead(md)+len(body) {
						t.Fatalf("RESPONSE of %d bytes, overhead %d", len(b), ResponseOverhead(md))
					}
					f := roundTrip(t, b, TypeResponse, wantFlags(more, md), 5)
					gotMD, bd, err := ParseResponse(f.Flags, f.Payload)
					if err != nil || !bytes.Equal(bd, body) || !slices.Equal(gotMD.Metadata(), md) {
						t.Fatalf("ParseResponse = %v %d bytes %v", gotMD.Metadata(), len(bd), err)
					}
				}
			}
		}
	})
	t.Run("data", func(t *testing.T) {
		for _, more := range []bool{false, true} {
			for _, body := range bodies {
				f := roundTrip(t, AppendData(nil, 9, more, body), TypeData, moreFlag(more), 9)
				if !bytes.Equal(f.Payload, body) || f.More() != more {
					t.Fatal("payload differs")
				}
			}
		}
	})
	t.Run("error", func(t *testing.T) {
		for _, id := range []uint64{0, 1, ^uint64(0)} {
			for _, md := range mds {
				b := AppendError(nil, id, CodeTimeout, md, "deadline passed")
				flags := wantFlags(false, md)
				if id == 0 {
					flags = 0 // no metadata on a connection-level ERROR
				}
				f := roundTrip(t, b, TypeError, flags, id)
				c, gotMD, msg, err := ParseError(f.ID, f.Flags, f.Payload)
				wantMD := md
				if id == 0 {
					wantMD = nil
				}
				if err != nil || c != CodeTimeout || string(msg) != "deadline passed" || !slices.Equal(gotMD.Metadata(), wantMD) {
					t.Fatalf("ParseError = %v %v %q %v", c, gotMD.Metadata(), msg, err)
				}
			}
		}
	})
	t.Run("ping-pong", func(t *testing.T) {
		for _, v := range []uint64{0, 1, 0xdeadbeefcafebabe} {
			for typ, b := range map[Type][]byte{TypePing: AppendPing(nil, v), TypePong: AppendPong(nil, v)} {
				f := roundTrip(t, b, typ, 0, 0)
				if got, err := ParsePing(f.Payload); err != nil || got != v {
					t.Fatalf("ParsePing = %x %v, want %x", got, err, v)
				}
			}
		}
	})
	t.Run("goaway", func(t *testing.T) {
		f := roundTrip(t, AppendGoAway(nil, 99, ReasonMaxAge, "max age"), TypeGoAway, 0, 0)
		last, r, msg, err := ParseGoAway(f.Payload)
		if err != nil || last != 99 || r != ReasonMaxAge || string(msg) != "max age" {
			t.Fatalf("ParseGoAway = %d %v %q %v", last, r, msg, err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		if f := roundTrip(t, AppendCancel(nil, 1<<50), TypeCancel, 0, 1<<50); len(f.Payload) != 0 {
			t.Fatal("CANCEL with a payload")
		}
	})
	t.Run("hello", func(t *testing.T) {
		for _, h := range []Hello{
			DefaultHello(),
			{Version: 2, MaxFrameSize: MinMaxFrameSize},
			{Version: 0xffff, MaxFrameSize: MaxMaxFrameSize, MaxMessageSize: 1<<32 - 1, MaxInFlight: 1<<32 - 1, HeartbeatInterval: ^uint64(0)},
		} {
			f := roundTrip(t, AppendHello(nil, h), TypeHello, 0, 0)
			if got, err := ParseHello(f.Payload); err != nil || got != h {
				t.Fatalf("ParseHello = %+v, %v; want %+v", got, err, h)
			}
		}
	})
}

func TestAppendKeepsPrefixAndStreams(t *testing.T) {
	prefix := []byte("prefix")
	b := append([]byte(nil), prefix...)
	b = AppendHello(b, DefaultHello())
	b = AppendRequest(b, 1, true, 0, "a", testMD, []byte("x"))
	b = AppendData(b, 1, false, []byte("y"))
	b = AppendResponse(b, 1, false, nil, []byte("z"))
	b = AppendCancel(b, 2)
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
	if want := []Type{TypeHello, TypeRequest, TypeData, TypeResponse, TypeCancel, TypePing}; !slices.Equal(types, want) {
		t.Fatalf("decoded %v, want %v", types, want)
	}
}

// The slices that Next and the parsers return must not let an append run
// into the bytes that follow them.
func TestSliceCapacityIsLimited(t *testing.T) {
	b := AppendRequest(nil, 1, false, 0, "m", testMD, []byte("x"))
	b = AppendPing(b, 1)
	f, n, err := new(Decoder).Next(b)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(f.Payload, 0xff)
	_, m, md, _, _ := ParseRequest(f.Flags, f.Payload)
	_ = append(m, 0xff)
	for k, v := range md.All() {
		_ = append(k, 0xff)
		_ = append(v, 0xff)
	}
	v, _ := md.Get("user")
	_ = append(v, 0xff)
	if err := checkEntries(md); err != nil {
		t.Fatalf("metadata corrupted: %v", err)
	}
	if _, _, err := new(Decoder).Next(b[n:]); err != nil {
		t.Fatalf("next frame corrupted: %v", err)
	}
}

func TestAppendPanics(t *testing.T) {
	mustPanic := func(name, want string, fn func()) {
		t.Helper()
		defer func() {
			t.Helper()
			r := recover()
			if s, _ := r.(string); !strings.Contains(s, want) {
				t.Errorf("%s: recovered %v, want a panic naming %s", name, r, want)
			}
		}()
		fn()
	}
	for _, method := range []string{"", strings.Repeat("x", MaxMethodLen+1)} {
		mustPanic("method of "+strconv.Itoa(len(method))+" bytes", "ValidMethod", func() { AppendRequest(nil, 1, false, 0, method, nil, nil) })
	}
	for name, md := range badMetadata() {
		if name == "reserved-prefix" {
			continue // refused by Validate, but sendable
		}
		mustPanic("request "+name, "Metadata.Validate", func() { AppendRequest(nil, 1, false, 0, "m", md, nil) })
		mustPanic("response "+name, "Metadata.Validate", func() { AppendResponse(nil, 1, false, md, nil) })
		mustPanic("error "+name, "Metadata.Validate", func() { AppendError(nil, 1, CodeApplication, md, "") })
		// Ignored on a connection-level ERROR.
		if b := AppendError(nil, 0, CodeInternal, md, "x"); len(b) != HeaderLen+errorFixedLen+1 {
			t.Errorf("connection-level ERROR with %s metadata: %x", name, b)
		}
	}
	// Reserved keys can be sent (by a later version of the protocol).
	b := AppendResponse(nil, 1, false, Metadata{{"tcppro-x", "1"}}, nil)
	if _, n, err := new(Decoder).Next(b); err != nil || n != len(b) {
		t.Errorf("reserved key: %v", err)
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
		for _, md := range []Metadata{nil, testMD} {
			b := AppendError(nil, 1, CodeInternal, md, tc.msg)
			_, _, msg, err := ParseError(1, b[5], b[HeaderLen:])
			if err != nil || len(msg) != tc.want || !utf8.Valid(msg) || !strings.HasPrefix(tc.msg, string(msg)) {
				t.Errorf("ERROR message of %d bytes: got %d bytes (valid %v, err %v), want %d", len(tc.msg), len(msg), utf8.Valid(msg), err, tc.want)
			}
		}
		_, _, msg, err := ParseGoAway(AppendGoAway(nil, 1, ReasonDrain, tc.msg)[HeaderLen:])
		if err != nil || len(msg) != tc.want || !strings.HasPrefix(tc.msg, string(msg)) {
			t.Errorf("GOAWAY message of %d bytes: got %d bytes (err %v), want %d", len(tc.msg), len(msg), err, tc.want)
		}
	}
	// Receivers accept longer messages.
	long := cat(header(2000, byte(TypeError), 0, 0, 1), u16(5), bytes.Repeat([]byte{0xff}, 1998))
	if f, _, err := new(Decoder).Next(long); err != nil || f.Length != 2000 {
		t.Errorf("ERROR with a 1998-byte invalid UTF-8 message: %v", err)
	}
}

// badPayloads are frames whose header is valid and whose payload is not.
func badPayloads() map[string][]byte {
	req := func(md ...byte) []byte {
		return frame(TypeRequest, FlagMetadata, 1, cat([]byte{0, 0, 0, 0, 1, 'm'}, md, []byte("body"))...)
	}
	resp := func(md ...byte) []byte { return frame(TypeResponse, FlagMetadata|FlagMore, 1, md...) }
	errf := func(md ...byte) []byte { return frame(TypeError, FlagMetadata, 1, cat(u16(5), md)...) }
	hello := func(settings ...[]byte) []byte {
		return frame(TypeHello, 0, 0, cat(append([][]byte{{0, 2, 0, 0}}, settings...)...)...)
	}
	b := map[string][]byte{
		"request-empty-method":       frame(TypeRequest, 0, 1, 0, 0, 0, 0, 0, 'x'),
		"request-method-overrun":     frame(TypeRequest, 0, 1, 0, 0, 0, 0, 4, 'a', 'b', 'c'),
		"request-method-255-overrun": frame(TypeRequest, 0, 1, 0, 0, 0, 0, 255, 'a'),
		"request-no-metadata-room":   frame(TypeRequest, FlagMetadata, 1, 0, 0, 0, 0, 2, 'a', 'b', 0),
		"hello-max-frame-size-low":   hello(setting(SettingMaxFrameSize, MinMaxFrameSize-1)),
		"hello-max-frame-size-high":  hello(setting(SettingMaxFrameSize, MaxMaxFrameSize+1)),
		"hello-max-frame-size-0":     hello(setting(SettingMaxFrameSize, 0)),
		"hello-max-frame-size-huge":  hello(setting(SettingMaxFrameSize, 1<<63)),
		"hello-max-message-size":     hello(setting(SettingMaxMessageSize, 1<<32)),
		"hello-max-in-flight":        hello(setting(SettingMaxInFlight, 1<<32)),
		"hello-overridden-bad-value": hello(setting(SettingMaxFrameSize, 1), setting(SettingMaxFrameSize, 1<<16)),
	}
	for name, md := range badBlocks() {
		b["request-"+name] = req(md...)
		b["response-"+name] = resp(md...)
		b["error-"+name] = errf(md...)
	}
	return b
}

func setting(id uint16, v uint64) []byte {
	return binary.BigEndian.AppendUint64(u16(id), v)
}

// entry encodes one metadata entry.
func entry(key, value string) []byte {
	b := append([]byte{byte(len(key))}, key...)
	b = append(b, u16(uint16(len(value)))...)
	return append(b, value...)
}

// block encodes a metadata block with the given entries.
func block(entries ...[]byte) []byte {
	e := cat(entries...)
	return append(u16(uint16(len(e))), e...)
}

// badBlocks are metadata blocks, each followed by "tail" in its frame, that a
// receiver refuses.
func badBlocks() map[string][]byte {
	many := make([][]byte, MaxMetadataEntries+1)
	for i := range many {
		many[i] = entry("k"+strconv.Itoa(i), "")
	}
	big := cat(u16(MaxMetadataLen+1), entry("k", strings.Repeat("v", MaxMetadataLen+1-4)))
	tail := []byte("tail")
	return map[string][]byte{
		"md-length-field-cut": {0},
		"md-past-payload":     cat(u16(100), entry("k", "v"), tail),
		"md-too-long":         cat(big, tail),
		"md-entry-past-L":     cat(u16(5), entry("k", "vv"), tail),
		"md-value-len-cut":    cat(u16(3), []byte{1, 'k', 0}, []byte{1}, tail),
		"md-key-past-L":       cat(u16(2), []byte{3, 'k'}, []byte("ey"), tail),
		"md-65-entries":       cat(block(many...), tail),
		"md-empty-key":        cat(block(entry("", "v")), tail),
		"md-uppercase-key":    cat(block(entry("Traceparent", "v")), tail),
		"md-space-in-key":     cat(block(entry("a b", "v")), tail),
		"md-nul-in-key":       cat(block(entry("a\x00", "v")), tail),
		"md-high-byte-key":    cat(block(entry("é", "v")), tail),
		"md-duplicate-key":    cat(block(entry("a", "1"), entry("b", "2"), entry("a", "3")), tail),
	}
}

func TestParserErrors(t *testing.T) {
	for name, err := range map[string]error{
		"request-nil":     func() error { _, _, _, _, err := ParseRequest(0, nil); return err }(),
		"request-5":       func() error { _, _, _, _, err := ParseRequest(0, []byte{0, 0, 0, 0, 1}); return err }(),
		"request-empty":   func() error { _, _, _, _, err := ParseRequest(0, []byte{0, 0, 0, 0, 0, 'x'}); return err }(),
		"request-overrun": func() error { _, _, _, _, err := ParseRequest(0, []byte{0, 0, 0, 0, 2, 'x'}); return err }(),
		"request-md-cut":  func() error { _, _, _, _, err := ParseRequest(FlagMetadata, []byte{0, 0, 0, 0, 1, 'x', 0}); return err }(),
		"response-md-nil": func() error { _, _, err := ParseResponse(FlagMetadata, nil); return err }(),
		"error-nil":       func() error { _, _, _, err := ParseError(0, 0, nil); return err }(),
		"error-1":         func() error { _, _, _, err := ParseError(1, 0, []byte{1}); return err }(),
		"error-more":      func() error { _, _, _, err := ParseError(1, FlagMore, []byte{0, 1}); return err }(),
		"error-md-cut":    func() error { _, _, _, err := ParseError(1, FlagMetadata, []byte{0, 1, 0}); return err }(),
		"ping-nil":        func() error { _, err := ParsePing(nil); return err }(),
		"ping-7":          func() error { _, err := ParsePing(make([]byte, 7)); return err }(),
		"ping-9":          func() error { _, err := ParsePing(make([]byte, 9)); return err }(),
		"goaway-nil":      func() error { _, _, _, err := ParseGoAway(nil); return err }(),
		"goaway-9":        func() error { _, _, _, err := ParseGoAway(make([]byte, 9)); return err }(),
		"hello-nil":       func() error { _, err := ParseHello(nil); return err }(),
	} {
		wantProtocolError(t, name, err)
	}
	// Minimal valid payloads.
	if to, m, md, body, err := ParseRequest(0, []byte{0, 0, 0, 9, 1, 'x'}); err != nil || to != 9 || string(m) != "x" || md != nil || len(body) != 0 {
		t.Errorf("minimal REQUEST: %d %q %q %v", to, m, body, err)
	}
	if _, _, md, body, err := ParseRequest(FlagMetadata, []byte{0, 0, 0, 9, 1, 'x', 0, 0}); err != nil || md == nil || md.Len() != 0 || len(body) != 0 {
		t.Errorf("REQUEST with an empty metadata block: %v %q %v", md, body, err)
	}
	if md, body, err := ParseResponse(0, nil); err != nil || md != nil || body != nil {
		t.Errorf("empty RESPONSE: %v %q %v", md, body, err)
	}
	if c, md, msg, err := ParseError(0, FlagMetadata, []byte{0, 42}); err != nil || c != 42 || md != nil || len(msg) != 0 {
		t.Errorf("minimal ERROR: %v %q %v", c, msg, err)
	}
	if c, md, msg, err := ParseError(3, FlagMetadata, []byte{0, 42, 0, 0, 'm'}); err != nil || c != 42 || md.Len() != 0 || string(msg) != "m" {
		t.Errorf("ERROR with an empty metadata block: %v %v %q %v", c, md, msg, err)
	}
	if last, r, msg, err := ParseGoAway(make([]byte, 10)); err != nil || last != 0 || r != 0 || len(msg) != 0 {
		t.Errorf("minimal GOAWAY: %d %v %q %v", last, r, msg, err)
	}
}

func TestZeroAllocs(t *testing.T) {
	buf := make([]byte, 0, 16<<10)
	body := make([]byte, 64)
	for name, fn := range map[string]func(){
		"AppendRequest":          func() { buf = AppendRequest(buf[:0], 1, true, 100, "echo", nil, body) },
		"AppendRequest+metadata": func() { buf = AppendRequest(buf[:0], 1, false, 100, "echo", maxMD, body) },
		"AppendResponse":         func() { buf = AppendResponse(buf[:0], 1, false, testMD, body) },
		"AppendData":             func() { buf = AppendData(buf[:0], 1, true, body) },
		"AppendError":            func() { buf = AppendError(buf[:0], 1, CodeApplication, testMD, "failed") },
		"AppendPing":             func() { buf = AppendPing(buf[:0], 1) },
		"AppendPong":             func() { buf = AppendPong(buf[:0], 1) },
		"AppendGoAway":           func() { buf = AppendGoAway(buf[:0], 1, ReasonDrain, "bye") },
		"AppendCancel":           func() { buf = AppendCancel(buf[:0], 1) },
		"AppendHello":            func() { buf = AppendHello(buf[:0], DefaultHello()) },
		"AppendHeader":           func() { buf = AppendHeader(buf[:0], Header{Type: TypeResponse, ID: 1}) },
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
	var sink int
	decodeAll := func() {
		for b := stream; len(b) > 0; {
			f, n, err := d.Next(b)
			if err != nil || n == 0 {
				panic(err)
			}
			var md RawMetadata
			var perr error
			switch f.Type {
			case TypeRequest:
				_, _, md, _, perr = ParseRequest(f.Flags, f.Payload)
			case TypeResponse:
				md, _, perr = ParseResponse(f.Flags, f.Payload)
			case TypeError:
				_, md, _, perr = ParseError(f.ID, f.Flags, f.Payload)
			case TypePing, TypePong:
				_, perr = ParsePing(f.Payload)
			case TypeGoAway:
				_, _, _, perr = ParseGoAway(f.Payload)
			case TypeHello:
				_, perr = ParseHello(f.Payload)
			}
			if perr != nil {
				panic(perr)
			}
			sink += md.Len()
			for k, v := range md.All() {
				sink += len(k) + len(v)
			}
			if v, ok := md.Get("user"); ok {
				sink += len(v)
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
