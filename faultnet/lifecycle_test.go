package faultnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netnsWithPrefix lists, with `ip netns list`, the namespaces whose name
// starts with prefix.
func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			found = append(found, f[0])
		}
	}
	return found
}

func interfaceNames(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

func TestFreezeThawKill(t *testing.T) {
	t.Parallel()
	lab := ForTest(t)
	h, err := lab.AddHost("h")
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	state := func() byte {
		s, _, err := procStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	if err := Freeze(pid); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != 'T' {
		t.Fatalf("after Freeze: state %c, want T", s)
	}
	if err := Thaw(pid); err != nil {
		t.Fatal(err)
	}
	if s := state(); s == 'T' || s == 'Z' {
		t.Fatalf("after Thaw: state %c", s)
	}
	if err := Freeze(pid); err != nil {
		t.Fatal(err)
	}
	if err := Kill(pid); err != nil { // a frozen process dies too
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("after Kill: %v, want killed", err)
	}
	if err := Thaw(pid); err == nil {
		t.Error("Thaw of a reaped process succeeded")
	}

	for _, bad := range []int{0, 1, -1, os.Getpid()} {
		if err := Freeze(bad); err == nil {
			t.Errorf("Freeze(%d) accepted", bad)
		}
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	before := interfaceNames(t)
	lab := ForTest(t) // its cleanup's Close is a no-op after ours
	a, err := lab.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	c, err := lab.AddHost("c")
	if err != nil {
		t.Fatal(err)
	}
	ab, err := lab.Link(a, b)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := lab.Link(b, c)
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr() != ab.Addr(b) || bc.Addr(b) == ab.Addr(b) || bc.Peer(b) != c || ab.Addr(c).IsValid() {
		t.Fatalf("addresses: b %v on ab, %v on bc", ab.Addr(b), bc.Addr(b))
	}
	if err := ab.Cut(); err != nil {
		t.Fatal(err)
	}
	if err := c.BlackholeSYN(0); err != nil {
		t.Fatal(err)
	}
	// A process left running inside the lab.
	cmd := c.Command(context.Background(), "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	if got := netnsWithPrefix(t, lab.Prefix()); len(got) != 3 {
		t.Fatalf("namespaces while open: %v", got)
	}
	// Nothing appeared in the root namespace.
	if after := interfaceNames(t); !slices.Equal(before, after) {
		t.Fatalf("root namespace interfaces changed: %v -> %v", before, after)
	}

	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if got := netnsWithPrefix(t, lab.Prefix()); len(got) != 0 {
		t.Fatalf("namespaces left after Close: %v", got)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("process left in the lab: %v, want killed by Close", err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Everything fails cleanly afterwards.
	for name, err := range map[string]error{
		"AddHost":      func() error { _, err := lab.AddHost("d"); return err }(),
		"Link":         func() error { _, err := lab.Link(a, c); return err }(),
		"Cut":          ab.Cut(),
		"Restore":      ab.Restore(),
		"BlackholeSYN": a.BlackholeSYN(1),
		"Do":           a.Do(func() error { return nil }),
		"Command":      a.Command(context.Background(), "true").Run(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestCloseOnContextEnd(t *testing.T) {
	t.Parallel()
	ForTest(t) // skips if unsupported
	ctx, cancel := context.WithCancel(context.Background())
	lab, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	h, err := lab.AddHost("h")
	if err != nil {
		t.Fatal(err)
	}
	cancel() // as signal.NotifyContext does on Ctrl-C
	select {
	case <-lab.closedCh:
	case <-time.After(waitLimit):
		t.Fatal("lab not closed after its context ended")
	}
	if err := h.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after the context ended: %v, want ErrClosed", err)
	}
	if got := netnsWithPrefix(t, lab.Prefix()); len(got) != 0 {
		t.Fatalf("namespaces left: %v", got)
	}
}

func TestCleanStale(t *testing.T) {
	t.Parallel()
	lab := ForTest(t)
	live, err := lab.AddHost("live")
	if err != nil {
		t.Fatal(err)
	}
	// A dead owner: a process that has exited and been reaped.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	_, selfStart, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	stale := []string{
		fmt.Sprintf("%s%d-%d-deadbeef-x", namePrefix, dead.Process.Pid, 1),
		// Our pid with another start time: a reused pid, a dead owner.
		fmt.Sprintf("%s%d-%d-deadbeef-y", namePrefix, os.Getpid(), selfStart+1),
	}
	for _, ns := range stale {
		if err := lab.run.ip(nil, "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.run.deleteNetns(ns) })
	}
	// A process left running in a stale namespace is killed.
	cmd := exec.Command("ip", "netns", "exec", stale[0], "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	if err := CleanStale(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range stale {
		if got := netnsWithPrefix(t, ns); len(got) != 0 {
			t.Errorf("stale namespace %s not removed", ns)
		}
	}
	if got := netnsWithPrefix(t, live.Netns()); len(got) != 1 {
		t.Errorf("live namespace %s removed", live.Netns())
	}
	if err := cmd.Wait(); err == nil {
		t.Error("process in a stale namespace not killed")
	}
}

// helperEnv makes TestHelperFails run: as a child process, it builds a lab
// and fails, so that TestNothingLeftOnFailure can check what remains.
const helperEnv = "FAULTNET_TEST_HELPER"

func TestHelperFails(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("runs only as a child of TestNothingLeftOnFailure")
	}
	_, a, _, lk := pair(t)
	if err := lk.Cut(); err != nil {
		t.Fatal(err)
	}
	cmd := a.Command(context.Background(), "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("lab built")
	switch mode {
	case "fatal":
		t.Fatal("deliberate failure")
	case "panic":
		panic("deliberate panic")
	}
}

// TestNothingLeftOnFailure is not parallel: a concurrent New elsewhere in
// this process would clean the dead child's leftovers as stale and hide
// them.
func TestNothingLeftOnFailure(t *testing.T) {
	ForTest(t) // skips if unsupported
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperFails$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "lab built") || !strings.Contains(string(out), "deliberate") {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			if got := netnsWithPrefix(t, fmt.Sprintf("%s%d-", namePrefix, cmd.Process.Pid)); len(got) != 0 {
				t.Fatalf("left behind by a test that failed (%s): %v\n%s", mode, got, out)
			}
		})
	}
}
