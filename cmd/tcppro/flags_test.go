package main

import (
	"errors"
	"flag"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
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

func TestByteSizes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"65536", 65536}, {"64KiB", 64 << 10}, {"64K", 64 << 10}, {"4MiB", 4 << 20}, {"4 MB", 4 << 20},
		{"1GiB", 1 << 30}, {"-1", -1}, {"0", 0}, {"100B", 100},
	} {
		got, err := parseBytes(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "lots", "1.5MiB", "KiB", "9999999999GiB"} {
		if v, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", bad, v)
		}
	}
	for v, want := range map[int64]string{65536: "64KiB", 4 << 20: "4MiB", 1 << 30: "1GiB", 1000: "1000", 0: "0", -1: "-1"} {
		if got := formatBytes(v); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", v, got, want)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := bytesFlag(fs, "size", 1<<20, 0, math.MaxUint32, "")
	if err := fs.Parse([]string{"--size", "8KiB"}); err != nil || *v != 8<<10 {
		t.Fatalf("--size 8KiB: %d %v", *v, err)
	}
	if err := fs.Parse([]string{"--size", "4GiB"}); err == nil || !strings.Contains(err.Error(), "-size") {
		t.Fatalf("a size above the flag's maximum: %v, want an error naming the flag", err)
	}
}

func TestFlagErrorNamesTheFlag(t *testing.T) {
	fields := map[string]string{"HeartbeatTimeout": "heartbeat-timeout", "HeartbeatInterval": "heartbeat-interval",
		"MaxConnAge": "max-conn-age", "MaxConnAgeJitter": "max-conn-age-jitter"}
	err := flagError(&session.ConfigError{Field: "HeartbeatTimeout", Value: time.Second, Reason: "must exceed HeartbeatInterval (5s)"}, fields)
	if want := "--heartbeat-timeout=1s: must exceed --heartbeat-interval (5s)"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	err = flagError(&session.ConfigError{Field: "MaxConnAgeJitter", Value: 2.0, Reason: "MaxConnAgeJitter, not MaxConnAge"}, fields)
	if want := "--max-conn-age-jitter=2: --max-conn-age-jitter, not --max-conn-age"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	other := &session.ConfigError{Field: "Unknown", Value: 1, Reason: "x"}
	var ce *session.ConfigError
	if err := flagError(other, fields); !errors.As(err, &ce) || ce != other {
		t.Errorf("an error about a field without a flag must pass unchanged: %v", err)
	}
}
