package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcppro/tcppro/verify"
)

func TestVerifyTLSFlag(t *testing.T) {
	f, _, ok := parseVerifyFlags([]string{"--tls", "--scenario", "conn-cap"})
	if !ok || !f.tls || len(f.scenarios) != 1 {
		t.Fatalf("--tls --scenario conn-cap: %+v %v", f, ok)
	}
	t.Setenv("TCPPRO_TLS", "true")
	if f, _, ok := parseVerifyFlags(nil); !ok || !f.tls {
		t.Fatalf("TCPPRO_TLS=true: %+v %v", f, ok)
	}
}

// TestVerifyRemovesLeftTLSFiles: the TLS files of a run that ended without
// its own cleanup (named after its pid) are removed by the supervisor, and
// nobody else's.
func TestVerifyRemovesLeftTLSFiles(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	const pid = 999999999 // no process has it: pid_max is at most 2^22
	left, err := os.MkdirTemp("", tlsDirPattern(pid))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left, "server-key.pem"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := os.MkdirTemp("", tlsDirPattern(pid+1))
	if err != nil {
		t.Fatal(err)
	}
	removeTLSDirs(pid)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("the run's TLS directory is still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another run's TLS directory was removed: %v", err)
	}
}

func TestVerifySoakFlags(t *testing.T) {
	f, _, ok := parseVerifyFlags([]string{"--soak", "5m", "--seed", "7", "--transport", "netconn", "--soak-conns", "2000", "--soak-rate", "50", "--heartbeat-timeout", "4s", "--json"})
	if !ok || f.soak == nil || !f.asJSON {
		t.Fatalf("--soak 5m ...: %+v %v", f, ok)
	}
	so := *f.soak
	if so.Duration != 5*time.Minute || so.Seed != 7 || so.Transport != "netconn" || so.Conns != 2000 || so.Rate != 50 || so.HeartbeatTimeout != 4*time.Second {
		t.Errorf("soak options: %+v", so)
	}
	if f, _, ok := parseVerifyFlags([]string{"--soak", "2m"}); !ok || f.soak.Transport != "epoll" || f.soak.Conns != verify.DefaultSoakConns ||
		f.soak.HeartbeatTimeout != verify.DefaultSoakHeartbeatTimeout {
		t.Errorf("--soak 2m: %+v %v", f.soak, ok)
	}
	for _, args := range [][]string{
		{"--seed", "3"},                             // a soak flag without --soak
		{"--transport", "epoll"},                    // likewise
		{"--soak", "5m", "--tls"},                   // a scenarios' flag with --soak
		{"--soak", "5m", "--scenario", "x"},         // likewise
		{"--soak", "10s"},                           // too short
		{"--soak", "31m"},                           // too long
		{"--soak", "5m", "--soak-conns", "1000000"}, // over the open-file limit
		{"--soak", "5m", "--transport", "udp"},
	} {
		if _, code, ok := parseVerifyFlags(args); ok || code != 2 {
			t.Errorf("%q: ok %v, code %d; want a usage error", args, ok, code)
		}
	}
}
