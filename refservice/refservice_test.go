package refservice

import (
	"context"
	"testing"
	"time"

	"github.com/tcppro/tcppro/server"
)

func TestReferenceService(t *testing.T) {
	h := Handler()
	call := func(ctx context.Context, method, body string) (string, error) {
		resp, err := h.ServeTCP(ctx, &server.Request{Method: method, Body: []byte(body)})
		return string(resp), err
	}
	if got, err := call(context.Background(), "echo", "hi"); err != nil || got != "hi" {
		t.Fatalf("echo: %q %v", got, err)
	}
	if got, err := call(context.Background(), "sleep", "1ms"); err != nil || got != "slept 1ms" {
		t.Fatalf("sleep 1ms: %q %v", got, err)
	}
	if got, err := call(context.Background(), "sleep", "2"); err != nil || got != "slept 2ms" {
		t.Fatalf("sleep 2 (milliseconds): %q %v", got, err)
	}
	if _, err := call(context.Background(), "sleep", "soon"); err == nil {
		t.Fatal("a bad duration was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := call(ctx, "sleep", "1h"); err != context.DeadlineExceeded {
		t.Fatalf("sleep must end with its context: %v", err)
	}
	if _, err := call(context.Background(), "nope", ""); err == nil {
		t.Fatal("an unknown method was accepted")
	}
}
