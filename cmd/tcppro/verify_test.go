package main

import (
	"os"
	"path/filepath"
	"testing"
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
