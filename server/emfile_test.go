package server_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// emfileChildEnv makes the test binary the server process of
// TestBusyAtOpenFileLimit (see emfileChild).
const emfileChildEnv = "TCPPRO_SERVER_TEST_EMFILE_CHILD"

// emfileChild is a server process at its open-file limit: it lowers its
// own RLIMIT_NOFILE, listens on 127.0.0.1, opens descriptors until none is
// left, serves, prints "ready <addr> <descriptors opened>", and serves
// until its stdin closes; it then prints "stats <rejected busy> <accept
// errors>" and exits.
func emfileChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "emfile child:", err)
		return 1
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fail(err)
	}
	lim.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv, err := server.New(server.Config{Logger: quiet}, echoMux())
	if err != nil {
		return fail(err)
	}
	// Every descriptor is taken before serving starts, so that nothing
	// but the server competes for the one its reserve gives up.
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) {
			break
		}
		if err != nil {
			return fail(err)
		}
		fds = append(fds, fd)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("ready %s %d\n", ln.Addr(), len(fds))
	_, _ = io.Copy(io.Discard, os.Stdin)
	st := srv.Stats()
	fmt.Printf("stats %d %d\n", st.RejectedBusy, st.AcceptErrors)
	for _, fd := range fds {
		unix.Close(fd)
	}
	srv.Close()
	<-served
	return 0
}

// TestBusyAtOpenFileLimit guards the reserve descriptor: a server process
// at its open-file limit answers a new connection ERROR BUSY at once,
// instead of leaving it in the accept queue. The server runs in a child
// process with a low RLIMIT_NOFILE, so this process is not affected.
func TestBusyAtOpenFileLimit(t *testing.T) {
	// The race detector otherwise sleeps a second as the child exits.
	cmd, stdin, stdout := startChild(t, emfileChildEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("server process: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("server process did not exit within 10s of its stdin closing")
		}
	}()
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	line := func() []string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("server process ended early")
			}
			return strings.Fields(l)
		case <-time.After(10 * time.Second):
			t.Fatal("server process silent for 10s")
		}
		return nil
	}
	ready := line()
	if len(ready) != 3 || ready[0] != "ready" {
		t.Fatalf("server process said %q, want ready <addr> <descriptors>", ready)
	}
	t.Logf("server process at its open-file limit after opening %s descriptors", ready[2])

	for i := range 2 {
		conn := dialTCP(t, ready[1])
		start := time.Now()
		_ = conn.SetDeadline(start.Add(time.Second))
		f, err := wire.NewFramer(conn, conn).ReadFrame()
		took := time.Since(start)
		conn.Close()
		if err != nil {
			t.Fatalf("connection %d at the open-file limit: %v after %v, want ERROR BUSY within 1s", i, err, took)
		}
		got := frame{Type: f.Type, Flags: f.Flags, ID: f.ID, Payload: f.Payload}
		if code, _ := errorCode(t, got); code != wire.CodeBusy || f.ID != 0 {
			t.Fatalf("connection %d at the open-file limit got %v, want ERROR BUSY id 0", i, got)
		}
		t.Logf("TIMING BUSY at the open-file limit after %v", took)
	}
	stdin.Close()
	stats := line()
	if len(stats) != 3 || stats[0] != "stats" || stats[1] != "2" || stats[2] == "0" {
		t.Errorf("server process stats %q, want 2 rejected busy and accept errors", stats)
	}
}
