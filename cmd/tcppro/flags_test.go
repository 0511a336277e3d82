package main

import (
	"flag"
	"strings"
	"testing"
	"time"
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
