package wire

import (
	"encoding/binary"
	"math"
)

// HELLO setting ids (docs/protocol.md §4.2). Each setting is a limit of its
// sender, which the receiver respects.
const (
	SettingMaxFrameSize      uint16 = 1 // MAX_FRAME_SIZE: the largest frame payload the sender accepts
	SettingMaxMessageSize    uint16 = 2 // MAX_MESSAGE_SIZE: the largest message body the sender accepts
	SettingMaxInFlight       uint16 = 3 // MAX_IN_FLIGHT: a server's limit of requests in flight; clients send 0
	SettingHeartbeatInterval uint16 = 4 // HEARTBEAT_INTERVAL: the sender's heartbeat interval in ms, 0 for none
)

// Hello is the content of a HELLO frame: the protocol version and the
// sender's settings.
type Hello struct {
	// Version is the client's highest version, or the version the server
	// chose.
	Version uint16
	// MaxFrameSize is setting 1, MAX_FRAME_SIZE: the largest frame payload
	// the sender accepts, MinMaxFrameSize to MaxMaxFrameSize. Default
	// DefaultMaxFrameSize when absent.
	MaxFrameSize uint32
	// MaxMessageSize is setting 2, MAX_MESSAGE_SIZE: the largest message
	// body the sender accepts. Default DefaultMaxMessageSize when absent.
	MaxMessageSize uint32
	// MaxInFlight is setting 3, MAX_IN_FLIGHT: a server's limit of requests
	// in flight, at least 1. Clients send 0 (it has no meaning for them).
	// Default DefaultMaxInFlight when absent.
	MaxInFlight uint32
	// HeartbeatInterval is setting 4, HEARTBEAT_INTERVAL: the sender's
	// heartbeat interval in milliseconds, 0 when it sends no heartbeats;
	// information only. Default 0 when absent.
	HeartbeatInterval uint64
}

// DefaultHello returns the Hello that a HELLO of version Version carrying no
// settings means: every setting at its default.
func DefaultHello() Hello {
	return Hello{
		Version:        Version,
		MaxFrameSize:   DefaultMaxFrameSize,
		MaxMessageSize: DefaultMaxMessageSize,
		MaxInFlight:    DefaultMaxInFlight,
	}
}

// AppendHello appends a HELLO frame carrying h: its version and all four
// settings, in id order, with the values as given (it checks none of them:
// a receiver refuses a MaxFrameSize out of range, and a server's MaxInFlight
// of 0).
func AppendHello(dst []byte, h Hello) []byte {
	dst = appendHeader(dst, TypeHello, 0, 0, helloFixedLen+4*settingLen)
	dst = binary.BigEndian.AppendUint16(dst, h.Version)
	dst = append(dst, 0, 0) // reserved
	dst = appendSetting(dst, SettingMaxFrameSize, uint64(h.MaxFrameSize))
	dst = appendSetting(dst, SettingMaxMessageSize, uint64(h.MaxMessageSize))
	dst = appendSetting(dst, SettingMaxInFlight, uint64(h.MaxInFlight))
	return appendSetting(dst, SettingHeartbeatInterval, h.HeartbeatInterval)
}

func appendSetting(dst []byte, id uint16, v uint64) []byte {
	dst = binary.BigEndian.AppendUint16(dst, id)
	return binary.BigEndian.AppendUint64(dst, v)
}

// ParseHello decodes a HELLO payload. The payload must be 4+10·n bytes long
// with n ≤ MaxHelloSettings. Absent settings take their defaults, unknown
// setting ids are ignored, and of a setting given more than once the last
// value counts. Every value of a known setting must be within its range:
// MaxFrameSize MinMaxFrameSize to MaxMaxFrameSize, MaxMessageSize and
// MaxInFlight at most 2³²−1. MaxInFlight is otherwise not checked here: 0 is
// what clients send, and the client checks that a server's value is at least
// 1. The version is not checked either: choosing one is the caller's part.
func ParseHello(payload []byte) (Hello, error) {
	n := len(payload)
	if n < helloFixedLen || n > maxHelloLen || (n-helloFixedLen)%settingLen != 0 {
		return Hello{}, protocolErrorf("HELLO payload of %d bytes, want 4+10·n with n ≤ %d settings", n, MaxHelloSettings)
	}
	h := DefaultHello()
	h.Version = binary.BigEndian.Uint16(payload)
	for p := payload[helloFixedLen:]; len(p) > 0; p = p[settingLen:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint64(p[2:])
		switch id {
		case SettingMaxFrameSize:
			if v < MinMaxFrameSize || v > MaxMaxFrameSize {
				return Hello{}, protocolErrorf("HELLO setting MAX_FRAME_SIZE = %d, want %d to %d", v, MinMaxFrameSize, MaxMaxFrameSize)
			}
			h.MaxFrameSize = uint32(v)
		case SettingMaxMessageSize:
			if v > math.MaxUint32 {
				return Hello{}, protocolErrorf("HELLO setting MAX_MESSAGE_SIZE = %d, want at most %d", v, uint32(math.MaxUint32))
			}
			h.MaxMessageSize = uint32(v)
		case SettingMaxInFlight:
			if v > math.MaxUint32 {
				return Hello{}, protocolErrorf("HELLO setting MAX_IN_FLIGHT = %d, want at most %d", v, uint32(math.MaxUint32))
			}
			h.MaxInFlight = uint32(v)
		case SettingHeartbeatInterval:
			h.HeartbeatInterval = v
		}
	}
	return h, nil
}
