package client_test

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
)

// TestCallSystemCalls: one call at a time on a warm connection costs two
// system calls on each side, client and server in this one process: the
// client writes its request from inside its read call and then waits for
// the answer with no read that could only find the socket empty (see
// session.Conn.SendAndLead), and the server's reader reads the request and
// writes the answer without leaving its read call. A hand-written blocking
// round trip costs three on each side.
func TestCallSystemCalls(t *testing.T) {
	const calls = 500
	_, addr := startServer(t, "", server.Config{}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}})
	call := func() {
		if _, err := c.Call(context.Background(), "echo", []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 { // warm: the server then answers on its reader
		call()
	}
	before := ioSyscalls(t)
	for range calls {
		call()
	}
	per := float64(ioSyscalls(t)-before) / calls
	t.Logf("%.2f read+write system calls per call, client and server together", per)
	// 4 per call, plus a little for heartbeats and ticks.
	if per > 4.5 {
		t.Fatalf("%.2f read+write system calls per call, want 4 (2 on each side)", per)
	}
}

// ioSyscalls returns this process's read and write system calls so far
// (syscr + syscw in /proc/self/io).
func ioSyscalls(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	var n uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok && (k == "syscr" || k == "syscw") {
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			n += x
		}
	}
	return n
}
