//go:build !linux

package evloop

import (
	"net"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/wire"
)

// Loops is a group of event loops; on this system there are none.
type Loops struct{}

// NewLoops returns ErrUnsupported: event loops need Linux.
func NewLoops(n int) (*Loops, error) { return nil, ErrUnsupported }

// Close does nothing.
func (l *Loops) Close() error { return nil }

// Adopt returns ErrUnsupported.
func (l *Loops) Adopt(nc net.Conn, p *core.Params, sink core.Sink) (*Conn, error) {
	return nil, ErrUnsupported
}

// Conn is a connection driven by a loop; on this system there are none
// (Adopt never returns one), and its methods are never called.
type Conn struct{}

// Start panics: there are no connections on this system.
func (c *Conn) Start(onDone func()) { panic(ErrUnsupported) }

// Control reports false: there is no descriptor.
func (c *Conn) Control(f func(fd int)) bool { return false }

// Call returns ErrUnsupported.
func (c *Conn) Call(cl *core.Call) error { return ErrUnsupported }

// Abandon does nothing.
func (c *Conn) Abandon(cl *core.Call, err error) {}

// Answer does nothing.
func (c *Conn) Answer(id uint64, md wire.Metadata, body []byte) {}

// AnswerError does nothing.
func (c *Conn) AnswerError(id uint64, code wire.Code, msg string, md wire.Metadata) {}

// Drain does nothing.
func (c *Conn) Drain() {}

// Refuse does nothing.
func (c *Conn) Refuse(code wire.Code, msg string) {}

// GoAway does nothing.
func (c *Conn) GoAway(reason wire.Reason, msg string) (lastID uint64, first bool) { return 0, false }

// Close does nothing.
func (c *Conn) Close(err error) {}

// Post runs f.
func (c *Conn) Post(f func()) { f() }

// Done is closed.
func (c *Conn) Done() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Err returns ErrUnsupported.
func (c *Conn) Err() error { return ErrUnsupported }

// Stats returns nothing.
func (c *Conn) Stats() core.Stats { return core.Stats{} }

// Usable reports false.
func (c *Conn) Usable() bool { return false }

// Peer returns nothing.
func (c *Conn) Peer() wire.Hello { return wire.Hello{} }

// Created returns the zero time.
func (c *Conn) Created() time.Time { return time.Time{} }

// RemoteAddr returns nil.
func (c *Conn) RemoteAddr() net.Addr { return nil }

// LocalAddr returns nil.
func (c *Conn) LocalAddr() net.Addr { return nil }

// NetConn returns nil: there is no connection.
func (c *Conn) NetConn() net.Conn { return nil }
