// Package session holds what tcppro's server and client share about one
// connection: its configuration (limits announced to the peer in HELLO,
// heartbeat and progress timers, queue bounds), and the errors that a
// connection and the calls on it end with.
//
// The rules of the protocol (docs/protocol.md) live in one place, the
// protocol core in internal/core, a single-owner state machine with no I/O;
// transports in internal drive it over a net.Conn. This package has no I/O
// either: it is the vocabulary the layers above share.
//
// Liveness: any bytes received prove the peer alive. After HeartbeatInterval
// with nothing received a side sends PING, at the next step of a grid
// shared by many connections (Config.PingGrid); if nothing at all arrives within
// HeartbeatTimeout of the last bytes received, the connection is closed with
// ErrPeerDead and every call on it fails at once. A frame that has started
// arriving must keep making progress (FrameReadTimeout); queued output that
// makes no progress for WriteTimeout cuts the connection (ErrWriteTimeout).
// No read deadline ever kills an idle, live connection.
//
// Errors: an ERROR frame is a *Error (errors.As), which matches the sentinel
// of its code (errors.Is: ErrBusy, ErrOverloaded, ...). RetrySafe is the one
// place that decides whether a failed request may be sent again.
package session
