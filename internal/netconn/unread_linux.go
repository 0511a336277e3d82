package netconn

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unread reports whether bytes wait unread in nc's socket (under TLS, the
// TCP connection's); false when it cannot tell.
func unread(nc net.Conn) bool {
	if w, ok := nc.(interface{ NetConn() net.Conn }); ok {
		nc = w.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
