package doctor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/sysinfo"

	"go.uber.org/goleak"
)

// helperEnv selects a helper mode when the test binary re-executes itself,
// so the sockets under test belong to a process other than the test's own.
const helperEnv = "TCPPRO_DOCTOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	goleak.VerifyTestMain(m)
}

// helper listens on 127.0.0.1 on a kernel-chosen port (which comes from the
// ephemeral range), prints the port, and lives until its stdin closes. In
// mode "closewait" it also accepts every connection and never reads from
// or closes it: a CLOSE_WAIT leak.
func helper(mode string) int {
	lc := net.ListenConfig{KeepAlive: -1} // no probes that could end the sockets early
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if mode == "closewait" {
		var held []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c) // never closed
			}
		}()
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// startHelper runs a helper child and returns its PID and port. The child
// is killed and reaped when the test ends.
func startHelper(t *testing.T, mode string) (pid, port int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux /proc")
	}
	if _, err := sysinfo.Host().LocalPortRange(); err != nil {
		t.Skipf("no live /proc: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		port, err = strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("helper printed %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("helper did not report its port")
	}
	return cmd.Process.Pid, port
}

// poll runs the doctor on the live host until cond accepts a check, or
// fails the test after a bounded wait.
func poll(t *testing.T, opts Options, id string, cond func(Check) bool) Check {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, ok := Run(opts).Find(id)
		if !ok {
			t.Fatalf("no check %s", id)
		}
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never matched; last: %+v", id, c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func comm(t *testing.T, pid int) string {
	p, err := sysinfo.Host().Process(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.Comm
}

func TestLiveEphemeralListener(t *testing.T) {
	pid, port := startHelper(t, "listen")
	if pid == os.Getpid() {
		t.Fatal("helper shares our PID")
	}
	h := sysinfo.Host()
	rng, err := h.LocalPortRange()
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.ReservedPorts()
	if err != nil {
		t.Fatal(err)
	}
	if !rng.Contains(port) || res.Contains(port) {
		t.Skipf("kernel gave port %d, outside %v or reserved (%v)", port, rng, res)
	}
	want := fmt.Sprintf("port %d by %s (pid %d)", port, comm(t, pid), pid)
	c := poll(t, Options{Ports: []int{port}}, "ephemeral-listeners", func(c Check) bool {
		return strings.Contains(c.Found, want)
	})
	if c.Status != Warn || !strings.Contains(c.Fix, strconv.Itoa(port)) {
		t.Errorf("ephemeral-listeners: %+v", c)
	}
	p, _ := Run(Options{Ports: []int{port}}).Find(fmt.Sprintf("planned-port-%d", port))
	if p.Status != Fail {
		t.Errorf("planned port %d: %+v", port, p)
	}
}

func TestLiveCloseWaitLeak(t *testing.T) {
	pid, port := startHelper(t, "closewait")
	const n = 3
	for range n {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close() // our FIN puts the helper's socket in CLOSE_WAIT, for ever
	}
	who := fmt.Sprintf("%s (pid %d)", comm(t, pid), pid)
	c := poll(t, Options{}, "close-wait", func(c Check) bool {
		return strings.Contains(c.Found, fmt.Sprintf("%s holds %d", who, n))
	})
	if c.Status == OK || !strings.Contains(c.Fix, "restart process "+who) {
		t.Errorf("close-wait: %+v", c)
	}
}
