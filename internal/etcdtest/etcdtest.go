// Package etcdtest runs a real etcd server for tests: one member on
// loopback, on free ports, with a temporary data directory, killed and
// removed when the test ends. It is imported by tests only.
//
// The etcd binary is TCPPRO_ETCD_BIN, else "etcd" on PATH (Debian's
// etcd-server package). Without it, Start skips the test and says why;
// with TCPPRO_ETCD_REQUIRE=1 (CI) it fails the test instead.
package etcdtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcppro/tcppro/internal/syncbuf"
)

// RequireEnv, set to 1, turns Start's skip (no etcd binary) into a failure.
const RequireEnv = "TCPPRO_ETCD_REQUIRE"

// BinEnv names the etcd binary to run instead of "etcd" on PATH.
const BinEnv = "TCPPRO_ETCD_BIN"

// Server is one etcd member.
type Server struct {
	// Endpoint is the client address, 127.0.0.1:PORT.
	Endpoint string

	t        testing.TB
	bin      string
	dir      string
	peerURL  string
	logs     *syncbuf.Buffer
	mu       sync.Mutex
	cmd      *exec.Cmd
	waitDone chan struct{}
}

// Binary returns the etcd binary's path, or why there is none.
func Binary() (string, error) {
	if b := os.Getenv(BinEnv); b != "" {
		return b, nil
	}
	b, err := exec.LookPath("etcd")
	if err != nil {
		return "", fmt.Errorf("no etcd binary on PATH (apt-get install etcd-server, or set %s): %v", BinEnv, err)
	}
	return b, nil
}

// Start starts a member and waits until it answers /health. It is killed
// and its data removed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s=1 but %v", RequireEnv, err)
		}
		t.Skip(err)
	}
	s := &Server{
		t:        t,
		bin:      bin,
		dir:      t.TempDir(),
		Endpoint: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		peerURL:  "http://127.0.0.1:" + strconv.Itoa(freePort(t)),
		logs:     &syncbuf.Buffer{},
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("etcd's output:\n%s", s.logs)
		}
	})
	s.Restart()
	return s
}

// Restart starts the member again, on the same ports and data, after
// Stop, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		s.t.Fatal("etcdtest: Restart while running")
	}
	client := "http://" + s.Endpoint
	cmd := exec.Command(s.bin,
		"--name", "tcppro-test",
		"--data-dir", s.dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", s.peerURL,
		"--initial-advertise-peer-urls", s.peerURL,
		"--initial-cluster", "tcppro-test="+s.peerURL,
		"--logger", "zap",
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("etcdtest: starting %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.waitDone = cmd, done
	s.mu.Unlock()

	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get(client + "/health")
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			resp.Body.Close()
			if ok {
				return
			}
		}
		select {
		case <-done:
			s.t.Fatalf("etcdtest: etcd exited before answering:\n%s", s.logs)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcdtest: etcd did not answer /health within 20s (%v):\n%s", err, s.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling /health
	}
}

// Stop kills the member (SIGKILL: as a crash, or a lost host) and waits
// for it to exit. Its data stays for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.waitDone
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Target returns the etcd:// discovery target of prefix on this member.
func (s *Server) Target(prefix string) string {
	return "etcd://" + s.Endpoint + "/" + strings.TrimPrefix(prefix, "/")
}

// Logs returns etcd's output so far.
func (s *Server) Logs() string { return s.logs.String() }

// freePort returns a port free on 127.0.0.1, drawn at random below the
// kernel's ephemeral range (20000–32767). A member's ports are free while
// it is stopped (an outage the test makes): a port of the ephemeral range
// would then be handed to the next listener on port 0 of any test running
// alongside — another member, a server — and the stopped member's clients
// would talk to that instead of finding it gone.
func freePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12768)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		ln.Close()
		return port
	}
	t.Fatal("etcdtest: no free port in 20000-32767")
	return 0
}

// Deadline polls cond every 10ms until it holds or d passes; it reports
// whether it held.
func Deadline(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Client returns an etcd client of s, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Keys returns the keys under prefix, or nil if etcd does not answer.
func Keys(c *clientv3.Client, prefix string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil
	}
	var ks []string
	for _, kv := range r.Kvs {
		ks = append(ks, string(kv.Key))
	}
	return ks
}
