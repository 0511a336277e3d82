package verify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tcppro/tcppro/faultnet"
)

// helperEnv selects what the test binary is when it starts: unset, the
// tests; "1", the tcppro program as the scenarios use it (helperMain: the
// reference service or the client agent); "run", a `tcppro verify` of the
// scenarios named in its arguments, for the interruption test.
const helperEnv = "TCPPRO_VERIFY_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "1":
		os.Exit(helperMain(os.Args[1:]))
	case "run":
		os.Exit(helperRun(os.Args[1:]))
	}
	goleak.VerifyTestMain(nothingLeft{m})
}

// nothingLeft runs the tests, then fails the run if a namespace of this
// process is left behind.
type nothingLeft struct{ m *testing.M }

func (n nothingLeft) Run() int {
	code := n.m.Run()
	tlsOnce.mu.Lock()
	if tlsOnce.dir != "" {
		os.RemoveAll(tlsOnce.dir)
	}
	tlsOnce.mu.Unlock()
	if left := netnsOf(os.Getpid()); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "namespaces left behind by the tests: %v\n", left)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// netnsOf lists the lab namespaces (`ip netns list` reads /run/netns)
// owned by process pid.
func netnsOf(pid int) []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	prefix := fmt.Sprintf("tcpprofl-%d-", pid)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// testCommand runs this test binary as the tcppro program (helperMain).
func testCommand(ctx context.Context, h *faultnet.Host, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := h.Command(ctx, exe, args...)
	cmd.Env = append(CleanEnv(os.Environ()), helperEnv+"=1", raceEnv())
	return cmd
}

// raceEnv keeps a test binary built with -race from sleeping 1 s when it
// exits (GORACE atexit_sleep_ms defaults to 1000), which would count in
// the draining server's exit time.
func raceEnv() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// testCap is the baseline cap of the tests: short, so that CI stays fast;
// the rows say "> 3 s" honestly.
const testCap = 3 * time.Second

// helperRun is `tcppro verify --scenario NAMES` on the test binary: the
// lab is removed when SIGINT or SIGTERM arrives.
func helperRun(names []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var scenarios []Scenario
	for _, n := range names {
		s, ok := Lookup(n)
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown scenario", n)
			return 2
		}
		scenarios = append(scenarios, s)
	}
	results, err := RunAll(ctx, scenarios, Options{BaselineCap: testCap, Progress: os.Stderr, Command: testCommand})
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 130
	}
	_ = WriteTable(os.Stdout, results)
	return 0
}

// tlsOnce holds the TLS files of the tests' TLS runs: one CA and server
// certificate for the whole test process, in a directory removed when the
// tests end.
var tlsOnce struct {
	mu    sync.Mutex
	dir   string
	files *TLSFiles
	err   error
}

// testTLSFiles returns the test process's TLS files, creating them on first
// use.
func testTLSFiles(t *testing.T) *TLSFiles {
	t.Helper()
	tlsOnce.mu.Lock()
	defer tlsOnce.mu.Unlock()
	if tlsOnce.files == nil && tlsOnce.err == nil {
		tlsOnce.dir, tlsOnce.err = os.MkdirTemp("", "tcppro-verify-test-tls-")
		if tlsOnce.err == nil {
			tlsOnce.files, tlsOnce.err = NewTLSFiles(tlsOnce.dir)
		}
	}
	if tlsOnce.err != nil {
		t.Fatalf("creating the TLS files: %v", tlsOnce.err)
	}
	return tlsOnce.files
}
