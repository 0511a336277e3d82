package wire

import (
	"errors"
	"fmt"
)

// ErrHandshake matches (with errors.Is) every *HandshakeError.
var ErrHandshake = errors.New("wire: handshake refused")

// ErrUnsupportedVersion matches (with errors.Is) the errors of
// Framer.ClientHandshake and Framer.ServerHandshake when the peer's HELLO
// carries a version this package does not speak (the peer has then been sent
// ERROR UNSUPPORTED_VERSION).
var ErrUnsupportedVersion = errors.New("wire: unsupported protocol version")

// HandshakeError reports the connection-level ERROR that a server sent
// instead of its HELLO: BUSY, SHUTTING_DOWN, UNSUPPORTED_VERSION or another
// code. The server closes the connection after it. Code.Retryable tells
// whether another server may be tried.
type HandshakeError struct {
	Code    Code
	Message string // the ERROR's message, for logs
}

func (e *HandshakeError) Error() string {
	s := "wire: handshake refused: " + e.Code.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is ErrHandshake.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshake }

// withDefaults replaces the zero Version, MaxFrameSize and MaxMessageSize
// of h, and for a server a zero MaxInFlight, by their defaults, so that a
// zero Hello announces the defaults. (Of these, only a MaxMessageSize of 0 is
// a valid setting; WriteHello can announce it.)
func (h Hello) withDefaults(server bool) Hello {
	d := DefaultHello()
	if h.Version == 0 {
		h.Version = d.Version
	}
	if h.MaxFrameSize == 0 {
		h.MaxFrameSize = d.MaxFrameSize
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = d.MaxMessageSize
	}
	if server && h.MaxInFlight == 0 {
		h.MaxInFlight = d.MaxInFlight
	}
	return h
}

// isFrameError reports whether err is one of the errors a bad frame gives
// (as opposed to an I/O error).
func isFrameError(err error) bool {
	return errors.Is(err, ErrProtocol) || errors.Is(err, ErrFrameTooLarge)
}

// refuse writes a connection-level ERROR with code and msg, and returns
// err. A failure to write is not reported: the
// connection is failing already.
func (fr *Framer) refuse(code Code, msg string, err error) error {
	_ = fr.WriteError(0, code, nil, msg)
	return err
}

// ClientHandshake runs the client's side of the HELLO exchange
// (docs/protocol.md §4.1): it writes the client's HELLO carrying h and reads
// the server's first frame. Zero Version, MaxFrameSize and MaxMessageSize in
// h take their defaults (Version, DefaultMaxFrameSize,
// DefaultMaxMessageSize); MaxInFlight and HeartbeatInterval are sent as
// given (a client sends MaxInFlight 0). The Framer's MaxFrameSize is set to
// the MaxFrameSize announced.
//
// On success it returns the server's Hello. Otherwise:
//
//   - a connection-level ERROR instead of HELLO gives a *HandshakeError
//     (matching ErrHandshake) carrying its code and message;
//   - a HELLO of another version than this package's, or above the one
//     sent, is answered ERROR UNSUPPORTED_VERSION and gives an error
//     matching ErrUnsupportedVersion;
//   - a malformed HELLO, or one with MaxInFlight 0, is answered ERROR
//     PROTOCOL and gives a *ProtocolError;
//   - any other first frame gives a *ProtocolError, and is not answered;
//   - I/O errors are returned as they are.
//
// After an error the caller closes the connection.
func (fr *Framer) ClientHandshake(h Hello) (Hello, error) {
	h = h.withDefaults(false)
	fr.MaxFrameSize = h.MaxFrameSize
	if err := fr.WriteHello(h); err != nil {
		return Hello{}, err
	}
	f, err := fr.ReadFrame()
	if err != nil {
		var pe *ProtocolError
		switch {
		case !isFrameError(err):
			return Hello{}, err
		case f.Type == TypeHello && errors.As(err, &pe):
			return Hello{}, fr.refuse(CodeProtocol, pe.Reason, err)
		case errors.As(err, &pe):
			return Hello{}, err
		default:
			return Hello{}, protocolErrorf("server's first frame is %v, not HELLO: %v", f.Header, err)
		}
	}
	switch {
	case f.Type == TypeError && f.ID == 0:
		code, _, msg, _ := ParseError(f.ID, f.Flags, f.Payload)
		return Hello{}, &HandshakeError{Code: code, Message: string(msg)}
	case f.Type != TypeHello:
		return Hello{}, protocolErrorf("server's first frame is %v, not HELLO", f.Header)
	}
	s, _ := ParseHello(f.Payload) // checked by ReadFrame
	if s.Version != Version || s.Version > h.Version {
		msg := fmt.Sprintf("this client speaks tcppro protocol version %d, not %d", Version, s.Version)
		return Hello{}, fr.refuse(CodeUnsupportedVersion, msg, fmt.Errorf("%w: the server chose version %d, this client sent %d and speaks %d", ErrUnsupportedVersion, s.Version, h.Version, Version))
	}
	if s.MaxInFlight == 0 {
		pe := &ProtocolError{Reason: "server's HELLO has MAX_IN_FLIGHT 0, want at least 1"}
		return Hello{}, fr.refuse(CodeProtocol, pe.Reason, pe)
	}
	return s, nil
}

// ServerHandshake runs the server's side of the HELLO exchange
// (docs/protocol.md §4.1): it reads the client's HELLO and answers with a
// HELLO carrying h, whose Version is set to the version chosen:
// min(client's, Version). Zero MaxFrameSize, MaxMessageSize and MaxInFlight
// in h take their defaults (DefaultMaxFrameSize, DefaultMaxMessageSize,
// DefaultMaxInFlight); HeartbeatInterval is sent as given. The Framer's
// MaxFrameSize is set to the MaxFrameSize announced, before the client's
// HELLO is read.
//
// On success it returns the client's Hello. Otherwise:
//
//   - a first frame that is not HELLO (a version 1 client's first REQUEST,
//     say), well formed or not, is answered ERROR UNSUPPORTED_VERSION with
//     a message saying which version the server speaks, and gives a
//     *ProtocolError;
//   - a HELLO with a version below Version is answered the same way and
//     gives an error matching ErrUnsupportedVersion;
//   - a malformed HELLO is answered ERROR PROTOCOL and gives a
//     *ProtocolError;
//   - I/O errors are returned as they are.
//
// After an error the caller closes the connection.
func (fr *Framer) ServerHandshake(h Hello) (Hello, error) {
	h = h.withDefaults(true)
	fr.MaxFrameSize = h.MaxFrameSize
	speaks := fmt.Sprintf("this server speaks tcppro protocol version %d, which opens with HELLO", Version)
	f, err := fr.ReadFrame()
	if err != nil && !isFrameError(err) {
		return Hello{}, err
	}
	if f.Type != TypeHello {
		perr := protocolErrorf("client's first frame is %v, not HELLO", f.Header)
		if err != nil {
			perr = protocolErrorf("client's first frame is %v, not HELLO: %v", f.Header, err)
		}
		return Hello{}, fr.refuse(CodeUnsupportedVersion, speaks, perr)
	}
	if err != nil {
		msg := err.Error()
		var pe *ProtocolError
		if errors.As(err, &pe) { // always: a HELLO's length is checked before the size
			msg = pe.Reason
		}
		return Hello{}, fr.refuse(CodeProtocol, msg, err)
	}
	c, _ := ParseHello(f.Payload) // checked by ReadFrame
	if c.Version < Version {
		msg := fmt.Sprintf("this server speaks tcppro protocol version %d, the client %d", Version, c.Version)
		return Hello{}, fr.refuse(CodeUnsupportedVersion, msg, fmt.Errorf("%w: the client speaks version %d, this server %d", ErrUnsupportedVersion, c.Version, Version))
	}
	h.Version = min(c.Version, Version)
	if err := fr.WriteHello(h); err != nil {
		return Hello{}, err
	}
	return c, nil
}
