package session

import (
	"fmt"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/wire"
)

// Config holds the per-connection limits and timers. The zero value of any
// field means its default, so Config{} is a valid configuration; the defaults
// are what DefaultConfig returns.
type Config struct {
	// HeartbeatInterval is how long a connection may receive nothing before
	// it sends a PING. Any received frame counts as proof of life, so a busy
	// connection sends no PINGs. Default 5s. A negative value disables
	// heartbeats (liveness then rests on TCP alone: not recommended).
	HeartbeatInterval time.Duration

	// HeartbeatTimeout is how long after sending a PING the connection waits
	// for any frame before declaring the peer dead (ErrPeerDead). A silent
	// peer is therefore detected within HeartbeatInterval+HeartbeatTimeout
	// plus one monitor tick. Default 5s.
	HeartbeatTimeout time.Duration

	// FrameReadTimeout bounds how long a frame that has started arriving may
	// take to complete (slow-loris protection). It never applies to an idle
	// connection between frames. Default 10s.
	FrameReadTimeout time.Duration

	// WriteTimeout is how long queued output may make no progress (the peer
	// stopped reading, its window is closed) before the connection is cut
	// with ErrWriteTimeout. It also bounds how long in-flight requests may
	// still finish after the peer half-closed. Default 10s.
	WriteTimeout time.Duration

	// MaxFrameSize is the largest payload accepted from the peer. A larger
	// declared length is refused before anything is allocated. Default
	// wire.DefaultMaxFrameSize (4 MiB).
	MaxFrameSize uint32

	// MaxInFlight is the per-connection limit of requests in flight. A server
	// stops reading from a connection that reaches it (TCP backpressure); a
	// client waits for a free slot before sending. Default 128.
	MaxInFlight int

	// WriteQueueSize bounds the bytes queued for writing on one connection;
	// senders wait (bounded by WriteTimeout or their context) when it is
	// full. A single frame larger than the bound is still sent, alone.
	// Default 1 MiB.
	WriteQueueSize int

	// ReadBufferSize is the size of the pooled read buffer a connection
	// borrows while data is arriving. Idle connections hold no buffer.
	// Default 16 KiB.
	ReadBufferSize int

	// LingerTimeout bounds how long a connection that has sent its FIN (after
	// GOAWAY, or after the peer's FIN) waits for the peer's FIN before it is
	// closed outright. Default 2s.
	LingerTimeout time.Duration
}

// Defaults, as documented on the Config fields.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHeartbeatTimeout  = 5 * time.Second
	DefaultFrameReadTimeout  = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxInFlight       = 128
	DefaultWriteQueueSize    = 1 << 20
	DefaultReadBufferSize    = 16 << 10
	DefaultLingerTimeout     = 2 * time.Second
)

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: DefaultHeartbeatInterval,
		HeartbeatTimeout:  DefaultHeartbeatTimeout,
		FrameReadTimeout:  DefaultFrameReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		MaxFrameSize:      wire.DefaultMaxFrameSize,
		MaxInFlight:       DefaultMaxInFlight,
		WriteQueueSize:    DefaultWriteQueueSize,
		ReadBufferSize:    DefaultReadBufferSize,
		LingerTimeout:     DefaultLingerTimeout,
	}
}

// ConfigError reports an invalid configuration field.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// WithDefaults returns c with every zero field replaced by its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	defaults.Set(&c.HeartbeatInterval, d.HeartbeatInterval)
	defaults.Set(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	defaults.Set(&c.FrameReadTimeout, d.FrameReadTimeout)
	defaults.Set(&c.WriteTimeout, d.WriteTimeout)
	defaults.Set(&c.MaxFrameSize, d.MaxFrameSize)
	defaults.Set(&c.MaxInFlight, d.MaxInFlight)
	defaults.Set(&c.WriteQueueSize, d.WriteQueueSize)
	defaults.Set(&c.ReadBufferSize, d.ReadBufferSize)
	defaults.Set(&c.LingerTimeout, d.LingerTimeout)
	return c
}

// Validate reports the first invalid field of c (after defaults), naming the
// field and the bad value.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.HeartbeatInterval > 0 && c.HeartbeatTimeout < 0:
		return &ConfigError{"HeartbeatTimeout", c.HeartbeatTimeout, "must be positive when heartbeats are on"}
	case c.FrameReadTimeout < 0:
		return &ConfigError{"FrameReadTimeout", c.FrameReadTimeout, "must be positive"}
	case c.WriteTimeout < 0:
		return &ConfigError{"WriteTimeout", c.WriteTimeout, "must be positive"}
	case c.LingerTimeout < 0:
		return &ConfigError{"LingerTimeout", c.LingerTimeout, "must be positive"}
	case c.MaxFrameSize < 64:
		return &ConfigError{"MaxFrameSize", c.MaxFrameSize, "must be at least 64 bytes"}
	case c.MaxInFlight < 0:
		return &ConfigError{"MaxInFlight", c.MaxInFlight, "must be positive"}
	case c.WriteQueueSize < 0:
		return &ConfigError{"WriteQueueSize", c.WriteQueueSize, "must be positive"}
	case c.ReadBufferSize < 256:
		return &ConfigError{"ReadBufferSize", c.ReadBufferSize, "must be at least 256 bytes"}
	}
	return nil
}

// heartbeats reports whether heartbeats are enabled.
func (c Config) heartbeats() bool { return c.HeartbeatInterval > 0 }

// HeartbeatBound is how long heartbeats take at most to find a dead peer,
// HeartbeatInterval+HeartbeatTimeout, or 0 with heartbeats off. The server
// and the client set TCP_USER_TIMEOUT to it unless told otherwise.
func (c Config) HeartbeatBound() time.Duration {
	if !c.heartbeats() {
		return 0
	}
	return c.HeartbeatInterval + c.HeartbeatTimeout
}

// TickInterval is how often a Monitor should tick connections with this
// configuration: a tenth of the shortest timer, kept within [5ms, 1s]. It is
// the granularity of every timeout above.
func (c Config) TickInterval() time.Duration {
	c = c.WithDefaults()
	d := c.FrameReadTimeout
	for _, t := range []time.Duration{c.HeartbeatInterval, c.HeartbeatTimeout, c.WriteTimeout, c.LingerTimeout} {
		if t > 0 && t < d {
			d = t
		}
	}
	d /= 10
	return min(max(d, 5*time.Millisecond), time.Second)
}
