package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/internal/syncbuf"

	"go.uber.org/goleak"
)

// TestMain lets the test binary play the tcppro command: a child started
// with TCPPRO_TEST_MAIN=1 runs main with its arguments.
func TestMain(m *testing.M) {
	if os.Getenv("TCPPRO_TEST_MAIN") == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

func tcppro(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TCPPRO_TEST_MAIN=1")
	return cmd
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// servedProc is a `tcppro serve` child process.
type servedProc struct {
	cmd   *exec.Cmd
	addr  string
	admin string // the admin plane's address
	logs  *syncbuf.Buffer
	done  chan error // receives Wait's result once; put back by whoever takes it
}

// startServe starts `tcppro serve` on a free loopback port with the admin
// plane on another, plus args, and waits until it accepts connections. It
// is killed when the test ends.
func startServe(t *testing.T, args ...string) *servedProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := &servedProc{
		cmd:   tcppro(append([]string{"serve", "--listen", addr, "--admin", admin, "--allow-ephemeral-port"}, args...)...),
		addr:  addr,
		admin: admin,
		logs:  &syncbuf.Buffer{},
		done:  make(chan error, 1),
	}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("serve exited (%v) before listening:\n%s", err, s.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never listened: %v\n%s", err, s.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling the listener
	}
}

// TestServeAndCall runs the README's first two commands as processes:
// serve, call it, and stop it with SIGTERM (graceful, exit 0).
func TestServeAndCall(t *testing.T) {
	s := startServe(t)
	addr, serve, done := s.addr, s.cmd, s.done
	out, err := tcppro("call", "--addr", addr, "hello").Output()
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	line, _ := bufio.NewReader(bytes.NewReader(out)).ReadString('\n')
	if f := strings.Split(strings.TrimSpace(line), "\t"); len(f) != 4 || f[1] != "ok" || f[3] != "hello" {
		t.Fatalf("call printed %q", out)
	}
	if out, err := tcppro("call", "--addr", addr, "--count", "200", "--concurrency", "8", "--quiet", "x").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "200 calls, 0 failed") {
		t.Fatalf("call --count: %v\n%s", err, out)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM\n%s", err, s.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if logs := s.logs.String(); !strings.Contains(logs, "effective") && !strings.Contains(logs, "starting") {
		t.Fatalf("the effective configuration was not logged:\n%s", logs)
	}
	// A default start warns about nothing (the admin plane's metrics are
	// wired in, interceptor included).
	if logs := s.logs.String(); strings.Contains(logs, "level=WARN") {
		t.Errorf("serve warned at a default start:\n%s", logs)
	}
}

// TestServeDrainDelay: with --drain-delay, SIGTERM turns /readyz 503 at
// once while open connections keep serving, and the process exits
// (gracefully) only after the delay; --shutdown-timeout counts from the
// GOAWAY, after the delay, so that a call in flight longer than the
// timeout but shorter than both together is answered.
func TestServeDrainDelay(t *testing.T) {
	const delay, timeout, sleep = 3 * time.Second, 3 * time.Second, 4500 * time.Millisecond
	s := startServe(t, "--drain-delay", delay.String(), "--shutdown-timeout", timeout.String())
	c, err := client.New(client.Config{Addrs: []string{s.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(context.Background(), "echo", []byte("before")); err != nil {
		t.Fatal(err)
	}
	slept := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "sleep", []byte(sleep.String()))
		slept <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); c.Endpoints()[0].InFlight == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the sleep call was not in flight within 5s")
		}
		time.Sleep(5 * time.Millisecond) // polling the client's counters
	}
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	for code != 503 && time.Since(start) < delay {
		if code, body = httpDo(t, "GET", "http://"+s.admin+"/readyz"); code != 503 {
			time.Sleep(10 * time.Millisecond) // polling readiness
		}
	}
	if code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz after SIGTERM: %d %q, want 503 shutting down", code, body)
	}
	if _, err := c.Call(context.Background(), "echo", []byte("during the delay")); err != nil {
		t.Errorf("a call on the open connection during the drain delay: %v", err)
	}
	if err := <-slept; err != nil {
		t.Errorf("a %v call in flight through a %v drain delay and a %v shutdown timeout: %v", sleep, delay, timeout, err)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM\n%s", err, s.logs)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("serve exited %v after SIGTERM, before its drain delay (%v)", took, delay)
		}
	case <-time.After(delay + timeout + 10*time.Second):
		t.Fatalf("serve did not exit after SIGTERM\n%s", s.logs)
	}
}

func TestCallReportsTypedError(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens
	out, err := tcppro("call", "--addr", addr, "--timeout", "2s", "x").CombinedOutput()
	if err == nil {
		t.Fatalf("call to nothing succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "no server available") {
		t.Fatalf("call did not print the typed error:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"serve", "--max-conns", "x"}, {}} {
		err := tcppro(args...).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("tcppro %v: %v, want exit status 2", args, err)
		}
	}
}
