package main

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/server"
)

func TestParseFlagsEnvironment(t *testing.T) {
	newFS := func() (*flag.FlagSet, *time.Duration, *int) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		return fs, fs.Duration("heartbeat-interval", time.Second, ""), fs.Int("max-conns", 10, "")
	}

	t.Setenv("TCPPRO_HEARTBEAT_INTERVAL", "250ms")
	t.Setenv("TCPPRO_MAX_CONNS", "7")
	fs, hb, mc := newFS()
	if err := parseFlags(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *hb != 250*time.Millisecond || *mc != 7 {
		t.Fatalf("from the environment: %v %d", *hb, *mc)
	}

	fs, hb, _ = newFS()
	if err := parseFlags(fs, []string{"--heartbeat-interval", "2s"}); err != nil {
		t.Fatal(err)
	}
	if *hb != 2*time.Second {
		t.Fatalf("the command line must win over the environment: %v", *hb)
	}

	t.Setenv("TCPPRO_MAX_CONNS", "lots")
	fs, _, _ = newFS()
	err := parseFlags(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "TCPPRO_MAX_CONNS") || !strings.Contains(err.Error(), "lots") {
		t.Fatalf("a malformed variable must be named with its value: %v", err)
	}
}

func TestReferenceService(t *testing.T) {
	h := referenceService()
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
