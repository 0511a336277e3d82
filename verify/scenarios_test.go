package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/faultnet"
)

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runScenario runs one scenario in its own lab, over plain TCP or (with
// tlsFiles) TLS, in parallel with the other scenario tests, and fails the
// test unless its row passes. It skips when the lab is unsupported here (or
// fails, with TCPPRO_FAULTNET_REQUIRE=1).
func runScenario(t *testing.T, name string, tlsFiles *TLSFiles) Result {
	t.Helper()
	t.Parallel()
	faultnet.ForTest(t) // skips (or fails) with the reason when unsupported
	s, ok := Lookup(name)
	if !ok {
		t.Fatalf("no scenario %q", name)
	}
	r, err := Run(context.Background(), s, Options{BaselineCap: testCap, Progress: logWriter{t}, Command: testCommand, TLS: tlsFiles})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = WriteTable(&b, []Result{r})
	t.Log("\n" + b.String())
	if r.Error != "" {
		t.Fatalf("%s could not run: %s", name, r.Error)
	}
	if !r.Pass {
		t.Errorf("%s FAILED: measured %s against %s: %s", name, r.measuredCell(), r.boundCell(), r.Detail)
	}
	if r.TLS != (tlsFiles != nil) {
		t.Errorf("%s: the row says TLS=%v", name, r.TLS)
	}
	return r
}

// eachTransport runs the scenario twice, in parallel: over plain TCP
// (subtest plain) and over TLS (subtest tls), checking each row with check.
func eachTransport(t *testing.T, name string, check func(t *testing.T, r Result)) {
	t.Parallel()
	t.Run("plain", func(t *testing.T) { check(t, runScenario(t, name, nil)) })
	t.Run("tls", func(t *testing.T) { check(t, runScenario(t, name, testTLSFiles(t))) })
}

// wantWithin checks the measured time against the bound.
func wantWithin(t *testing.T, r Result) {
	t.Helper()
	if r.MeasuredMS > r.BoundMS {
		t.Errorf("%s: measured %.0f ms, above the bound %.0f ms", r.Scenario, r.MeasuredMS, r.BoundMS)
	}
}

// wantBaselineCapped checks that the plain connection noticed nothing
// within the cap: what the lab produces is a fault TCP alone cannot see.
func wantBaselineCapped(t *testing.T, r Result) {
	t.Helper()
	if !r.BaselineCapped || r.BaselineMS != ms(testCap) {
		t.Errorf("%s: plain TCP baseline %v ms (capped %v), want nothing noticed within the %v cap", r.Scenario, r.BaselineMS, r.BaselineCapped, testCap)
	}
}

func TestLinkCutIdle(t *testing.T) {
	eachTransport(t, "link-cut-idle", func(t *testing.T, r Result) {
		if r.BoundMS != 2400 {
			t.Errorf("bound %v ms, want the 2 s heartbeat timeout × 1.2 = 2400 ms", r.BoundMS)
		}
		wantWithin(t, r)
		wantBaselineCapped(t, r)
	})
}

func TestLinkCutUnacked(t *testing.T) {
	eachTransport(t, "link-cut-unacked", func(t *testing.T, r Result) {
		wantWithin(t, r)
		wantBaselineCapped(t, r)
	})
}

func TestServerFrozen(t *testing.T) {
	eachTransport(t, "server-frozen", func(t *testing.T, r Result) {
		wantWithin(t, r)
		wantBaselineCapped(t, r)
	})
}

func TestConnectBlackhole(t *testing.T) {
	eachTransport(t, "connect-blackhole", func(t *testing.T, r Result) {
		if lo := ms(dialLo); r.MeasuredMS < lo || r.MeasuredMS > ms(dialHi) {
			t.Errorf("failed after %.0f ms, want %.0f to %.0f ms", r.MeasuredMS, lo, ms(dialHi))
		}
		wantBaselineCapped(t, r)
	})
}

func TestServerKilled(t *testing.T) {
	eachTransport(t, "server-killed", wantWithin)
}

func TestServerDrain(t *testing.T) {
	eachTransport(t, "server-drain", func(t *testing.T, r Result) {
		if !strings.HasPrefix(r.Measured, "0 failed/") {
			t.Errorf("measured %q, want 0 failed calls", r.Measured)
		}
	})
}

func TestConnCap(t *testing.T) {
	eachTransport(t, "conn-cap", wantWithin)
}

func TestPeerClose(t *testing.T) {
	eachTransport(t, "peer-close", wantWithin)
}

// TestInterruptLeavesNothing runs a scenario in a child process, as
// `tcppro verify` runs, and interrupts it (SIGINT, as Ctrl-C does) once its
// lab is built and its processes run: no namespace of the child's, and no
// process in one, may remain. It is not parallel: a faultnet.New elsewhere
// in this process would clean the child's leftovers as stale and hide them.
func TestInterruptLeavesNothing(t *testing.T) {
	faultnet.ForTest(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "server-frozen")
	cmd.Env = append(os.Environ(), helperEnv+"=run")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the lab to be in use: the freeze is logged once the server
	// process and the agent run in it.
	sc := bufio.NewScanner(stderr)
	var seen []string
	frozen := false
	serverPid := 0
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if _, after, ok := strings.Cut(sc.Text(), "freezing the server (pid "); ok {
			frozen = true
			serverPid, _ = strconv.Atoi(strings.TrimSuffix(after, ")"))
			break
		}
	}
	if !frozen {
		cmd.Wait()
		t.Fatalf("the scenario never reached the freeze:\n%s", strings.Join(seen, "\n"))
	}
	if got := netnsOf(cmd.Process.Pid); len(got) == 0 {
		t.Fatal("no namespace of the child's seen while it runs")
	}
	// A moment into the frozen phase; this synchronises nothing (the
	// interruption must leave nothing behind at any point).
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
			seen = append(seen, sc.Text())
		}
	}()
	err = cmd.Wait()
	var code int
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 130 {
		t.Errorf("interrupted run exited with %v, want status 130", err)
	}
	if got := netnsOf(cmd.Process.Pid); len(got) > 0 {
		t.Fatalf("namespaces left after an interrupted run: %v", got)
	}
	// The frozen server process in the lab is gone too (or a zombie
	// waiting for init).
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", serverPid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i < 0 || len(b) < i+3 || b[i+2] != 'Z' {
			t.Errorf("the lab's server process %d survived the interrupted run: %s", serverPid, b)
		}
	}
}
