package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Errors a call can end with. Each is matched with errors.Is; a call that
// failed with an ERROR frame from the server also matches errors.As with
// *CallError.
var (
	// ErrPeerDead: the connection's heartbeat found the server dead while
	// the call was in flight. Whether it was processed is unknown.
	ErrPeerDead = session.ErrPeerDead
	// ErrConnClosed: the connection closed while the call was in flight.
	ErrConnClosed = session.ErrConnClosed
	// ErrWriteTimeout: the server stopped reading.
	ErrWriteTimeout = session.ErrWriteTimeout
	// ErrServerBusy: the server refused the connection at its cap.
	ErrServerBusy = errors.New("client: server busy (at its connection cap)")
	// ErrOverloaded: every worker of the server was busy; not processed.
	ErrOverloaded = errors.New("client: server overloaded (no free worker)")
	// ErrTimeout: the call's deadline passed. It also matches
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("client: call timed out")
	// ErrUnavailable: no server could be reached; the error also wraps
	// the last connection error of each endpoint.
	ErrUnavailable = errors.New("client: no server available")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
)

// CallError is an ERROR frame the server sent for a call.
type CallError struct {
	Code    wire.Code
	Message string
}

func (e *CallError) Error() string { return fmt.Sprintf("server error %s: %s", e.Code, e.Message) }

// Is lets errors.Is match the sentinel that corresponds to the code.
func (e *CallError) Is(target error) bool {
	switch e.Code {
	case wire.CodeBusy:
		return target == ErrServerBusy
	case wire.CodeOverloaded:
		return target == ErrOverloaded
	case wire.CodeTimeout:
		return target == ErrTimeout || target == context.DeadlineExceeded
	}
	return false
}

// Retryable reports whether the server certainly did not process the call.
func (e *CallError) Retryable() bool { return e.Code.Retryable() }

// timeoutError is a call's deadline passing: it matches ErrTimeout and the
// context's error.
type timeoutError struct{ cause error }

func (e timeoutError) Error() string   { return "client: call timed out: " + e.cause.Error() }
func (e timeoutError) Is(t error) bool { return t == ErrTimeout }
func (e timeoutError) Unwrap() error   { return e.cause }

// ctxError is the error of a call whose context ended: a timeout when its
// deadline passed, the context's own error (context.Canceled) otherwise.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return timeoutError{err}
	}
	return fmt.Errorf("client: call canceled: %w", err)
}

// UnavailableError says why no server could take a call.
type UnavailableError struct {
	Errs map[string]error // last error per endpoint address
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString(ErrUnavailable.Error())
	for addr, err := range e.Errs {
		fmt.Fprintf(&b, "; %s: %v", addr, err)
	}
	return b.String()
}

func (e *UnavailableError) Is(t error) bool { return t == ErrUnavailable }

// Unwrap exposes the endpoints' errors, so that errors.Is(err,
// ErrServerBusy) holds when a server refused the connection.
func (e *UnavailableError) Unwrap() []error {
	errs := make([]error, 0, len(e.Errs))
	for _, err := range e.Errs {
		errs = append(errs, err)
	}
	return errs
}

// remoteToCall turns a connection-level ERROR from the server into the
// client's error.
func connError(err error) error {
	var re *session.RemoteError
	if errors.As(err, &re) {
		return &CallError{Code: re.Code, Message: re.Message}
	}
	return err
}

// retryable reports whether a failed call was certainly not processed.
func retryable(err error) bool {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.Retryable()
	}
	return session.IsNotProcessed(err)
}

// notProcessed marks err, the failure of a call that was never sent, as
// safe to retry (unless it already says so).
func notProcessed(err error) error {
	if retryable(err) {
		return err
	}
	return session.NotProcessed(err)
}
