package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tcppro/tcppro/session"
)

// Errors a call can end with. Each is matched with errors.Is; a call that
// failed with an ERROR frame from the server also matches errors.As with
// *CallError (session.Error, the one type of every ERROR frame).
var (
	// ErrPeerDead: the connection's heartbeat found the server dead while
	// the call was in flight. Whether it was processed is unknown.
	ErrPeerDead = session.ErrPeerDead
	// ErrConnClosed: the connection closed while the call was in flight.
	ErrConnClosed = session.ErrConnClosed
	// ErrWriteTimeout: the server stopped reading.
	ErrWriteTimeout = session.ErrWriteTimeout
	// ErrServerBusy: the server refused the connection at its cap (BUSY).
	ErrServerBusy = session.ErrBusy
	// ErrOverloaded: the server refused the call (OVERLOADED: no free
	// worker, its in-flight limit, its memory budget); not processed.
	ErrOverloaded = session.ErrOverloaded
	// ErrShuttingDown: the server refused the call or the connection
	// because it is shutting down, offline or draining (SHUTTING_DOWN);
	// not processed.
	ErrShuttingDown = session.ErrShuttingDown
	// ErrTimeout: the call's deadline passed. It also matches
	// context.DeadlineExceeded.
	ErrTimeout = session.ErrTimeout
	// ErrTooLarge: the call's body or metadata exceeds what the server
	// accepts; it was not sent.
	ErrTooLarge = session.ErrTooLarge
	// ErrUnavailable: no server could be reached; the error also wraps
	// the last connection error of each endpoint.
	ErrUnavailable = errors.New("client: no server available")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client: closed")
)

// CallError is an ERROR frame the server sent for a call.
type CallError = session.Error

// ctxError is the error of a call whose context ended: a timeout when its
// deadline passed, the context's own error (context.Canceled) otherwise.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("client: call timed out: %w", &session.DeadlineError{})
	}
	return fmt.Errorf("client: call canceled: %w", err)
}

// UnavailableError says why no server could take a call.
type UnavailableError struct {
	Errs    map[string]error // last error per endpoint address
	Resolve error            // the last resolution's error, if it failed
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString(ErrUnavailable.Error())
	if len(e.Errs) == 0 {
		b.WriteString(": the target names no server")
	}
	if e.Resolve != nil {
		fmt.Fprintf(&b, "; resolving: %v", e.Resolve)
	}
	for addr, err := range e.Errs {
		fmt.Fprintf(&b, "; %s: %v", addr, err)
	}
	return b.String()
}

func (e *UnavailableError) Is(t error) bool { return t == ErrUnavailable }

// Unwrap exposes the endpoints' errors, so that errors.Is(err,
// ErrServerBusy) holds when a server refused the connection.
func (e *UnavailableError) Unwrap() []error {
	errs := make([]error, 0, len(e.Errs)+1)
	if e.Resolve != nil {
		errs = append(errs, e.Resolve)
	}
	for _, err := range e.Errs {
		errs = append(errs, err)
	}
	return errs
}

// refused reports an error by which a server refused a call it did not
// process for lack of capacity (BUSY, OVERLOADED, SHUTTING_DOWN): retrying
// it at once would add to the overload, so retries back off and spend the
// retry budget. Calls above a GOAWAY's last id are retried at once.
func refused(err error) bool {
	var e *session.Error
	return errors.As(err, &e) && e.Code.Retryable()
}
