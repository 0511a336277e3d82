package netx

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/sysinfo"
)

// fixture writes a /proc tree with the given port range and reserved ports.
func fixture(t *testing.T, portRange, reserved string) sysinfo.FS {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "proc/sys/net/ipv4")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"ip_local_port_range": portRange, "ip_local_reserved_ports": reserved} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sysinfo.FS{Root: root}
}

func TestCheckPort(t *testing.T) {
	fs := fixture(t, "32768\t60999", "40000,50000-50010")
	cases := []struct {
		port    int
		refused bool
	}{
		{7420, false},  // below the range
		{0, false},     // any free port: an explicit request
		{32768, true},  // the range's first port
		{40000, false}, // reserved
		{50005, false}, // in a reserved range
		{50011, true},
		{60999, true},
		{61000, false},
	}
	for _, tc := range cases {
		err := CheckPort(fs, tc.port)
		if got := errors.Is(err, ErrEphemeralPort); got != tc.refused {
			t.Errorf("port %d: err %v, want refused=%v", tc.port, err, tc.refused)
		}
		var pe *PortPolicyError
		if tc.refused && (!errors.As(err, &pe) || pe.Port != tc.port || pe.Range != (sysinfo.PortRange{Lo: 32768, Hi: 60999})) {
			t.Errorf("port %d: %v is not a PortPolicyError naming the port and range", tc.port, err)
		}
	}
	msg := CheckPort(fs, 33000).Error()
	for _, want := range []string{"33000", "32768-60999", "ip_local_reserved_ports", "allow-ephemeral-port"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	// An unreadable range is an error, not a silent pass.
	if err := CheckPort(sysinfo.FS{Root: t.TempDir()}, 40000); err == nil || errors.Is(err, ErrEphemeralPort) {
		t.Errorf("missing /proc files: %v", err)
	}
}

func TestListenSetsReuseAddrAndPolicy(t *testing.T) {
	ln, err := ListenConfig{}.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ok, err := ReuseAddr(ln); err != nil || !ok {
		t.Fatalf("SO_REUSEADDR = %v, %v", ok, err)
	}
	fs := fixture(t, "1024 65535", "")
	if _, err := (ListenConfig{FS: fs}).Listen(context.Background(), "127.0.0.1:7999"); !errors.Is(err, ErrEphemeralPort) {
		t.Fatalf("listen inside the range: %v", err)
	}
	if _, err := (ListenConfig{}).Listen(context.Background(), "no-port"); err == nil {
		t.Fatal("a malformed address was accepted")
	}
}

func TestDialerOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	d := Dialer{Timeout: time.Second, Options: Options{UserTimeout: 1500 * time.Millisecond}}
	c, err := d.DialContext(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ut, err := UserTimeout(c); err != nil || ut != 1500*time.Millisecond {
		t.Fatalf("TCP_USER_TIMEOUT = %v, %v", ut, err)
	}
	ti, err := GetTCPInfo(c)
	if err != nil || ti.State != "ESTABLISHED" {
		t.Fatalf("TCP_INFO = %+v, %v", ti, err)
	}
}

func TestDialRefusedIsNotTimeout(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Dialer{Timeout: time.Second}.DialContext(context.Background(), addr)
	var de *DialError
	if !errors.As(err, &de) || de.Timeout || de.Addr != addr {
		t.Fatalf("err = %v, want a refused DialError", err)
	}
}

// TestDefaultSocketOptions pins what Options{} sets on a connection, as
// README's practices table states it: TCP_NODELAY on, keepalive on after
// 30 s idle with 3 probes 10 s apart, TCP_USER_TIMEOUT left alone.
func TestDefaultSocketOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sc, ok := <-accepted; ok {
		defer sc.Close()
	}
	// Go's own defaults are turned off first, so that what is read back
	// is what Apply set.
	tc := c.(*net.TCPConn)
	if err := tc.SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	if err := tc.SetKeepAlive(false); err != nil {
		t.Fatal(err)
	}
	if err := (Options{}).Apply(c); err != nil {
		t.Fatal(err)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, o := range []struct {
		name       string
		level, opt int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
	} {
		var v int
		var serr error
		if err := raw.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || serr != nil {
			t.Fatalf("getsockopt %s: %v, %v", o.name, err, serr)
		}
		got[o.name] = v
	}
	want := map[string]int{"TCP_NODELAY": 1, "SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 0}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %d, want %d", name, got[name], w)
		}
	}
}
