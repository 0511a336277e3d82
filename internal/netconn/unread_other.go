//go:build !linux

package netconn

import "net"

// unread reports whether bytes wait unread in nc's socket: elsewhere than
// on Linux it cannot tell.
func unread(net.Conn) bool { return false }
