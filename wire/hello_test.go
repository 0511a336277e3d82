package wire

import (
	"strings"
	"testing"
)

func TestParseHello(t *testing.T) {
	hello := func(version uint16, settings ...[]byte) []byte {
		return cat(append([][]byte{u16(version), {0, 0}}, settings...)...)
	}
	def := DefaultHello()
	with := func(f func(*Hello)) Hello {
		h := def
		f(&h)
		return h
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		want    Hello
	}{
		{"no settings: defaults", hello(2), def},
		{"version kept", hello(7), with(func(h *Hello) { h.Version = 7 })},
		{"version 0 kept", hello(0), with(func(h *Hello) { h.Version = 0 })},
		{"reserved ignored", []byte{0, 2, 0xff, 0xff}, def},
		{"one setting, others default", hello(2, setting(SettingMaxInFlight, 0)), with(func(h *Hello) { h.MaxInFlight = 0 })},
		{"unknown setting ignored", hello(2, setting(0, 1), setting(5, 1<<63), setting(0xffff, 3)), def},
		{"repeated: last wins", hello(2, setting(SettingMaxFrameSize, MinMaxFrameSize), setting(SettingHeartbeatInterval, 1), setting(SettingMaxFrameSize, 1<<20), setting(SettingHeartbeatInterval, 2)),
			with(func(h *Hello) { h.MaxFrameSize, h.HeartbeatInterval = 1<<20, 2 })},
		{"ranges: lowest", hello(2, setting(1, MinMaxFrameSize), setting(2, 0), setting(3, 0), setting(4, 0)),
			Hello{Version: 2, MaxFrameSize: MinMaxFrameSize}},
		{"ranges: highest", hello(2, setting(1, MaxMaxFrameSize), setting(2, 1<<32-1), setting(3, 1<<32-1), setting(4, 1<<64-1)),
			Hello{Version: 2, MaxFrameSize: MaxMaxFrameSize, MaxMessageSize: 1<<32 - 1, MaxInFlight: 1<<32 - 1, HeartbeatInterval: 1<<64 - 1}},
		{"64 settings", hello(2, func() (s []byte) {
			for range MaxHelloSettings {
				s = append(s, setting(9, 9)...)
			}
			return s
		}()), def},
	} {
		got, err := ParseHello(tc.payload)
		if err != nil || got != tc.want {
			t.Errorf("%s: ParseHello = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
		// Next accepts it as a whole frame.
		if f, _, err := new(Decoder).Next(frame(TypeHello, 0, 0, tc.payload...)); err != nil || f.Type != TypeHello {
			t.Errorf("%s: Next: %v", tc.name, err)
		}
	}

	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"0 bytes", nil, "HELLO payload of 0 bytes"},
		{"3 bytes", []byte{0, 2, 0}, "HELLO payload of 3 bytes"},
		{"5 bytes", hello(2, []byte{1}), "HELLO payload of 5 bytes"},
		{"13 bytes", hello(2, setting(1, MinMaxFrameSize)[:9]), "HELLO payload of 13 bytes"},
		{"65 settings", hello(2, []byte(strings.Repeat(string(setting(9, 9)), 65))), "HELLO payload of 654 bytes"},
		{"MAX_FRAME_SIZE 16383", hello(2, setting(1, MinMaxFrameSize-1)), "MAX_FRAME_SIZE = 16383, want 16384 to 16777215"},
		{"MAX_FRAME_SIZE 2^24", hello(2, setting(1, MaxMaxFrameSize+1)), "MAX_FRAME_SIZE = 16777216"},
		{"MAX_MESSAGE_SIZE 2^32", hello(2, setting(2, 1<<32)), "MAX_MESSAGE_SIZE = 4294967296"},
		{"MAX_IN_FLIGHT 2^32", hello(2, setting(3, 1<<32)), "MAX_IN_FLIGHT = 4294967296"},
		{"bad value overridden", hello(2, setting(1, 0), setting(1, 1<<16)), "MAX_FRAME_SIZE = 0"},
	} {
		_, err := ParseHello(tc.payload)
		wantProtocolError(t, tc.name, err)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}

func TestAppendHello(t *testing.T) {
	// Values are sent as given, out of range too (a receiver refuses them).
	h := Hello{Version: 9, MaxFrameSize: 1}
	b := AppendHello(nil, h)
	if len(b) != HeaderLen+44 {
		t.Fatalf("HELLO of %d bytes", len(b))
	}
	if _, err := ParseHello(b[HeaderLen:]); err == nil {
		t.Error("MAX_FRAME_SIZE 1 accepted")
	}
	for i, id := range []uint16{SettingMaxFrameSize, SettingMaxMessageSize, SettingMaxInFlight, SettingHeartbeatInterval} {
		off := HeaderLen + 4 + i*10
		if got := uint16(b[off])<<8 | uint16(b[off+1]); got != id {
			t.Errorf("setting %d has id %d, want %d", i, got, id)
		}
	}
}
