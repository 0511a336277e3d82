package server

import (
	"context"
	"errors"
	"net"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Request is one call received by the server. The Request and its Body
// are recycled once the handler returns: a handler must not keep either.
type Request struct {
	// ID is the request id chosen by the client, unique on its connection.
	ID uint64
	// Method names the operation.
	Method string
	// Body is the request payload. It is valid only until the handler
	// returns: copy what must outlive it.
	Body []byte
	// Metadata is the request's metadata (trace context, credentials...),
	// nil when it has none.
	Metadata wire.Metadata
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// Conn is the connection the request came on (a *tls.Conn when the
	// server serves TLS: its ConnectionState names the client's
	// certificate). Handlers must not read from it or write to it. On the
	// event loop (Config.Transport) it stands for the connection: its
	// addresses are the connection's, Close closes it, and reads, writes
	// and deadlines fail.
	Conn net.Conn

	// ResponseMetadata, if set by the handler or an interceptor before
	// the handler returns, is sent with the answer (a RESPONSE, or an
	// ERROR). It must satisfy wire.Metadata.Validate: otherwise a RESPONSE
	// becomes an ERROR INTERNAL, and an ERROR goes without it.
	ResponseMetadata wire.Metadata
}

// Handler answers requests. ServeTCP runs on one of the server's worker
// goroutines (at most Config.Workers at once, kept for reuse: a goroutine
// that runs no request for one to two seconds ends), never on a
// connection's reader or an event loop. Since the goroutine runs other
// requests after this one, a handler leaves it as it found it: a handler
// that locks it to its thread (runtime.LockOSThread, to change the
// thread's namespace or credentials) unlocks it or restores the thread
// before it returns, and one that sets pprof labels on it
// (pprof.SetGoroutineLabels) sets them back (pprof.Do does). ctx is
// cancelled when the client cancels the request (CANCEL), when the
// connection ends, when the request's deadline (the client's, capped by
// Config.HandlerTimeout) passes, and once ServeTCP has returned. The returned slice is copied before
// ServeTCP's caller moves on, so a handler may return a buffer it reuses,
// or req.Body.
//
// An error is sent to the client as an ERROR frame: an *Error returned as
// such keeps its code (a code that refuses whole connections, such as BUSY,
// becomes CodeInternal); an *Error wrapped in another error keeps its code
// only if that code does not claim the request was not processed
// (OVERLOADED, SHUTTING_DOWN: the handler has run, so its caller must not
// retry it), and is CodeApplication otherwise; an error wrapping
// context.DeadlineExceeded becomes CodeTimeout; anything else
// CodeApplication with the error's text. A panic is recovered and answered
// with CodeInternal.
type Handler interface {
	ServeTCP(ctx context.Context, req *Request) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// ServeTCP calls f.
func (f HandlerFunc) ServeTCP(ctx context.Context, req *Request) ([]byte, error) { return f(ctx, req) }

// Interceptor wraps a request's handler: it may inspect or change the
// request and the answer, refuse the request with an error, or call next
// (the rest of the chain, ending with the Handler) — the shape of grpc-go's
// unary server interceptors. Interceptors run on the request's worker,
// inside the panic recovery.
type Interceptor func(ctx context.Context, req *Request, next Handler) ([]byte, error)

// chain builds the handler that runs the interceptors around h, the first
// outermost.
func chain(h Handler, ics []Interceptor) Handler {
	for i := len(ics) - 1; i >= 0; i-- {
		h = intercepted{ic: ics[i], next: h}
	}
	return h
}

type intercepted struct {
	ic   Interceptor
	next Handler
}

func (h intercepted) ServeTCP(ctx context.Context, req *Request) ([]byte, error) {
	return h.ic(ctx, req, h.next)
}

// Error is an ERROR frame's code and message: a handler returns one to
// choose the code its caller sees. It is session.Error, the one type of
// every ERROR frame, which the client's callers receive too.
type Error = session.Error

// Errorf returns an *Error with a formatted message.
func Errorf(code wire.Code, format string, args ...any) error {
	return session.Errorf(code, format, args...)
}

// Mux routes requests to handlers by method name.
type Mux struct {
	m map[string]Handler
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: make(map[string]Handler)} }

// Handle registers h for method. It panics on an invalid or duplicate
// method name, as net/http's ServeMux does: both are programming errors.
func (m *Mux) Handle(method string, h Handler) {
	if err := wire.ValidMethod(method); err != nil {
		panic(err)
	}
	if _, dup := m.m[method]; dup {
		panic("server: duplicate handler for method " + method)
	}
	m.m[method] = h
}

// HandleFunc registers f for method.
func (m *Mux) HandleFunc(method string, f func(ctx context.Context, req *Request) ([]byte, error)) {
	m.Handle(method, HandlerFunc(f))
}

// ServeTCP dispatches to the handler registered for req.Method, or answers
// CodeUnknownMethod.
func (m *Mux) ServeTCP(ctx context.Context, req *Request) ([]byte, error) {
	h, ok := m.m[req.Method]
	if !ok {
		return nil, Errorf(wire.CodeUnknownMethod, "no method %q", req.Method)
	}
	return h.ServeTCP(ctx, req)
}

// errorFrame maps a handler's error to the code and message sent.
//
// An *Error returned as such keeps its code. Wrapped in another error, it
// keeps it only if the code does not claim the request was not processed:
// a handler that returns fmt.Errorf("backend: %w", err) for a downstream
// call refused OVERLOADED has done its own work, and its caller must not
// retry it as never processed; it answers APPLICATION. Codes that only
// refuse whole connections (BUSY, FRAME_TOO_LARGE, PROTOCOL,
// UNSUPPORTED_VERSION, CONTROL_FLOOD) are never an answer: INTERNAL.
func errorFrame(err error) (wire.Code, string) {
	if e, ok := err.(*Error); ok {
		return answerCode(e.Code), e.Message
	}
	var e *Error
	switch {
	case errors.As(err, &e) && !e.Code.Retryable():
		return answerCode(e.Code), err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return wire.CodeTimeout, err.Error()
	default:
		return wire.CodeApplication, err.Error()
	}
}

// answerCode is code if it may answer a request, INTERNAL otherwise.
func answerCode(code wire.Code) wire.Code {
	switch code {
	case wire.CodeBusy, wire.CodeFrameTooLarge, wire.CodeProtocol, wire.CodeUnsupportedVersion, wire.CodeControlFlood:
		return wire.CodeInternal
	}
	return code
}

// ErrorCode is the code an error returned by a handler is answered with
// (0 for nil): for interceptors that record outcomes.
func ErrorCode(err error) wire.Code {
	if err == nil {
		return 0
	}
	code, _ := errorFrame(err)
	return code
}
