package faultnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Fixed ports are safe: nothing else listens inside a fresh namespace.
const (
	port       = 7000
	portOther  = 7001
	portClosed = 7009
)

// silentWindow is how long a fault must keep the other side from seeing
// anything. A FIN, RST or data would arrive well within it (RTT here is
// microseconds), so expecting a read timeout over it is a fair test.
const silentWindow = 300 * time.Millisecond

// waitLimit bounds every wait for something that should happen.
const waitLimit = 5 * time.Second

// pair returns a lab with hosts a and b joined by one link.
func pair(t *testing.T) (*Lab, *Host, *Host, *Link) {
	t.Helper()
	lab := ForTest(t)
	a, err := lab.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	lk, err := lab.Link(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return lab, a, b, lk
}

// server accepts connections on a listener inside a host.
type server struct {
	ln    net.Listener
	conns chan net.Conn
}

func listen(t *testing.T, h *Host, addr netip.Addr, port uint16) *server {
	t.Helper()
	ln, err := h.Listen("tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *server) addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// next returns the next accepted connection, closed at the end of the test.
func (s *server) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c, ok := <-s.conns:
		if !ok {
			t.Fatal("listener closed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(waitLimit):
		t.Fatal("no connection accepted")
	}
	return nil
}

func dial(t *testing.T, h *Host, to netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := h.Dial(ctx, "tcp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
}

// expectSilence checks that nothing at all (no data, no EOF, no reset)
// arrives on c within d.
func expectSilence(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during fault: n=%d err=%v, want a timeout and nothing else", n, err)
	}
}

// unacked returns the bytes c has sent that the peer has not acknowledged
// (plus any not sent yet).
func unacked(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

func netnsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestLinkSubnets(t *testing.T) {
	seen := map[netip.Prefix]bool{}
	for i := range maxLinks {
		p, err := linkSubnet(i)
		if err != nil {
			t.Fatal(err)
		}
		if !labRange.Contains(p.Addr()) || !labRange.Contains(p.Addr().Next().Next()) || p.Bits() != 24 || seen[p] {
			t.Fatalf("link %d: bad subnet %v", i, p)
		}
		seen[p] = true
	}
	if p, _ := linkSubnet(0); p.String() != "198.18.0.0/24" {
		t.Errorf("link 0: %v", p)
	}
	if p, _ := linkSubnet(maxLinks - 1); p.String() != "198.19.255.0/24" {
		t.Errorf("last link: %v", p)
	}
	if _, err := linkSubnet(maxLinks); err == nil {
		t.Error("link beyond the range accepted")
	}
}

func TestParseName(t *testing.T) {
	prefix, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	pid, start, ok := parseName(prefix + "-some_host")
	if !ok || pid != os.Getpid() || !processAlive(pid, start) {
		t.Fatalf("parseName(%q) = %d, %d, %v", prefix, pid, start, ok)
	}
	if processAlive(pid, start+1) {
		t.Error("a different start time must count as another process")
	}
	for _, bad := range []string{"tcpprofl-", "tcpprofl-x-1-ab-h", "tcpprofl-12-y-ab-h", "other-1-2-ab-h", "tcpprofl-0-1-ab-h"} {
		if _, _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted", bad)
		}
	}
}

func TestUnsupported(t *testing.T) {
	notRoot := withEnv(func() int { return 1000 }, func(string) (string, error) { return "/bin/true", nil })
	_, err := New(context.Background(), notRoot)
	if !errors.Is(err, ErrUnsupported) || !bytes.Contains([]byte(err.Error()), []byte("not root")) {
		t.Fatalf("not root: %v", err)
	}
	noNft := withEnv(func() int { return 0 }, func(name string) (string, error) {
		if name == "nft" {
			return "", errors.New("not found")
		}
		return "/bin/true", nil
	})
	_, err = New(context.Background(), noNft)
	if !errors.Is(err, ErrUnsupported) || !bytes.Contains([]byte(err.Error()), []byte("nft")) {
		t.Fatalf("no nft: %v", err)
	}

	// ForTest skips with the reason, or fails when RequireEnv is set.
	t.Setenv(RequireEnv, "")
	tb := &fakeTB{}
	tb.run(func() { forTest(tb, notRoot) })
	if !tb.skipped || tb.failed || !bytes.Contains([]byte(tb.msg), []byte("not root")) {
		t.Fatalf("ForTest when unsupported: %+v", tb)
	}
	t.Setenv(RequireEnv, "1")
	tb = &fakeTB{}
	tb.run(func() { forTest(tb, notRoot) })
	if tb.skipped || !tb.failed {
		t.Fatalf("ForTest when unsupported and required: %+v", tb)
	}
}

// fakeTB records what ForTest does to a test.
type fakeTB struct {
	skipped, failed bool
	msg             string
}

var errStop = errors.New("test stopped")

func (f *fakeTB) Helper()        {}
func (f *fakeTB) Cleanup(func()) {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, sprint(args)
	panic(errStop)
}
func (f *fakeTB) Error(args ...any) { f.failed, f.msg = true, sprint(args) }
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, sprint(args)
	panic(errStop)
}

func (f *fakeTB) run(fn func()) {
	defer func() {
		if p := recover(); p != nil && p != errStop {
			panic(p)
		}
	}()
	fn()
}

func sprint(args []any) string {
	var b bytes.Buffer
	for _, a := range args {
		if err, ok := a.(error); ok {
			b.WriteString(err.Error())
		}
	}
	return b.String()
}

func TestDoEntersNamespace(t *testing.T) {
	t.Parallel()
	lab := ForTest(t)
	h, err := lab.AddHost("h")
	if err != nil {
		t.Fatal(err)
	}
	want := netnsIno(t, filepath.Join(netnsDir, h.Netns()))
	if netnsIno(t, "/proc/self/ns/net") == want {
		t.Fatal("the test process is in the lab namespace")
	}
	var got uint64
	if err := h.Do(func() error {
		got = netnsIno(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("inside Do: netns inode %d, want %d", got, want)
	}

	errBoom := errors.New("boom")
	if err := h.Do(func() error { return errBoom }); err != errBoom {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Fatalf("recovered %v, want fn's panic", p)
			}
		}()
		_ = h.Do(func() error { panic("boom") })
	}()

	// A program run with Command is inside the namespace too.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := h.Command(ctx, "ip", "netns", "identify").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytes.TrimSpace(out)); got != h.Netns() {
		t.Fatalf("command runs in %q, want %q", got, h.Netns())
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	_, a, b, lk := pair(t)
	if !lk.Prefix().Contains(a.Addr()) || !labRange.Contains(a.Addr()) || !labRange.Contains(b.Addr()) || a.Addr() == b.Addr() {
		t.Fatalf("addresses: a %v b %v link %v", a.Addr(), b.Addr(), lk.Prefix())
	}
	srv := listen(t, b, lk.Addr(b), port)
	c := dial(t, a, srv.addr())
	s := srv.next(t)
	send(t, c, "ping")
	expect(t, s, "ping")
	send(t, s, "pong")
	expect(t, c, "pong")
	// The connection works from other goroutines than the one that made
	// it (the socket stays in its namespace).
	done := make(chan struct{})
	go func() {
		defer close(done)
		send(t, c, "again")
	}()
	expect(t, s, "again")
	<-done
}

func TestCutRestore(t *testing.T) {
	t.Parallel()
	_, a, b, lk := pair(t)
	srv := listen(t, b, lk.Addr(b), port)
	c1 := dial(t, a, srv.addr())
	s1 := srv.next(t)
	c2 := dial(t, a, srv.addr())
	s2 := srv.next(t)
	send(t, c1, "before")
	expect(t, s1, "before")

	if err := lk.Cut(); err != nil {
		t.Fatal(err)
	}
	const msg = "during the cut"
	send(t, c1, msg) // the write succeeds: the data sits unacknowledged
	c2.Close()       // the FIN is lost as well
	expectSilence(t, s1, silentWindow)
	// s2 had the same window for its FIN to arrive; a read now returns EOF
	// at once if it did.
	expectSilence(t, s2, 10*time.Millisecond)
	if n := unacked(t, c1); n != len(msg) {
		t.Fatalf("unacknowledged bytes after the cut: %d, want %d", n, len(msg))
	}
	expectSilence(t, c1, time.Millisecond) // and no RST reached a either

	if err := lk.Restore(); err != nil {
		t.Fatal(err)
	}
	// Same connections: TCP retransmits what was lost.
	expect(t, s1, msg)
	send(t, s1, "after")
	expect(t, c1, "after")
	s2.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := s2.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after restore, closed peer: n=%d err=%v, want EOF", n, err)
	}
}

func TestDropDirection(t *testing.T) {
	t.Parallel()
	_, a, b, lk := pair(t)
	srv := listen(t, b, lk.Addr(b), port)
	c := dial(t, a, srv.addr())
	s := srv.next(t)

	if err := lk.DropDirection(a); err != nil {
		t.Fatal(err)
	}
	send(t, c, "a to b")
	send(t, s, "b to a")
	expect(t, c, "b to a")            // b's data reaches a ...
	expectSilence(t, s, silentWindow) // ... a's never reaches b

	if err := lk.Restore(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "a to b")
}

func TestDropPort(t *testing.T) {
	t.Parallel()
	_, a, b, lk := pair(t)
	dropped := listen(t, b, lk.Addr(b), port)
	other := listen(t, b, lk.Addr(b), portOther)
	c := dial(t, a, dropped.addr())
	s := dropped.next(t)

	if err := lk.DropPort(port); err != nil {
		t.Fatal(err)
	}
	// Other ports work ...
	c2 := dial(t, a, other.addr())
	s2 := other.next(t)
	send(t, c2, "other port")
	expect(t, s2, "other port")
	// ... the dropped one neither carries data nor connects.
	send(t, c, "dropped")
	ctx, cancel := context.WithTimeout(context.Background(), silentWindow)
	_, err := a.Dial(ctx, "tcp", dropped.addr().String())
	cancel()
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dial to the dropped port: %v, want a timeout", err)
	}
	expectSilence(t, s, 10*time.Millisecond) // the data had the dial's window

	if err := lk.Restore(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "dropped")
}

func TestBlackholeSYN(t *testing.T) {
	t.Parallel()
	_, a, b, lk := pair(t)
	srv := listen(t, b, lk.Addr(b), port)
	c := dial(t, a, srv.addr())
	s := srv.next(t)

	dialTimeout := func(port uint16) (time.Duration, error) {
		var took time.Duration
		err := a.Do(func() error {
			start := time.Now()
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(lk.Addr(b), port).String(), silentWindow)
			took = time.Since(start)
			if err == nil {
				c.Close()
			}
			return err
		})
		return took, err
	}
	isTimeout := func(err error) bool {
		ne, ok := err.(net.Error)
		return ok && ne.Timeout() && !errors.Is(err, syscall.ECONNREFUSED)
	}

	if err := b.BlackholeSYN(port); err != nil {
		t.Fatal(err)
	}
	took, err := dialTimeout(port)
	if !isTimeout(err) || took < silentWindow*9/10 {
		t.Fatalf("dial into the black hole: %v after %v, want a timeout after %v", err, took, silentWindow)
	}
	// Other ports are refused as usual (fast, RST) ...
	if _, err := dialTimeout(portClosed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v, want connection refused", err)
	}
	// ... and established connections carry on.
	send(t, c, "still here")
	expect(t, s, "still here")

	// Port 0: every port is a black hole, even closed ones.
	if err := b.BlackholeSYN(0); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTimeout(portClosed); !isTimeout(err) {
		t.Fatalf("dial to a closed port in a full black hole: %v, want a timeout", err)
	}

	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTimeout(port); err != nil {
		t.Fatalf("dial after restore: %v", err)
	}
}
