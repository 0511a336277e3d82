package upgrade

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcppro/tcppro/netx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFirstStart covers a process not started by an upgrade (tableflip
// allows one Upgrader per process, so one test does it all): listeners
// come from the caller's function, whose errors pass through unchanged;
// no upgrade before Ready or after Stop; Ready writes the PID file. The
// upgrade itself is tested on processes in cmd/tcppro.
func TestFirstStart(t *testing.T) {
	if _, err := New(Config{Timeout: -1}); err == nil {
		t.Fatal("New accepted a negative Timeout")
	}
	pidFile := filepath.Join(t.TempDir(), "tcppro.pid")
	u, err := New(Config{PIDFile: pidFile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Stop()
	if u.Inherited() {
		t.Fatal("Inherited() = true in a process nobody started by an upgrade")
	}
	stopSignals := u.UpgradeOn(syscall.SIGHUP)
	defer stopSignals()

	// The listen function's error, as it is.
	perr := &netx.PortPolicyError{Port: 40000}
	if _, err := u.Listen("127.0.0.1:40000", func() (net.Listener, error) { return nil, perr }); !errors.Is(err, netx.ErrEphemeralPort) {
		t.Fatalf("Listen = %v, want the listen function's error (errors.Is netx.ErrEphemeralPort)", err)
	}
	ln, err := u.Listen("127.0.0.1:0", func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	if err := u.Upgrade(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready = %v, want ErrNotReady", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil || string(b) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("PID file = %q, %v; want %d", b, err, os.Getpid())
	}
	stopSignals()
	u.Stop()
	if err := u.Upgrade(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Upgrade after Stop = %v, want ErrStopped", err)
	}
	<-u.Exit() // closed by Stop
}
