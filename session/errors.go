package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/tcppro/tcppro/wire"
)

// Errors a connection ends with; every call in flight on it fails with an
// error that matches the same value (errors.Is).
var (
	// ErrPeerDead: nothing arrived within the heartbeat timeout. The
	// peer's host, link or process is gone or frozen.
	ErrPeerDead = errors.New("session: peer dead: nothing received within the heartbeat timeout")
	// ErrWriteTimeout: queued output made no progress for WriteTimeout; the
	// peer stopped reading.
	ErrWriteTimeout = errors.New("session: write timeout: peer stopped reading")
	// ErrFrameTimeout: a frame started arriving and then received nothing
	// for FrameReadTimeout.
	ErrFrameTimeout = errors.New("session: frame read timeout: a frame stopped arriving")
	// ErrHandshakeTimeout: the peer's HELLO (or the TLS handshake) did not
	// complete within HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("session: handshake timeout")
	// ErrControlFlood: the peer made this side queue more control frames
	// than MaxQueuedControl without reading them; it was sent ERROR
	// CONTROL_FLOOD.
	ErrControlFlood = errors.New("session: peer flooded control frames without reading")
	// ErrConnClosed: the connection was closed (by us, or by the peer's FIN
	// or reset).
	ErrConnClosed = errors.New("session: connection closed")
	// ErrGoAway: the call was not sent, or was above the last id of the
	// peer's GOAWAY: it was certainly not processed.
	ErrGoAway = errors.New("session: connection going away")
	// ErrTooLarge: a call's body or metadata exceeds what the peer accepts
	// (its MAX_MESSAGE_SIZE or MAX_FRAME_SIZE); it was not sent.
	ErrTooLarge = errors.New("session: message too large for the peer")
)

// Errors an ERROR frame's code maps to; a *Error matches the one for its
// code with errors.Is.
var (
	// ErrBusy: the server refused the connection at its connection cap
	// (code BUSY). Nothing was processed.
	ErrBusy = errors.New("session: server busy (at its connection cap)")
	// ErrOverloaded: the server refused the request: no free worker, its
	// in-flight limit or its memory budget (code OVERLOADED). Not
	// processed.
	ErrOverloaded = errors.New("session: server overloaded")
	// ErrShuttingDown: the server is shutting down, offline or draining
	// (code SHUTTING_DOWN). Not processed.
	ErrShuttingDown = errors.New("session: server shutting down")
	// ErrUnsupportedVersion: the peer does not speak this protocol version
	// (code UNSUPPORTED_VERSION). Nothing was processed.
	ErrUnsupportedVersion = errors.New("session: unsupported protocol version")
	// ErrTimeout: a call's deadline passed, or the server answered TIMEOUT.
	// It also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("session: deadline passed")
)

// Error is an ERROR frame received from the peer: the failed answer to one
// request, or, with Conn set, the end of the whole connection (an ERROR
// with ID 0). Handlers return one to choose the code their caller sees.
type Error struct {
	Code    wire.Code
	Message string
	// Metadata came with the ERROR (answers only).
	Metadata wire.Metadata
	// Conn reports a connection-level ERROR (ID 0): the connection ended
	// with it.
	Conn bool
}

func (e *Error) Error() string {
	if e.Conn {
		return fmt.Sprintf("connection refused or ended by the peer: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is matches the sentinel of the error's code (ErrBusy, ErrOverloaded,
// ErrShuttingDown, ErrUnsupportedVersion, ErrTimeout and
// context.DeadlineExceeded for TIMEOUT), and, for a connection-level ERROR,
// ErrConnClosed.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case wire.CodeBusy:
		if target == ErrBusy {
			return true
		}
	case wire.CodeOverloaded:
		if target == ErrOverloaded {
			return true
		}
	case wire.CodeShuttingDown:
		if target == ErrShuttingDown {
			return true
		}
	case wire.CodeUnsupportedVersion:
		if target == ErrUnsupportedVersion {
			return true
		}
	case wire.CodeTimeout:
		if target == ErrTimeout || target == context.DeadlineExceeded {
			return true
		}
	}
	return e.Conn && target == ErrConnClosed
}

// Errorf returns an *Error with a formatted message.
func Errorf(code wire.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// DeadlineError is the error of a call whose deadline passed before it was
// answered. It matches ErrTimeout and context.DeadlineExceeded.
type DeadlineError struct {
	// Sent reports whether the request had been sent: if so, whether the
	// server processed it is unknown.
	Sent bool
}

func (e *DeadlineError) Error() string {
	if e.Sent {
		return "session: deadline passed before the answer arrived"
	}
	return "session: deadline passed before the request could be sent"
}

// Is matches ErrTimeout and context.DeadlineExceeded.
func (e *DeadlineError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// notProcessed marks a failure of a request that was certainly not
// processed by the peer.
type notProcessed struct{ err error }

func (e *notProcessed) Error() string { return e.err.Error() + " (not processed)" }
func (e *notProcessed) Unwrap() error { return e.err }

// NotProcessed marks err as the failure of a request that the peer
// certainly did not process (never sent, or above a GOAWAY's last id), so
// that RetrySafe reports true for it.
func NotProcessed(err error) error {
	if err == nil || RetrySafe(err) {
		return err
	}
	return &notProcessed{err}
}

// RetrySafe reports whether err says that the request certainly was not
// processed, so that sending it again, to this server or another, cannot run
// it twice: an ERROR answer whose code is retry safe (OVERLOADED,
// SHUTTING_DOWN), a connection-level ERROR that refused the whole
// connection (BUSY, SHUTTING_DOWN, UNSUPPORTED_VERSION), or a failure
// marked NotProcessed.
// This is the one place tcppro decides it.
func RetrySafe(err error) bool {
	var np *notProcessed
	if errors.As(err, &np) {
		return true
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Conn {
		// A connection-level ERROR: only these say that nothing on the
		// connection was processed (protocol.md §7).
		switch e.Code {
		case wire.CodeBusy, wire.CodeShuttingDown, wire.CodeUnsupportedVersion:
			return true
		}
		return false
	}
	// An answer: only these say that the request was not processed.
	return e.Code == wire.CodeOverloaded || e.Code == wire.CodeShuttingDown
}
