package session

import (
	"fmt"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/wire"
)

// Config holds one connection's limits and timers, the same for the server
// and the client side. The zero value of any field means its default, so
// Config{} is a valid configuration; the defaults are what DefaultConfig
// returns. The limits a peer must respect (frame, message and in-flight
// limits) are announced to it in the connection's HELLO frame.
type Config struct {
	// HeartbeatInterval is how long a connection may receive nothing before
	// it sends a PING (and another each further interval of silence). Any
	// bytes received prove the peer alive, so a busy connection sends no
	// PINGs. A PING leaves at the first step of a grid at or after it falls
	// due (see PingGrid: 50ms, or less for a short interval or a timeout
	// close to it), so that the PINGs of many idle connections leave in one
	// wake-up; an idle connection's PINGs are therefore an interval plus
	// up to one step apart. Default 5s. A negative value disables
	// heartbeats (liveness then rests on TCP alone: not recommended).
	HeartbeatInterval time.Duration

	// HeartbeatTimeout is how long a connection may receive nothing at all,
	// counted from the last bytes received, before the peer is declared
	// dead (ErrPeerDead): the connection is closed and every call on it
	// fails at once. It must exceed HeartbeatInterval by a round trip and
	// the PING's wait for its grid step (PingGrid, at most an eighth of the
	// difference) at least. Default 10s.
	HeartbeatTimeout time.Duration

	// HandshakeTimeout bounds the opening of a connection: the TLS
	// handshake, when there is one, and then the exchange of HELLO frames,
	// each given the whole timeout. Default 10s.
	HandshakeTimeout time.Duration

	// FrameReadTimeout bounds how long a frame that has started arriving
	// may go without receiving more bytes (slow-loris protection that
	// spares slow links: it measures progress, not the frame's total
	// time), and, on a server, how long requests whose bodies are still
	// arriving may go without receiving body bytes. It never applies to an
	// idle connection. Default 10s.
	FrameReadTimeout time.Duration

	// WriteTimeout is how long queued output may make no progress (the peer
	// stopped reading, its window is closed) before the connection is cut
	// with ErrWriteTimeout. A server also gives in-flight requests this
	// long to finish after the peer half-closed. Default 10s.
	WriteTimeout time.Duration

	// LingerTimeout bounds how long a connection that has sent its FIN
	// (after GOAWAY, or after the peer's FIN), or its final ERROR, waits
	// for the peer's FIN or for the last bytes to leave before it is closed
	// outright. Default 2s.
	LingerTimeout time.Duration

	// MaxFrameSize is the largest frame payload accepted from the peer,
	// announced in HELLO (MAX_FRAME_SIZE). A larger declared length is
	// refused before anything is allocated. Bodies larger than a frame
	// travel in chunks of at most the peer's MaxFrameSize. Default
	// wire.DefaultMaxFrameSize (64 KiB); at least wire.MinMaxFrameSize
	// (16 KiB).
	MaxFrameSize uint32

	// MaxMessageSize is the largest message body accepted from the peer,
	// announced in HELLO (MAX_MESSAGE_SIZE). A call whose body exceeds the
	// peer's limit fails locally, unsent. Default wire.DefaultMaxMessageSize
	// (4 MiB).
	MaxMessageSize uint32

	// MaxInFlight is the per-connection limit of requests in flight. A
	// server announces it in HELLO and answers a request beyond it with
	// OVERLOADED at once, reading on. A client keeps its calls in flight on
	// one connection below the smaller of its own MaxInFlight and the
	// server's; further calls wait for a slot, bounded by their deadline.
	// Default 128.
	MaxInFlight int

	// WriteQueueSize bounds the bytes queued for writing on one connection.
	// A client's calls wait (bounded by their deadline) while it is full; a
	// server stops reading from a peer that lets it fill (the peer is not
	// reading its answers) and resumes as the peer reads. A message larger
	// than the bound is admitted whenever the queue is below it, so the
	// queue holds at most the bound plus one message. Default 1 MiB.
	WriteQueueSize int

	// MaxQueuedControl bounds the control frames queued and not yet written
	// because of what the peer sent — a PONG for each PING, a refusal for
	// each request refused — beyond, on a server, one refusal for each
	// request the client may have in flight (MaxInFlight: a conforming
	// client cannot cause more). A peer that exceeds the bound without
	// reading is sent ERROR CONTROL_FLOOD and the connection is closed
	// (ErrControlFlood). Default 256.
	MaxQueuedControl int

	// ConnMemory bounds, on a server, the bytes held for one connection:
	// request bodies received and not yet answered, and answers not yet
	// written. A request that arrives, or grows, while the bound is reached
	// is refused with OVERLOADED (not processed). An answer is never
	// refused (its request was processed): answers to requests already
	// admitted can take a connection past the bound — at worst MaxInFlight
	// answers of MaxMessageSize, when handlers turn small requests into
	// large answers for a client that does not read them; the server then
	// stops reading that client. At least MaxMessageSize on a server.
	// Clients ignore it. Default 8 MiB.
	ConnMemory int

	// ReadBufferSize is the size of the read buffer a connection borrows
	// while bytes are arriving (a frame larger than it gets a buffer of its
	// own size while it arrives). Idle connections hold none. Default 16 KiB.
	ReadBufferSize int
}

// Defaults, as documented on the Config fields.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHeartbeatTimeout  = 10 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultFrameReadTimeout  = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultLingerTimeout     = 2 * time.Second
	DefaultMaxFrameSize      = wire.DefaultMaxFrameSize
	DefaultMaxMessageSize    = wire.DefaultMaxMessageSize
	DefaultMaxInFlight       = wire.DefaultMaxInFlight
	DefaultWriteQueueSize    = 1 << 20
	DefaultMaxQueuedControl  = 256
	DefaultConnMemory        = 8 << 20
	DefaultReadBufferSize    = 16 << 10
)

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config { return Config{}.WithDefaults() }

// ConfigError reports an invalid configuration field.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
	Err    error // the error behind Reason, when another package's check refused the value; nil otherwise
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns Err, so that errors.Is and errors.As see the error
// behind the refusal (discovery.ErrBadOptions, for example).
func (e *ConfigError) Unwrap() error { return e.Err }

// WithDefaults returns c with every zero field replaced by its default.
func (c Config) WithDefaults() Config {
	defaults.Set(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	defaults.Set(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	defaults.Set(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	defaults.Set(&c.FrameReadTimeout, DefaultFrameReadTimeout)
	defaults.Set(&c.WriteTimeout, DefaultWriteTimeout)
	defaults.Set(&c.LingerTimeout, DefaultLingerTimeout)
	defaults.Set(&c.MaxFrameSize, DefaultMaxFrameSize)
	defaults.Set(&c.MaxMessageSize, DefaultMaxMessageSize)
	defaults.Set(&c.MaxInFlight, DefaultMaxInFlight)
	defaults.Set(&c.WriteQueueSize, DefaultWriteQueueSize)
	defaults.Set(&c.MaxQueuedControl, DefaultMaxQueuedControl)
	defaults.Set(&c.ConnMemory, DefaultConnMemory)
	defaults.Set(&c.ReadBufferSize, DefaultReadBufferSize)
	return c
}

// Validate reports the first invalid field of c (after defaults), naming the
// field and the bad value.
func (c Config) Validate() error {
	c = c.WithDefaults()
	bad := func(field string, v any, why string) error { return &ConfigError{Field: field, Value: v, Reason: why} }
	switch {
	case c.Heartbeats() && c.HeartbeatTimeout <= c.HeartbeatInterval:
		return bad("HeartbeatTimeout", c.HeartbeatTimeout, fmt.Sprintf("must exceed HeartbeatInterval (%v) by a round trip at least", c.HeartbeatInterval))
	case c.HandshakeTimeout < 0:
		return bad("HandshakeTimeout", c.HandshakeTimeout, "must be positive")
	case c.FrameReadTimeout < 0:
		return bad("FrameReadTimeout", c.FrameReadTimeout, "must be positive")
	case c.WriteTimeout < 0:
		return bad("WriteTimeout", c.WriteTimeout, "must be positive")
	case c.LingerTimeout < 0:
		return bad("LingerTimeout", c.LingerTimeout, "must be positive")
	case c.MaxFrameSize < wire.MinMaxFrameSize || c.MaxFrameSize > wire.MaxMaxFrameSize:
		return bad("MaxFrameSize", c.MaxFrameSize, fmt.Sprintf("must be within [%d, %d]", wire.MinMaxFrameSize, wire.MaxMaxFrameSize))
	case c.MaxInFlight < 0 || c.MaxInFlight > 1<<30:
		return bad("MaxInFlight", c.MaxInFlight, "must be within [1, 2^30]")
	case c.WriteQueueSize < 0:
		return bad("WriteQueueSize", c.WriteQueueSize, "must be positive")
	case c.MaxQueuedControl < 0:
		return bad("MaxQueuedControl", c.MaxQueuedControl, "must be positive")
	case c.ConnMemory < 0:
		return bad("ConnMemory", c.ConnMemory, "must be positive")
	case c.ReadBufferSize < 256:
		return bad("ReadBufferSize", c.ReadBufferSize, "must be at least 256 bytes")
	}
	return nil
}

// Heartbeats reports whether heartbeats are enabled.
func (c Config) Heartbeats() bool { return c.HeartbeatInterval >= 0 }

// MaxPingGrid bounds the grid PINGs are sent on (see PingGrid).
const MaxPingGrid = 50 * time.Millisecond

// PingGrid is the step of the grid on which a connection with this
// configuration sends its PINGs, or 0 with heartbeats off. A PING falls due
// HeartbeatInterval after the last bytes received or the last PING sent,
// and leaves at the first multiple of the step, on the transport's clock,
// at or after that time (docs/protocol.md §8): the PINGs of many idle
// connections, due at scattered times, leave together, in one wake-up of
// their transport instead of one each, and so do the PONGs that answer
// them on the peer's side. The step is MaxPingGrid, a sixteenth of the
// interval or an eighth of the margin between the interval and
// HeartbeatTimeout, whichever is least (at least 1ns), so that a PING is
// never late by a sizeable share of either: a peer's round trip must fit
// in the rest of the margin.
func (c Config) PingGrid() time.Duration {
	c = c.WithDefaults()
	if !c.Heartbeats() {
		return 0
	}
	return max(min(MaxPingGrid, c.HeartbeatInterval/16, (c.HeartbeatTimeout-c.HeartbeatInterval)/8), 1)
}

// HeartbeatBound is how long heartbeats take at most to find a dead peer,
// HeartbeatTimeout, or 0 with heartbeats off. The server and the client set
// TCP_USER_TIMEOUT to it unless told otherwise, so that unacknowledged data
// cannot hold a connection longer than the heartbeat would.
func (c Config) HeartbeatBound() time.Duration {
	c = c.WithDefaults()
	if !c.Heartbeats() {
		return 0
	}
	return c.HeartbeatTimeout
}
