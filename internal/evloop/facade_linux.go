//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/tcppro/tcppro/session"
)

// ErrOwnedByLoop is what a NetConn's reads, writes and deadlines fail
// with: the event loop owns the connection's bytes.
var ErrOwnedByLoop = errors.New("evloop: the connection's bytes belong to its event loop")

// ErrClosedByUser ends a connection closed through its NetConn. It
// matches session.ErrConnClosed.
var ErrClosedByUser = fmt.Errorf("%w: closed through its net.Conn", session.ErrConnClosed)

// facade is a Conn seen as a net.Conn (see Conn.NetConn).
type facade struct{ c *Conn }

func (f facade) Read([]byte) (int, error)         { return 0, ErrOwnedByLoop }
func (f facade) Write([]byte) (int, error)        { return 0, ErrOwnedByLoop }
func (f facade) Close() error                     { f.c.Close(ErrClosedByUser); return nil }
func (f facade) LocalAddr() net.Addr              { return f.c.LocalAddr() }
func (f facade) RemoteAddr() net.Addr             { return f.c.RemoteAddr() }
func (f facade) SetDeadline(time.Time) error      { return ErrOwnedByLoop }
func (f facade) SetReadDeadline(time.Time) error  { return ErrOwnedByLoop }
func (f facade) SetWriteDeadline(time.Time) error { return ErrOwnedByLoop }
