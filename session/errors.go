package session

import (
	"errors"
	"fmt"

	"github.com/tcppro/tcppro/wire"
)

// Errors a connection ends with; every call in flight on it fails with an
// error that wraps the same value.
var (
	// ErrPeerDead: nothing arrived within the heartbeat bound. The peer's
	// host, link or process is gone or frozen.
	ErrPeerDead = errors.New("session: peer dead: no frame within the heartbeat timeout")
	// ErrWriteTimeout: queued output made no progress for WriteTimeout; the
	// peer stopped reading.
	ErrWriteTimeout = errors.New("session: write timeout: peer stopped reading")
	// ErrFrameTimeout: a frame started arriving and did not complete within
	// FrameReadTimeout.
	ErrFrameTimeout = errors.New("session: frame read timeout")
	// ErrConnClosed: the connection was closed (by us, or by the peer's FIN
	// or reset).
	ErrConnClosed = errors.New("session: connection closed")
	// ErrGoAway: the request was not sent, or was above the last id in the
	// peer's GOAWAY: it was certainly not processed and may be retried.
	ErrGoAway = errors.New("session: connection going away")
)

// RemoteError is an ERROR frame received from the peer, either for one
// request (ID != 0) or for the whole connection (ID == 0).
type RemoteError struct {
	ID      uint64
	Code    wire.Code
	Message string
}

func (e *RemoteError) Error() string {
	if e.ID == 0 {
		return fmt.Sprintf("peer closed the connection: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("remote error %s: %s", e.Code, e.Message)
}

// Retryable reports whether the request was certainly not processed.
func (e *RemoteError) Retryable() bool { return e.Code.Retryable() }

// notProcessed wraps a cause to mark a request that was certainly not
// processed by the peer and may be retried elsewhere.
type notProcessed struct{ err error }

func (e notProcessed) Error() string { return e.err.Error() + " (not processed)" }
func (e notProcessed) Unwrap() error { return e.err }

// NotProcessed marks err as the failure of a request the peer certainly did
// not process.
func NotProcessed(err error) error { return notProcessed{err} }

// IsNotProcessed reports whether err says the request was certainly not
// processed and so can be retried safely.
func IsNotProcessed(err error) bool {
	var np notProcessed
	if errors.As(err, &np) {
		return true
	}
	var re *RemoteError
	return errors.As(err, &re) && re.Retryable()
}
