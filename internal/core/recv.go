package core

import (
	"errors"
	"fmt"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// Receive takes bytes from the peer: b holds the bytes not consumed by the
// previous call followed by at least one new byte. It handles every
// complete frame at the start of b and returns how many bytes it consumed;
// the rest (the start of a frame) must be passed again, with more bytes
// after it. Once the connection has failed or the peer's FIN was seen,
// bytes are discarded (all of b is reported consumed).
func (c *Conn) Receive(now int64, b []byte) int {
	defer c.rest()
	if c.failed || c.eof || c.done {
		return len(b)
	}
	c.lastRecv = now
	if c.refused {
		return len(b) // read only so that the client's FIN is seen
	}
	if c.p.role == Server && !c.helloRecv && len(b) > 4 && wire.Type(b[4]) != wire.TypeHello {
		// Decided on the type alone: an old client's first frame may be
		// larger than MAX_FRAME_SIZE (protocol.md §4.1).
		c.failVersion(now, fmt.Sprintf("the client's first frame is %v, not HELLO: it speaks protocol version 1?", wire.Type(b[4])),
			fmt.Sprintf("this server speaks tcppro protocol version %d and expects HELLO first", wire.Version))
		return len(b)
	}
	off := 0
	dec := wire.Decoder{MaxFrameSize: c.p.cfg.MaxFrameSize}
	for !c.failed {
		f, n, err := dec.Next(b[off:])
		if err != nil {
			c.failProtocol(now, err)
			break
		}
		if n == 0 {
			break
		}
		off += n
		c.framesIn++
		c.bytesIn += uint64(n)
		if err := c.frame(now, f); err != nil {
			c.failProtocol(now, err)
		}
	}
	if c.failed {
		return len(b)
	}
	c.partial = off < len(b)
	c.settle(now)
	return off
}

// frame dispatches one frame.
func (c *Conn) frame(now int64, f wire.Frame) error {
	if !c.helloRecv {
		return c.firstFrame(now, f)
	}
	srv := c.p.role == Server
	switch f.Type {
	case wire.TypeHello:
		return protoErr("second HELLO")
	case wire.TypeRequest:
		if srv {
			return c.serverRequest(now, f)
		}
	case wire.TypeResponse:
		if !srv {
			return c.clientResponse(now, f)
		}
	case wire.TypeData:
		if srv {
			return c.serverData(now, f)
		}
		return c.clientData(now, f)
	case wire.TypeError:
		if f.ID == 0 {
			return c.peerError(now, f)
		}
		if !srv {
			return c.clientError(now, f)
		}
		return protoErr("ERROR with request id %d sent to a server (clients send CANCEL)", f.ID)
	case wire.TypePing:
		data, err := wire.ParsePing(f.Payload)
		if err != nil {
			return err
		}
		c.peerControl(now, func(b []byte) []byte { return wire.AppendPong(b, data) })
		return nil
	case wire.TypePong:
		data, err := wire.ParsePing(f.Payload)
		if err != nil {
			return err
		}
		if c.pingOut && data == c.pingSeq {
			c.pingOut = false
			c.rtt = time.Duration(now - c.lastPingAt)
			c.sink.HeartbeatRTT(c.rtt)
		}
		return nil
	case wire.TypeGoAway:
		if !srv {
			return c.clientGoAway(now, f)
		}
	case wire.TypeCancel:
		if srv {
			return c.serverCancel(now, f)
		}
	default:
		return nil // an extension frame (128-255): skipped
	}
	return protoErr("%v sent to a %v", f.Type, c.p.role)
}

// firstFrame handles the peer's first frame: its HELLO (protocol.md §4).
func (c *Conn) firstFrame(now int64, f wire.Frame) error {
	if c.p.role == Server {
		if f.Type != wire.TypeHello {
			c.failVersion(now, fmt.Sprintf("the client's first frame is %v, not HELLO: it speaks protocol version 1?", f.Type),
				fmt.Sprintf("this server speaks tcppro protocol version %d and expects HELLO first", wire.Version))
			return nil
		}
		h, err := wire.ParseHello(f.Payload)
		if err != nil {
			return err
		}
		if h.Version < wire.Version {
			c.failVersion(now, fmt.Sprintf("the client speaks protocol version %d", h.Version),
				fmt.Sprintf("this server speaks tcppro protocol version %d; the client's highest is %d", wire.Version, h.Version))
			return nil
		}
		h.Version = wire.Version
		mine := c.p.hello
		c.addControl(now, func(b []byte) []byte { return wire.AppendHello(b, mine) })
		c.opened(now, h)
		return nil
	}
	switch {
	case f.Type == wire.TypeError && f.ID == 0:
		if code, _, msg, err := wire.ParseError(0, f.Flags, f.Payload); err == nil && code == wire.CodeProtocol {
			// What a server of protocol version 1 answers to a HELLO,
			// a frame type it does not know.
			c.fail(now, fmt.Errorf("%w: the server refused the HELLO as a protocol error (a server of protocol version 1?): %w",
				session.ErrUnsupportedVersion, &session.Error{Code: code, Message: string(msg), Conn: true}), nil)
			return nil
		}
		return c.peerError(now, f)
	case f.Type != wire.TypeHello:
		return protoErr("the server's first frame is %v, not HELLO", f.Type)
	}
	h, err := wire.ParseHello(f.Payload)
	if err != nil {
		return err
	}
	if h.Version != wire.Version {
		c.failVersion(now, fmt.Sprintf("the server chose protocol version %d", h.Version),
			fmt.Sprintf("this client speaks tcppro protocol version %d only", wire.Version))
		return nil
	}
	if h.MaxInFlight < 1 {
		return protoErr("the server's HELLO allows %d requests in flight", h.MaxInFlight)
	}
	c.opened(now, h)
	return nil
}

// opened records the peer's HELLO: the connection is open.
func (c *Conn) opened(now int64, h wire.Hello) {
	c.helloRecv = true
	c.peer = h
	c.sink.Ready(h)
	c.admit(now)
}

// failVersion refuses the peer's protocol version with ERROR
// UNSUPPORTED_VERSION.
func (c *Conn) failVersion(now int64, why, msg string) {
	err := fmt.Errorf("%w: %s", session.ErrUnsupportedVersion, why)
	c.fail(now, err, func(b []byte) []byte { return wire.AppendError(b, 0, wire.CodeUnsupportedVersion, nil, msg) })
}

// peerError handles a connection-level ERROR: the peer ends the
// connection.
func (c *Conn) peerError(now int64, f wire.Frame) error {
	code, _, msg, err := wire.ParseError(0, f.Flags, f.Payload)
	if err != nil {
		return err
	}
	c.fail(now, &session.Error{Code: code, Message: string(msg), Conn: true}, nil)
	return nil
}

// failProtocol ends the connection on a frame the peer should not have
// sent, telling it why with ERROR PROTOCOL or FRAME_TOO_LARGE.
func (c *Conn) failProtocol(now int64, err error) {
	code := wire.CodeProtocol
	if errors.Is(err, wire.ErrFrameTooLarge) {
		code = wire.CodeFrameTooLarge
	}
	msg := err.Error()
	c.fail(now, err, func(b []byte) []byte { return wire.AppendError(b, 0, code, nil, msg) })
}

// failFlood ends the connection of a peer that made this side queue more
// than MaxQueuedControl control frames without reading them.
func (c *Conn) failFlood(now int64) {
	msg := fmt.Sprintf("more than %d control frames queued: the peer does not read them", c.p.cfg.MaxQueuedControl)
	c.fail(now, fmt.Errorf("%w (%d queued)", session.ErrControlFlood, c.peerN()),
		func(b []byte) []byte { return wire.AppendError(b, 0, wire.CodeControlFlood, nil, msg) })
}

func protoErr(format string, args ...any) error {
	return &wire.ProtocolError{Reason: fmt.Sprintf(format, args...)}
}
