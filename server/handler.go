package server

import (
	"context"
	"errors"
	"fmt"
	"net"

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
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
}

// Handler answers requests. ServeTCP runs on one of the server's bounded
// workers; ctx is cancelled when the connection dies, when the request's
// deadline (the client's, capped by Config.HandlerTimeout) passes, and
// once ServeTCP has returned. The returned slice is copied before ServeTCP's
// caller moves on, so a handler may return a buffer it reuses, or req.Body.
//
// An error is sent to the client as an ERROR frame: an *Error keeps its code,
// an error wrapping context.DeadlineExceeded becomes CodeTimeout, anything
// else CodeApplication with the error's text. A panic is recovered and
// answered with CodeInternal.
type Handler interface {
	ServeTCP(ctx context.Context, req *Request) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// ServeTCP calls f.
func (f HandlerFunc) ServeTCP(ctx context.Context, req *Request) ([]byte, error) { return f(ctx, req) }

// Error is an error with a protocol code, returned by handlers to choose
// the code the client sees.
type Error struct {
	Code    wire.Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with a formatted message.
func Errorf(code wire.Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
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
func errorFrame(err error) (wire.Code, string) {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code, e.Message
	case errors.Is(err, context.DeadlineExceeded):
		return wire.CodeTimeout, err.Error()
	default:
		return wire.CodeApplication, err.Error()
	}
}
