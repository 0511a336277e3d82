package session_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// allCodes is every ERROR code the protocol defines.
var allCodes = []wire.Code{
	wire.CodeBusy, wire.CodeFrameTooLarge, wire.CodeProtocol, wire.CodeUnknownMethod,
	wire.CodeApplication, wire.CodeTimeout, wire.CodeOverloaded, wire.CodeShuttingDown,
	wire.CodeInternal, wire.CodeUnsupportedVersion, wire.CodeControlFlood,
}

// sentinels is every error an *Error may match.
var sentinels = map[string]error{
	"ErrBusy":                  session.ErrBusy,
	"ErrOverloaded":            session.ErrOverloaded,
	"ErrShuttingDown":          session.ErrShuttingDown,
	"ErrUnsupportedVersion":    session.ErrUnsupportedVersion,
	"ErrTimeout":               session.ErrTimeout,
	"context.DeadlineExceeded": context.DeadlineExceeded,
	"ErrConnClosed":            session.ErrConnClosed,
	"ErrPeerDead":              session.ErrPeerDead,
	"ErrGoAway":                session.ErrGoAway,
	"ErrControlFlood":          session.ErrControlFlood,
}

// TestErrorIs guards Error.Is: an ERROR matches the sentinel of its code
// and no other, TIMEOUT matches context.DeadlineExceeded too, and a
// connection-level ERROR (Conn) matches ErrConnClosed as well, wrapped or
// not.
func TestErrorIs(t *testing.T) {
	byCode := map[wire.Code][]string{
		wire.CodeBusy:               {"ErrBusy"},
		wire.CodeOverloaded:         {"ErrOverloaded"},
		wire.CodeShuttingDown:       {"ErrShuttingDown"},
		wire.CodeUnsupportedVersion: {"ErrUnsupportedVersion"},
		wire.CodeTimeout:            {"ErrTimeout", "context.DeadlineExceeded"},
	}
	for _, code := range allCodes {
		for _, conn := range []bool{false, true} {
			want := map[string]bool{}
			for _, name := range byCode[code] {
				want[name] = true
			}
			if conn {
				want["ErrConnClosed"] = true
			}
			e := &session.Error{Code: code, Message: "m", Conn: conn}
			for _, err := range []error{e, fmt.Errorf("call: %w", e)} {
				for name, target := range sentinels {
					if got := errors.Is(err, target); got != want[name] {
						t.Errorf("errors.Is(%v (Conn %v), %s) = %v, want %v", err, conn, name, got, want[name])
					}
				}
				var as *session.Error
				if !errors.As(err, &as) || as != e {
					t.Errorf("errors.As(%v, *session.Error) does not find it", err)
				}
			}
		}
	}
}

// TestErrorMessage guards what an ERROR says: its code and message, and
// for a connection-level one that the connection ended.
func TestErrorMessage(t *testing.T) {
	e := session.Errorf(wire.CodeApplication, "no such user %q", "ann")
	if e.Code != wire.CodeApplication || e.Message != `no such user "ann"` || e.Conn {
		t.Errorf("Errorf = %+v", e)
	}
	if got := e.Error(); !strings.Contains(got, "APPLICATION") || !strings.Contains(got, `no such user "ann"`) {
		t.Errorf("Error() = %q, want the code and the message", got)
	}
	c := &session.Error{Code: wire.CodeBusy, Message: "at the cap", Conn: true}
	if got := c.Error(); !strings.Contains(got, "BUSY") || !strings.Contains(got, "at the cap") || !strings.Contains(got, "connection") {
		t.Errorf("Error() = %q, want the code, the message and that the connection ended", got)
	}
}

// TestRetrySafe guards the one place retry safety is decided: answers
// whose code says "not processed", connection-level ERRORs that refused
// the whole connection, and failures marked NotProcessed are safe to
// retry; nothing else is.
func TestRetrySafe(t *testing.T) {
	for _, code := range allCodes {
		if code == wire.CodeBusy || code == wire.CodeUnsupportedVersion {
			continue // connection-level codes only (TestRetrySafeConnLevel)
		}
		want := code == wire.CodeOverloaded || code == wire.CodeShuttingDown
		e := &session.Error{Code: code, Message: "m"}
		if got := session.RetrySafe(e); got != want {
			t.Errorf("RetrySafe(answer %v) = %v, want %v", code, got, want)
		}
		if got := session.RetrySafe(fmt.Errorf("call: %w", e)); got != want {
			t.Errorf("RetrySafe(wrapped answer %v) = %v, want %v", code, got, want)
		}
	}
	for _, err := range []error{
		nil,
		errors.New("some failure"),
		session.ErrPeerDead,
		session.ErrConnClosed,
		session.ErrWriteTimeout,
		session.ErrTimeout,
		&session.DeadlineError{Sent: true},
		context.Canceled,
	} {
		if session.RetrySafe(err) {
			t.Errorf("RetrySafe(%v) = true: whether it was processed is unknown", err)
		}
	}
}

// TestRetrySafeConnLevel guards the rule for connection-level ERRORs (id
// 0): BUSY, SHUTTING_DOWN and UNSUPPORTED_VERSION refuse the whole
// connection before anything on it was processed, so every call on it is
// safe to retry; any other code ends a connection whose calls in flight
// may have been processed — OVERLOADED included, though an answer with
// that code is safe.
func TestRetrySafeConnLevel(t *testing.T) {
	for _, code := range allCodes {
		want := code == wire.CodeBusy || code == wire.CodeShuttingDown || code == wire.CodeUnsupportedVersion
		e := &session.Error{Code: code, Message: "m", Conn: true}
		if got := session.RetrySafe(e); got != want {
			t.Errorf("RetrySafe(connection-level %v) = %v, want %v", code, got, want)
		}
		if got := session.RetrySafe(fmt.Errorf("read: %w", e)); got != want {
			t.Errorf("RetrySafe(wrapped connection-level %v) = %v, want %v", code, got, want)
		}
		// A call the connection never sent is safe whatever ended it.
		if np := session.NotProcessed(e); !session.RetrySafe(np) || !errors.Is(np, e) {
			t.Errorf("NotProcessed(connection-level %v) = %v: RetrySafe %v, want true and the error kept", code, np, session.RetrySafe(np))
		}
	}
}

// TestNotProcessed guards the marking of failures that certainly were not
// processed: RetrySafe accepts them, wrapped further or not; the error
// marked still matches (errors.Is); nil stays nil, and an error already
// safe is returned unchanged.
func TestNotProcessed(t *testing.T) {
	if session.NotProcessed(nil) != nil {
		t.Error("NotProcessed(nil) != nil")
	}
	for _, base := range []error{session.ErrConnClosed, session.ErrGoAway, session.ErrPeerDead, errors.New("dial refused")} {
		np := session.NotProcessed(base)
		if !session.RetrySafe(np) || !session.RetrySafe(fmt.Errorf("call: %w", np)) {
			t.Errorf("RetrySafe(NotProcessed(%v)) = false", base)
		}
		if !errors.Is(np, base) {
			t.Errorf("NotProcessed(%v) no longer matches it", base)
		}
		if !strings.Contains(np.Error(), base.Error()) || !strings.Contains(np.Error(), "not processed") {
			t.Errorf("NotProcessed(%v).Error() = %q, want the error and that it was not processed", base, np.Error())
		}
	}
	safe := &session.Error{Code: wire.CodeOverloaded, Message: "m"}
	if got := session.NotProcessed(safe); got != error(safe) {
		t.Errorf("NotProcessed of a retry-safe error = %v, want it unchanged", got)
	}
}

// TestDeadlineError guards a call's deadline error: it matches ErrTimeout
// and context.DeadlineExceeded, wrapped or not, sent or not, and says
// whether the request had been sent.
func TestDeadlineError(t *testing.T) {
	for _, sent := range []bool{false, true} {
		de := &session.DeadlineError{Sent: sent}
		for _, err := range []error{de, fmt.Errorf("call: %w", de)} {
			if !errors.Is(err, session.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%v (sent %v): want errors.Is ErrTimeout and context.DeadlineExceeded", err, sent)
			}
			if errors.Is(err, session.ErrConnClosed) || errors.Is(err, context.Canceled) {
				t.Errorf("%v matches ErrConnClosed or context.Canceled", err)
			}
		}
	}
	if (&session.DeadlineError{Sent: true}).Error() == (&session.DeadlineError{}).Error() {
		t.Error("a deadline error says the same whether the request was sent or not")
	}
}
