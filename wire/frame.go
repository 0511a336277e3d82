// Package wire is tcppro's frame format: the constants, the encoders and the
// decoders of the protocol that tcppro clients and servers speak over TCP.
//
// A connection carries length-prefixed binary frames in both directions: a
// 16-byte header (payload length, type, flags, id) followed by the payload.
// docs/protocol.md specifies the format byte by byte, together with the rules
// around it (request ids, heartbeats, GOAWAY, limits); this package is its
// reference implementation.
//
// The package has no I/O policy: no timeouts, no goroutines, no connection
// state. Encoding is done by the Append functions, which append one whole
// frame to a caller's buffer. Decoding is done by [Decoder.Next], which
// decodes from whatever bytes the caller has buffered, and by the payload
// parsers ([ParseRequest], [ParseError], [ParsePing], [ParseGoAway]); none of
// them allocates on success, and a frame that declares a payload larger than
// the receiver's limit is refused as soon as its header is seen. [Framer]
// wraps both around an io.Writer and an io.Reader for simple blocking use.
//
// Receivers are strict about structure and liberal about meaning: a frame
// whose layout is wrong is a protocol error that ends the connection, while
// unknown flag bits, error codes and GOAWAY reasons are accepted.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

const (
	// HeaderLen is the length in bytes of a frame header.
	HeaderLen = 16
	// DefaultMaxFrameSize is the largest payload length, in bytes, that a
	// receiver accepts unless configured otherwise.
	DefaultMaxFrameSize = 4 << 20
	// MaxMethodLen is the longest method name, in bytes, that a REQUEST can
	// carry.
	MaxMethodLen = 255
	// MaxErrorMessageLen is the longest message, in bytes, that the encoders
	// put in an ERROR or GOAWAY frame; longer messages are truncated.
	MaxErrorMessageLen = 1024
)

// Fixed parts of the payloads.
const (
	requestFixedLen = 5  // timeout (4) + method length (1)
	errorFixedLen   = 2  // code
	pingLen         = 8  // opaque data
	goAwayFixedLen  = 10 // last id (8) + reason (2)
)

// Type is a frame type.
type Type uint8

// Frame types.
const (
	TypeRequest  Type = 1 // a call: timeout, method and body
	TypeResponse Type = 2 // a successful answer to the REQUEST with the same id
	TypeError    Type = 3 // a failed answer, or a connection-level error with id 0
	TypePing     Type = 4 // liveness probe carrying 8 opaque bytes
	TypePong     Type = 5 // answer to PING, echoing its 8 bytes
	TypeGoAway   Type = 6 // the sender will process no request above a last id
)

var typeNames = [...]string{
	TypeRequest:  "REQUEST",
	TypeResponse: "RESPONSE",
	TypeError:    "ERROR",
	TypePing:     "PING",
	TypePong:     "PONG",
	TypeGoAway:   "GOAWAY",
}

// String returns the type's name as in docs/protocol.md ("REQUEST", ...), or
// "UNKNOWN(n)" for a type this package does not know.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "UNKNOWN(" + strconv.Itoa(int(t)) + ")"
}

// Header is a decoded frame header. The two reserved bytes are not kept: they
// are always zero on a valid frame.
type Header struct {
	Length uint32 // payload length in bytes, header not included
	Type   Type
	Flags  uint8  // no flags are defined: senders send 0, receivers ignore them
	ID     uint64 // request id, or 0 for connection-level frames
}

// String describes the header for logs, e.g. "REQUEST id=7 len=42".
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

// Error codes. Codes sent with id 0 are about the whole connection, which the
// sender closes after writing them.
const (
	CodeBusy          Code = 1 // server over its connection cap; the connection is closed; never processed
	CodeFrameTooLarge Code = 2 // declared length above the receiver's maximum; connection closed
	CodeProtocol      Code = 3 // malformed frame / protocol violation; connection closed
	CodeUnknownMethod Code = 4 // no handler for the method; not processed
	CodeApplication   Code = 5 // the handler returned an error
	CodeTimeout       Code = 6 // the request's deadline passed
	CodeOverloaded    Code = 7 // no free worker; never processed, safe to retry
	CodeShuttingDown  Code = 8 // server is shutting down; never processed, safe to retry
	CodeInternal      Code = 9 // handler panicked or internal failure
)

var codeNames = [...]string{
	CodeBusy:          "BUSY",
	CodeFrameTooLarge: "FRAME_TOO_LARGE",
	CodeProtocol:      "PROTOCOL",
	CodeUnknownMethod: "UNKNOWN_METHOD",
	CodeApplication:   "APPLICATION",
	CodeTimeout:       "TIMEOUT",
	CodeOverloaded:    "OVERLOADED",
	CodeShuttingDown:  "SHUTTING_DOWN",
	CodeInternal:      "INTERNAL",
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
// server) cannot run it twice: true for Busy, Overloaded and ShuttingDown.
// UnknownMethod is false: the request was not processed either, but another
// attempt would fail the same way. Unknown codes are not retryable.
func (c Code) Retryable() bool {
	switch c {
	case CodeBusy, CodeOverloaded, CodeShuttingDown:
		return true
	}
	return false
}

// Reason is the reason carried by a GOAWAY frame.
type Reason uint16

// GOAWAY reasons.
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
	Reason string // what was wrong, for logs
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

func appendHeader(dst []byte, t Type, id uint64, length int) []byte {
	if uint64(length) > math.MaxUint32 {
		panic(fmt.Sprintf("wire: %v payload of %d bytes does not fit a frame", t, length))
	}
	return AppendHeader(dst, Header{Length: uint32(length), Type: t, ID: id})
}

// truncateMessage cuts msg to at most MaxErrorMessageLen bytes, at the start of
// a UTF-8 sequence so that a valid message stays valid.
func truncateMessage(msg string) string {
	if len(msg) <= MaxErrorMessageLen {
		return msg
	}
	n := MaxErrorMessageLen
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n]
}

// The Append functions append one whole frame (header and payload) to dst and
// return the extended slice. They never allocate when dst has enough spare
// capacity. They do not check ids: the caller keeps to the id rules of
// docs/protocol.md.

// AppendRequest appends a REQUEST frame. id must be at least 1 and greater
// than every id sent before on the connection; timeoutMillis is the caller's
// remaining deadline in milliseconds, 0 for none. method must be 1 to
// MaxMethodLen bytes long, or AppendRequest panics: check names with
// ValidMethod first.
func AppendRequest(dst []byte, id uint64, timeoutMillis uint32, method string, body []byte) []byte {
	if len(method) == 0 || len(method) > MaxMethodLen {
		panic(fmt.Sprintf("wire: AppendRequest: method name of %d bytes, want 1..%d (check it with ValidMethod)", len(method), MaxMethodLen))
	}
	dst = appendHeader(dst, TypeRequest, id, requestFixedLen+len(method)+len(body))
	dst = binary.BigEndian.AppendUint32(dst, timeoutMillis)
	dst = append(dst, byte(len(method)))
	dst = append(dst, method...)
	return append(dst, body...)
}

// AppendResponse appends a RESPONSE frame answering request id.
func AppendResponse(dst []byte, id uint64, body []byte) []byte {
	dst = appendHeader(dst, TypeResponse, id, len(body))
	return append(dst, body...)
}

// AppendError appends an ERROR frame answering request id, or about the whole
// connection when id is 0. msg should be UTF-8; it is truncated to
// MaxErrorMessageLen bytes, on a character boundary.
func AppendError(dst []byte, id uint64, code Code, msg string) []byte {
	msg = truncateMessage(msg)
	dst = appendHeader(dst, TypeError, id, errorFixedLen+len(msg))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, msg...)
}

// AppendPing appends a PING frame carrying data (a sequence number or a
// timestamp: the peer echoes it in its PONG).
func AppendPing(dst []byte, data uint64) []byte {
	dst = appendHeader(dst, TypePing, 0, pingLen)
	return binary.BigEndian.AppendUint64(dst, data)
}

// AppendPong appends a PONG frame; data is the payload of the PING it answers.
func AppendPong(dst []byte, data uint64) []byte {
	dst = appendHeader(dst, TypePong, 0, pingLen)
	return binary.BigEndian.AppendUint64(dst, data)
}

// AppendGoAway appends a GOAWAY frame: the sender will process requests with
// ids up to lastID and no other. msg should be UTF-8; it is truncated to
// MaxErrorMessageLen bytes, on a character boundary.
func AppendGoAway(dst []byte, lastID uint64, reason Reason, msg string) []byte {
	msg = truncateMessage(msg)
	dst = appendHeader(dst, TypeGoAway, 0, goAwayFixedLen+len(msg))
	dst = binary.BigEndian.AppendUint64(dst, lastID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(reason))
	return append(dst, msg...)
}

// ParseHeader decodes and checks the frame header at the start of b. It
// returns io.ErrShortBuffer when len(b) < HeaderLen, and a *ProtocolError for
// non-zero reserved bytes, an unknown type, or an id or payload length that
// the type does not allow (a REQUEST or RESPONSE with id 0, a PING, PONG or
// GOAWAY with a non-zero id, a PING or PONG whose payload is not 8 bytes, a
// payload shorter than its type's fixed part). On a *ProtocolError the
// returned Header still holds the decoded fields, for diagnostics. ParseHeader
// does not know the receiver's size limit: see Decoder.
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
	var minLen uint32
	switch h.Type {
	case TypeRequest:
		if h.ID == 0 {
			return protocolErrorf("REQUEST with id 0")
		}
		minLen = requestFixedLen + 1
	case TypeResponse:
		if h.ID == 0 {
			return protocolErrorf("RESPONSE with id 0")
		}
	case TypeError:
		minLen = errorFixedLen
	case TypePing, TypePong:
		if h.ID != 0 {
			return protocolErrorf("%v with id %d, want 0", h.Type, h.ID)
		}
		if h.Length != pingLen {
			return protocolErrorf("%v payload of %d bytes, want %d", h.Type, h.Length, pingLen)
		}
	case TypeGoAway:
		if h.ID != 0 {
			return protocolErrorf("GOAWAY with id %d, want 0", h.ID)
		}
		minLen = goAwayFixedLen
	default:
		return protocolErrorf("unknown frame type %d", uint8(h.Type))
	}
	if h.Length < minLen {
		return protocolErrorf("%v payload of %d bytes, want at least %d", h.Type, h.Length, minLen)
	}
	return nil
}

// checkPayload applies the per-type rules that need the payload.
func checkPayload(t Type, payload []byte) error {
	if t == TypeRequest {
		_, _, _, err := ParseRequest(payload)
		return err
	}
	return nil // every other type is fully checked by Header.check
}

// Decoder decodes frames from bytes the caller has buffered. Its zero value
// is ready to use. A Decoder holds no state between calls besides its limit.
type Decoder struct {
	// MaxFrameSize is the largest payload length accepted, in bytes; 0 means
	// DefaultMaxFrameSize.
	MaxFrameSize uint32
}

func maxFrameSize(m uint32) uint32 {
	if m == 0 {
		return DefaultMaxFrameSize
	}
	return m
}

// Next decodes the frame at the start of b.
//
//   - b holds a whole valid frame: Next returns it and n = HeaderLen+f.Length,
//     the number of bytes it used; f.Payload aliases b.
//   - b holds less than a whole frame: n = 0 and err = nil. If the header is
//     complete (and valid), f.Header is filled in, so the caller knows it
//     needs HeaderLen+f.Length bytes in all.
//   - the frame is bad: n = 0 and err is a *FrameTooLargeError (matching
//     ErrFrameTooLarge) or a *ProtocolError (matching ErrProtocol). Both are
//     returned as soon as the header shows them, before the payload arrives.
//     f.Header holds what was decoded, for diagnostics.
//
// Next checks everything ParseHeader checks, the size limit, and the layout of
// a REQUEST payload, so the payload of a returned frame always parses with
// the parser of its type. Next allocates nothing except the error it returns.
func (d *Decoder) Next(b []byte) (f Frame, n int, err error) {
	if len(b) < HeaderLen {
		return Frame{}, 0, nil
	}
	h, err := ParseHeader(b)
	if err != nil {
		return Frame{Header: h}, 0, err
	}
	if max := maxFrameSize(d.MaxFrameSize); h.Length > max {
		return Frame{Header: h}, 0, &FrameTooLargeError{Length: h.Length, Max: max}
	}
	if uint64(len(b)-HeaderLen) < uint64(h.Length) {
		return Frame{Header: h}, 0, nil
	}
	n = HeaderLen + int(h.Length)
	payload := b[HeaderLen:n:n]
	if err := checkPayload(h.Type, payload); err != nil {
		return Frame{Header: h}, 0, err
	}
	return Frame{Header: h, Payload: payload}, n, nil
}

// The payload parsers decode the payload of one frame type. They do not
// allocate on success; the slices they return alias payload. Their errors are
// *ProtocolError values.

// ParseRequest decodes a REQUEST payload.
func ParseRequest(payload []byte) (timeoutMillis uint32, method []byte, body []byte, err error) {
	if len(payload) < requestFixedLen+1 {
		return 0, nil, nil, protocolErrorf("REQUEST payload of %d bytes, want at least %d", len(payload), requestFixedLen+1)
	}
	m := requestFixedLen + int(payload[4])
	switch {
	case m == requestFixedLen:
		return 0, nil, nil, protocolErrorf("REQUEST with an empty method name")
	case m > len(payload):
		return 0, nil, nil, protocolErrorf("REQUEST method name of %d bytes overruns a %d-byte payload", payload[4], len(payload))
	}
	return binary.BigEndian.Uint32(payload), payload[requestFixedLen:m:m], payload[m:], nil
}

// ParseError decodes an ERROR payload. The message is not checked: it may be
// longer than MaxErrorMessageLen or not valid UTF-8.
func ParseError(payload []byte) (code Code, msg []byte, err error) {
	if len(payload) < errorFixedLen {
		return 0, nil, protocolErrorf("ERROR payload of %d bytes, want at least %d", len(payload), errorFixedLen)
	}
	return Code(binary.BigEndian.Uint16(payload)), payload[errorFixedLen:], nil
}

// ParsePing decodes a PING or PONG payload.
func ParsePing(payload []byte) (uint64, error) {
	if len(payload) != pingLen {
		return 0, protocolErrorf("PING/PONG payload of %d bytes, want %d", len(payload), pingLen)
	}
	return binary.BigEndian.Uint64(payload), nil
}

// ParseGoAway decodes a GOAWAY payload. The message is not checked, as for
// ParseError.
func ParseGoAway(payload []byte) (lastID uint64, reason Reason, msg []byte, err error) {
	if len(payload) < goAwayFixedLen {
		return 0, 0, nil, protocolErrorf("GOAWAY payload of %d bytes, want at least %d", len(payload), goAwayFixedLen)
	}
	return binary.BigEndian.Uint64(payload), Reason(binary.BigEndian.Uint16(payload[8:])), payload[goAwayFixedLen:], nil
}
