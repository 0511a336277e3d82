package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestHandlerErrorCodes guards the codes a handler's error is answered
// with: a handler that did its work and returns a downstream refusal
// wrapped in its own error must not answer OVERLOADED (its caller would
// retry a processed request), and codes that refuse whole connections are
// never an answer.
func TestHandlerErrorCodes(t *testing.T) {
	var runs atomic.Int64
	downstream := &server.Error{Code: wire.CodeOverloaded, Message: "backend busy"}
	m := server.NewMux()
	m.HandleFunc("wrapped", func(context.Context, *server.Request) ([]byte, error) {
		runs.Add(1)
		return nil, fmt.Errorf("backend: %w", downstream)
	})
	m.HandleFunc("direct", func(context.Context, *server.Request) ([]byte, error) {
		return nil, &server.Error{Code: wire.CodeOverloaded, Message: "shedding"}
	})
	m.HandleFunc("busy", func(context.Context, *server.Request) ([]byte, error) {
		return nil, &server.Error{Code: wire.CodeBusy, Message: "not an answer"}
	})
	m.HandleFunc("timeout", func(context.Context, *server.Request) ([]byte, error) {
		return nil, fmt.Errorf("slow backend: %w", &server.Error{Code: wire.CodeTimeout, Message: "late"})
	})
	ts := startServer(t, baseConfig(), m)
	c := newClient(t, client.Config{Addrs: []string{ts.addr}, MaxRetries: 3})
	for _, tc := range []struct {
		method string
		code   wire.Code
		safe   bool
	}{
		{"wrapped", wire.CodeApplication, false},
		{"direct", wire.CodeOverloaded, true},
		{"busy", wire.CodeInternal, false},
		{"timeout", wire.CodeTimeout, false},
	} {
		_, err := call(t, c, tc.method, nil)
		var e *client.CallError
		if !errors.As(err, &e) || e.Code != tc.code || session.RetrySafe(err) != tc.safe {
			t.Errorf("%s: err %v, want code %v (retry safe %t)", tc.method, err, tc.code, tc.safe)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler that did its work ran %d times, want 1 (never retried)", n)
	}
}
