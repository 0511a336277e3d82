// Package wire is tcppro's frame format, version 2 of the protocol: its
// constants, encoders and decoders. docs/protocol.md specifies the format byte
// by byte together with the rules around it (the HELLO exchange, request ids,
// chunked messages, heartbeats, cancellation, GOAWAY, limits); this package is
// the reference implementation of the frame format, and internal/core of the
// rules.
//
// A connection carries length-prefixed binary frames in both directions: a
// 16-byte header (payload length, type, flags, id) followed by the payload.
// Each side's first frame is a HELLO carrying the protocol version and the
// sender's limits ([Hello]). A message is a head frame (REQUEST or RESPONSE)
// followed by DATA frames when it is flagged MORE, or a single ERROR; head
// frames may carry a block of key/value metadata ([Metadata]).
//
// The package has no I/O policy: no timeouts, no goroutines, no connection
// state. Encoding is done by the Append functions, which append one whole
// frame to a caller's buffer without allocating when it has room. Decoding is
// done by [Decoder.Next], which decodes from whatever bytes the caller has
// buffered and refuses a frame declaring a payload above the receiver's limit
// as soon as its header is seen, and by the payload parsers ([ParseRequest],
// [ParseResponse], [ParseError], [ParsePing], [ParseGoAway], [ParseHello]);
// none of them allocates on success. [Framer] wraps both around an io.Writer
// and an io.Reader for simple blocking use, handshake included.
//
// Decoders are strict about structure and liberal about meaning. A frame
// whose layout is wrong (reserved header bytes, a reserved type, an id or a
// length the type does not allow, a method or a metadata block running past
// the payload, a bad HELLO) is a protocol error that ends the connection.
// Reserved flag bits are ignored, unknown error codes, GOAWAY reasons and
// HELLO settings are accepted, and frames of extension types (128 to 255) are
// returned unchecked so that the caller can skip them.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

const (
	// HeaderLen is the length in bytes of a frame header.
	HeaderLen = 16
	// Version is the protocol version this package speaks.
	Version = 2

	// DefaultMaxFrameSize is MAX_FRAME_SIZE's default: the largest frame
	// payload, in bytes, a peer accepts when its HELLO does not say.
	DefaultMaxFrameSize = 64 << 10
	// MinMaxFrameSize is the smallest MAX_FRAME_SIZE a HELLO may carry. It
	// always holds a REQUEST with the longest method and the largest
	// metadata block.
	MinMaxFrameSize = 16 << 10
	// MaxMaxFrameSize is the largest MAX_FRAME_SIZE a HELLO may carry.
	MaxMaxFrameSize = 1<<24 - 1
	// DefaultMaxMessageSize is MAX_MESSAGE_SIZE's default: the largest
	// message body, in bytes, a peer accepts when its HELLO does not say.
	DefaultMaxMessageSize = 4 << 20
	// DefaultMaxInFlight is MAX_IN_FLIGHT's default: the most requests a
	// client may have in flight when the server's HELLO does not say.
	DefaultMaxInFlight = 128

	// MaxMethodLen is the longest method name, in bytes, that a REQUEST can
	// carry.
	MaxMethodLen = 255
	// MaxErrorMessageLen is the longest message, in bytes, that the encoders
	// put in an ERROR or GOAWAY frame; longer messages are truncated.
	// Receivers accept longer ones.
	MaxErrorMessageLen = 1024
	// MaxMetadataLen is the most bytes of entries in one metadata block (the
	// block's L field).
	MaxMetadataLen = 8192
	// MaxMetadataEntries is the most entries in one metadata block.
	MaxMetadataEntries = 64
	// MaxHelloSettings is the most settings one HELLO may carry.
	MaxHelloSettings = 64
)

// Fixed parts of the payloads.
const (
	requestFixedLen = 5  // timeout (4) + method length (1)
	errorFixedLen   = 2  // code
	pingLen         = 8  // opaque data
	goAwayFixedLen  = 10 // last id (8) + reason (2)
	helloFixedLen   = 4  // version (2) + reserved (2)
	settingLen      = 10 // id (2) + value (8)
	metadataLenLen  = 2  // a metadata block's L field
	maxHelloLen     = helloFixedLen + MaxHelloSettings*settingLen
)

// Type is a frame type.
type Type uint8

// Frame types. Types 10 to 127 are reserved (a protocol error on receipt);
// types 128 to 255 are extensions, which a receiver that does not know them
// skips.
const (
	TypeRequest  Type = 1 // a request's head: timeout, method, metadata and the first body chunk
	TypeResponse Type = 2 // a successful answer's head: metadata and the first body chunk
	TypeError    Type = 3 // a failed answer, or a connection-level error with id 0
	TypePing     Type = 4 // liveness probe carrying 8 opaque bytes
	TypePong     Type = 5 // answer to PING, echoing its 8 bytes
	TypeGoAway   Type = 6 // the server will process no request above a last id
	TypeHello    Type = 7 // each side's first frame: version and limits
	TypeCancel   Type = 8 // the client abandons a request
	TypeData     Type = 9 // the next body chunk of a message
)

const (
	firstReservedType  = 10
	firstExtensionType = 128
)

var typeNames = [...]string{
	TypeRequest:  "REQUEST",
	TypeResponse: "RESPONSE",
	TypeError:    "ERROR",
	TypePing:     "PING",
	TypePong:     "PONG",
	TypeGoAway:   "GOAWAY",
	TypeHello:    "HELLO",
	TypeCancel:   "CANCEL",
	TypeData:     "DATA",
}

// String returns the type's name as in docs/protocol.md ("REQUEST", ...),
// "EXTENSION(n)" for an extension type, or "UNKNOWN(n)" for type 0 and the
// reserved types.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	if t.Extension() {
		return "EXTENSION(" + strconv.Itoa(int(t)) + ")"
	}
	return "UNKNOWN(" + strconv.Itoa(int(t)) + ")"
}

// Extension reports whether t is an extension type (128 to 255). A receiver
// that does not know an extension type skips its frames; Decoder.Next returns
// them without checking anything but their length.
func (t Type) Extension() bool { return t >= firstExtensionType }

// Control reports whether frames of type t are control frames: PING, PONG,
// GOAWAY, HELLO and CANCEL, which are sent ahead of queued message frames.
// An ERROR is a control frame too when its id is 0, which the caller decides
// from the header.
func (t Type) Control() bool {
	switch t {
	case TypePing, TypePong, TypeGoAway, TypeHello, TypeCancel:
		return true
	}
	return false
}

// Flag bits. Each is defined on some types only; on the others, and for every
// other bit, it is reserved: senders send 0 and receivers ignore it.
const (
	// FlagMore, on REQUEST, RESPONSE and DATA, says that more DATA frames of
	// the message follow. On ERROR it is a protocol error.
	FlagMore uint8 = 0x01
	// FlagMetadata, on REQUEST, RESPONSE and ERROR with an id, says that a
	// metadata block follows the type's fixed fields.
	FlagMetadata uint8 = 0x02
)

// Header is a decoded frame header. The two reserved bytes are not kept: they
// are always zero on a valid frame.
type Header struct {
	Length uint32 // payload length in bytes, header not included
	Type   Type
	Flags  uint8  // FlagMore, FlagMetadata; other bits are ignored
	ID     uint64 // request id, or 0 for connection-level frames
}

// More reports whether the frame is a REQUEST, RESPONSE or DATA flagged
// MORE: further DATA frames of its message follow. It is false for every
// other type, on which the bit is reserved.
func (h Header) More() bool {
	switch h.Type {
	case TypeRequest, TypeResponse, TypeData:
		return h.Flags&FlagMore != 0
	}
	return false
}

// HasMetadata reports whether the frame's payload holds a metadata block: a
// REQUEST, a RESPONSE or an ERROR with an id ≥ 1, flagged METADATA. It is
// false for every other frame, on which the bit is reserved.
func (h Header) HasMetadata() bool {
	switch h.Type {
	case TypeRequest, TypeResponse:
		return h.Flags&FlagMetadata != 0
	case TypeError:
		return h.ID != 0 && h.Flags&FlagMetadata != 0
	}
	return false
}

// String describes the header for logs, e.g. "REQUEST id=7 len=42" or
// "DATA id=7 len=65536 flags=0x1".
func (h Header) String() string {
	s := h.Type.String() + " id=" + strconv.FormatUint(h.ID, 10) + " len=" + strconv.FormatUint(uint64(h.Length), 10)
	if h.Flags != 0 {
		s += " flags=0x" + strconv.FormatUint(uint64(h.Flags), 16)
	}
	return s
}

// Frame is a decoded frame.
type Frame struct {
	Header
	// Payload aliases the buffer the frame was decoded from: it is valid
	// until that buffer is reused (for a Framer, until the next ReadFrame).
	Payload []byte
}

// Code is the error code carried by an ERROR frame.
type Code uint16

// Error codes. With id 0 any code concerns the whole connection, which the
// sender closes after writing it.
const (
	CodeBusy               Code = 1  // id 0: server over its connection cap; never processed, safe to retry
	CodeFrameTooLarge      Code = 2  // id 0: declared length above the receiver's MAX_FRAME_SIZE
	CodeProtocol           Code = 3  // id 0: malformed frame or protocol violation
	CodeUnknownMethod      Code = 4  // no handler for the method; not processed
	CodeApplication        Code = 5  // the handler returned an error
	CodeTimeout            Code = 6  // the request's timeout passed
	CodeOverloaded         Code = 7  // no free worker, in-flight limit or memory budget; never processed, safe to retry
	CodeShuttingDown       Code = 8  // shutting down, offline or draining; never processed, safe to retry
	CodeInternal           Code = 9  // handler panicked, answer too large, or internal failure
	CodeUnsupportedVersion Code = 10 // id 0: the sender does not speak the peer's version; never processed, safe to retry
	CodeControlFlood       Code = 11 // id 0: the peer made the sender queue too many control frames
)

var codeNames = [...]string{
	CodeBusy:               "BUSY",
	CodeFrameTooLarge:      "FRAME_TOO_LARGE",
	CodeProtocol:           "PROTOCOL",
	CodeUnknownMethod:      "UNKNOWN_METHOD",
	CodeApplication:        "APPLICATION",
	CodeTimeout:            "TIMEOUT",
	CodeOverloaded:         "OVERLOADED",
	CodeShuttingDown:       "SHUTTING_DOWN",
	CodeInternal:           "INTERNAL",
	CodeUnsupportedVersion: "UNSUPPORTED_VERSION",
	CodeControlFlood:       "CONTROL_FLOOD",
}

// String returns the code's name as in docs/protocol.md ("BUSY", ...), or
// "CODE(n)" for a code this package does not know.
func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return "CODE(" + strconv.Itoa(int(c)) + ")"
}

// Retryable reports whether a request that failed with this code was
// certainly not processed, so that sending it again (to this or another
// server) cannot run it twice: true for BUSY, OVERLOADED, SHUTTING_DOWN and
// UNSUPPORTED_VERSION. UNKNOWN_METHOD is false: the request was not
// processed either, but another attempt would fail the same way. Unknown
// codes are not retryable.
func (c Code) Retryable() bool {
	switch c {
	case CodeBusy, CodeOverloaded, CodeShuttingDown, CodeUnsupportedVersion:
		return true
	}
	return false
}

// Reason is the reason carried by a GOAWAY frame.
type Reason uint16

// GOAWAY reasons. Receivers accept unknown reasons: a GOAWAY means the same
// whatever its reason.
const (
	ReasonShutdown      Reason = 1 // server shutting down
	ReasonMaxAge        Reason = 2 // connection reached its maximum age
	ReasonDrain         Reason = 3 // operator drain / offline
	ReasonProtocolError Reason = 4 // the peer broke the protocol
)

var reasonNames = [...]string{
	ReasonShutdown:      "SHUTDOWN",
	ReasonMaxAge:        "MAX_AGE",
	ReasonDrain:         "DRAIN",
	ReasonProtocolError: "PROTOCOL_ERROR",
}

// String returns the reason's name as in docs/protocol.md ("SHUTDOWN", ...),
// or "REASON(n)" for a reason this package does not know.
func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "REASON(" + strconv.Itoa(int(r)) + ")"
}

// ErrFrameTooLarge matches (with errors.Is) every *FrameTooLargeError.
var ErrFrameTooLarge = errors.New("wire: frame too large")

// ErrProtocol matches (with errors.Is) every *ProtocolError.
var ErrProtocol = errors.New("wire: protocol error")

// ErrInvalidMethod matches (with errors.Is) the errors of ValidMethod.
var ErrInvalidMethod = errors.New("wire: invalid method name")

// FrameTooLargeError reports a frame header that declares a payload longer
// than the receiver accepts. The connection cannot be resynchronised: the
// receiver answers ERROR FRAME_TOO_LARGE with id 0 where it can and closes.
type FrameTooLargeError struct {
	Length uint32 // declared payload length
	Max    uint32 // the receiver's maximum
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("wire: frame too large: payload length %d exceeds maximum %d", e.Length, e.Max)
}

// Is reports whether target is ErrFrameTooLarge.
func (e *FrameTooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// ProtocolError reports a malformed frame or another violation of the
// protocol. The receiver answers ERROR PROTOCOL with id 0 and closes.
type ProtocolError struct {
	Reason string // what was wrong, for logs and the ERROR's message
}

func (e *ProtocolError) Error() string { return "wire: protocol error: " + e.Reason }

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func protocolErrorf(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// ValidMethod reports whether method can name a method: 1 to MaxMethodLen
// bytes of printable ASCII without spaces (0x21 through 0x7E). The wire
// format itself carries any 1..255 bytes; this stricter rule keeps names safe
// in logs and metric labels. The error matches ErrInvalidMethod.
func ValidMethod(method string) error {
	if len(method) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidMethod)
	}
	if len(method) > MaxMethodLen {
		return fmt.Errorf("%w: %d bytes long, maximum %d", ErrInvalidMethod, len(method), MaxMethodLen)
	}
	for i := 0; i < len(method); i++ {
		if c := method[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte 0x%02x at offset %d in %q is not printable ASCII", ErrInvalidMethod, c, i, method)
		}
	}
	return nil
}

// AppendHeader appends the encoding of h, reserved bytes zero, to dst and
// returns the extended slice. It checks nothing: it is for callers that write
// a payload separately (for example with writev) or build frames by hand.
func AppendHeader(dst []byte, h Header) []byte {
	dst = binary.BigEndian.AppendUint32(dst, h.Length)
	dst = append(dst, byte(h.Type), h.Flags, 0, 0)
	return binary.BigEndian.AppendUint64(dst, h.ID)
}

func appendHeader(dst []byte, t Type, flags uint8, id uint64, length int) []byte {
	if uint64(length) > math.MaxUint32 {
		panic(fmt.Sprintf("wire: %v payload of %d bytes does not fit a frame", t, length))
	}
	return AppendHeader(dst, Header{Length: uint32(length), Type: t, Flags: flags, ID: id})
}

// ParseHeader decodes and checks the frame header at the start of b. It
// returns io.ErrShortBuffer when len(b) < HeaderLen, and a *ProtocolError
// for what the header alone shows to be wrong:
//
//   - reserved header bytes that are not 0;
//   - type 0 or a reserved type (10 to 127);
//   - a REQUEST, RESPONSE, DATA or CANCEL with id 0; a PING, PONG, GOAWAY
//     or HELLO with an id other than 0;
//   - a PING or PONG whose payload is not 8 bytes; a HELLO whose payload is
//     not 4+10·n bytes with n ≤ MaxHelloSettings;
//   - a payload shorter than its type's fixed part (REQUEST 6, ERROR 2,
//     GOAWAY 10, HELLO 4), the 2-byte length of a metadata block included
//     when the frame is flagged METADATA;
//   - flag MORE on an ERROR.
//
// ERROR is allowed with any id. Extension types (128 to 255) pass with no
// further check. The returned Header holds the decoded fields even with an
// error, for diagnostics. ParseHeader does not know the receiver's size
// limit: see Decoder.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, io.ErrShortBuffer
	}
	h := Header{
		Length: binary.BigEndian.Uint32(b[0:4]),
		Type:   Type(b[4]),
		Flags:  b[5],
		ID:     binary.BigEndian.Uint64(b[8:16]),
	}
	if r := binary.BigEndian.Uint16(b[6:8]); r != 0 {
		return h, protocolErrorf("reserved header bytes are 0x%04x, want 0", r)
	}
	return h, h.check()
}

// check applies the per-type rules that need only the header.
func (h Header) check() error {
	if h.Type.Extension() {
		return nil
	}
	var minLen uint32
	switch h.Type {
	case TypeRequest:
		minLen = requestFixedLen + 1
	case TypeError:
		if h.Flags&FlagMore != 0 {
			return protocolErrorf("ERROR flagged MORE: errors are never chunked")
		}
		minLen = errorFixedLen
	case TypePing, TypePong:
		if h.Length != pingLen {
			return protocolErrorf("%v payload of %d bytes, want %d", h.Type, h.Length, pingLen)
		}
	case TypeGoAway:
		minLen = goAwayFixedLen
	case TypeHello:
		if h.Length < helloFixedLen || h.Length > maxHelloLen || (h.Length-helloFixedLen)%settingLen != 0 {
			return protocolErrorf("HELLO payload of %d bytes, want 4+10·n with n ≤ %d settings", h.Length, MaxHelloSettings)
		}
	case TypeResponse, TypeCancel, TypeData:
	default:
		return protocolErrorf("frame type %d is reserved", uint8(h.Type))
	}
	switch h.Type {
	case TypeRequest, TypeResponse, TypeData, TypeCancel:
		if h.ID == 0 {
			return protocolErrorf("%v with id 0", h.Type)
		}
	case TypePing, TypePong, TypeGoAway, TypeHello:
		if h.ID != 0 {
			return protocolErrorf("%v with id %d, want 0", h.Type, h.ID)
		}
	}
	if h.HasMetadata() {
		minLen += metadataLenLen
	}
	if h.Length < minLen {
		return protocolErrorf("%v payload of %d bytes, want at least %d", h.Type, h.Length, minLen)
	}
	return nil
}

// Decoder decodes frames from bytes the caller has buffered. Its zero value
// is ready to use. A Decoder holds no state between calls besides its limit.
type Decoder struct {
	// MaxFrameSize is the largest payload length accepted, in bytes: the
	// receiver's MAX_FRAME_SIZE. 0 means DefaultMaxFrameSize.
	MaxFrameSize uint32
}

func maxFrameSize(m uint32) uint32 {
	if m == 0 {
		return DefaultMaxFrameSize
	}
	return m
}

// decodeHeader is ParseHeader followed by the size check, as Next and
// Framer.ReadFrame apply them.
func decodeHeader(b []byte, max uint32) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	if max = maxFrameSize(max); h.Length > max {
		return h, &FrameTooLargeError{Length: h.Length, Max: max}
	}
	return h, nil
}

// Next decodes the frame at the start of b.
//
//   - b holds a whole valid frame: Next returns it and n = HeaderLen+f.Length,
//     the number of bytes it used; f.Payload aliases b (with its capacity
//     cut at the frame's end).
//   - b holds less than a whole frame: n = 0 and err = nil. If the header is
//     complete (and valid), f.Header is filled in, so the caller knows it
//     needs HeaderLen+f.Length bytes in all (see also FrameLen).
//   - the frame is bad: n = 0 and err is a *FrameTooLargeError (matching
//     ErrFrameTooLarge) or a *ProtocolError (matching ErrProtocol). Errors
//     that the header shows (those of ParseHeader, and a length above
//     MaxFrameSize) are returned as soon as the header is there, before the
//     payload arrives. f.Header holds what was decoded, for diagnostics.
//
// Next checks everything ParseHeader checks, the size limit, and the whole
// payload layout of REQUEST, RESPONSE, ERROR (metadata blocks included) and
// HELLO, so the payload of a returned frame always parses with the parser of
// its type. Frames of extension types are returned with only their header's
// reserved bytes and length checked: a caller that does not know the type
// skips n bytes. Next allocates nothing except the error it returns.
func (d *Decoder) Next(b []byte) (f Frame, n int, err error) {
	if len(b) < HeaderLen {
		return Frame{}, 0, nil
	}
	h, err := decodeHeader(b, d.MaxFrameSize)
	if err != nil {
		return Frame{Header: h}, 0, err
	}
	if uint64(len(b)-HeaderLen) < uint64(h.Length) {
		return Frame{Header: h}, 0, nil
	}
	n = HeaderLen + int(h.Length)
	payload := b[HeaderLen:n:n]
	if err := checkPayload(h, payload); err != nil {
		return Frame{Header: h}, 0, err
	}
	return Frame{Header: h, Payload: payload}, n, nil
}

// FrameLen returns the number of bytes the frame starting at b takes in all,
// HeaderLen+Length, once b holds its header; before that it returns
// HeaderLen. It checks nothing: it tells a reader how much to buffer before
// calling Decoder.Next again.
func FrameLen(b []byte) int {
	if len(b) < HeaderLen {
		return HeaderLen
	}
	n := uint64(HeaderLen) + uint64(binary.BigEndian.Uint32(b))
	if n > math.MaxInt {
		return math.MaxInt
	}
	return int(n)
}

// checkPayload applies the per-type rules that need the payload.
func checkPayload(h Header, payload []byte) error {
	var err error
	switch h.Type {
	case TypeRequest:
		_, _, _, _, err = ParseRequest(h.Flags, payload)
	case TypeResponse:
		_, _, err = ParseResponse(h.Flags, payload)
	case TypeError:
		_, _, _, err = ParseError(h.ID, h.Flags, payload)
	case TypeHello:
		_, err = ParseHello(payload)
	}
	// PING, PONG, GOAWAY, CANCEL and DATA are fully checked by Header.check;
	// extension types are not checked.
	return err
}
