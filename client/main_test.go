package client_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcppro/tcppro/wire"
)

// echoPeerEnv makes the test binary an echo peer instead of running tests
// (see startEchoPeer).
const echoPeerEnv = "TCPPRO_CLIENT_TEST_ECHO_PEER"

func TestMain(m *testing.M) {
	if os.Getenv(echoPeerEnv) == "1" {
		runEchoPeer()
		return
	}
	goleak.VerifyTestMain(m)
}

// runEchoPeer is a minimal tcppro server on loopback: it prints its
// address, answers each single-frame REQUEST with its body and each PING,
// and exits when its standard input closes (its parent is gone).
func runEchoPeer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer nc.Close()
			fr := wire.NewFramer(nc, bufio.NewReader(nc))
			if _, err := fr.ServerHandshake(wire.Hello{}); err != nil {
				return
			}
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				switch f.Type {
				case wire.TypePing:
					d, _ := wire.ParsePing(f.Payload)
					err = fr.WritePong(d)
				case wire.TypeRequest:
					_, _, _, body, _ := wire.ParseRequest(f.Flags, f.Payload)
					err = fr.WriteResponse(f.ID, false, nil, body)
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// startEchoPeer runs an echo peer in a process of its own, so that what a
// test measures in this process (allocations) is the client's alone, and
// returns its address. It stops at the end of the test.
func startEchoPeer(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoPeerEnv+"=1")
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
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error:") {
		t.Fatalf("the echo peer did not start: %q, %v", line, err)
	}
	return strings.TrimSpace(line)
}
