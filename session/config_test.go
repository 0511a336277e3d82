package session_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestValidateNamesField guards Config.Validate: each rule refuses its bad
// value with a *ConfigError naming the field and the value.
func TestValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		field string
		value any
		set   func(*session.Config)
	}{
		{"HeartbeatTimeout", 5 * time.Second, func(c *session.Config) { c.HeartbeatTimeout = 5 * time.Second }}, // equal to the default interval
		{"HeartbeatTimeout", time.Second, func(c *session.Config) { c.HeartbeatInterval, c.HeartbeatTimeout = 2*time.Second, time.Second }},
		{"HeartbeatTimeout", -time.Second, func(c *session.Config) { c.HeartbeatTimeout = -time.Second }},
		{"HandshakeTimeout", -time.Second, func(c *session.Config) { c.HandshakeTimeout = -time.Second }},
		{"FrameReadTimeout", -time.Second, func(c *session.Config) { c.FrameReadTimeout = -time.Second }},
		{"WriteTimeout", -time.Second, func(c *session.Config) { c.WriteTimeout = -time.Second }},
		{"LingerTimeout", -time.Second, func(c *session.Config) { c.LingerTimeout = -time.Second }},
		{"MaxFrameSize", uint32(wire.MinMaxFrameSize - 1), func(c *session.Config) { c.MaxFrameSize = wire.MinMaxFrameSize - 1 }},
		{"MaxFrameSize", uint32(wire.MaxMaxFrameSize + 1), func(c *session.Config) { c.MaxFrameSize = wire.MaxMaxFrameSize + 1 }},
		{"MaxInFlight", -1, func(c *session.Config) { c.MaxInFlight = -1 }},
		{"MaxInFlight", 1<<30 + 1, func(c *session.Config) { c.MaxInFlight = 1<<30 + 1 }},
		{"WriteQueueSize", -1, func(c *session.Config) { c.WriteQueueSize = -1 }},
		{"MaxQueuedControl", -1, func(c *session.Config) { c.MaxQueuedControl = -1 }},
		{"ConnMemory", -1, func(c *session.Config) { c.ConnMemory = -1 }},
		{"ReadBufferSize", 255, func(c *session.Config) { c.ReadBufferSize = 255 }},
		{"ReadBufferSize", -1, func(c *session.Config) { c.ReadBufferSize = -1 }},
	} {
		t.Run(fmt.Sprintf("%s=%v", tc.field, tc.value), func(t *testing.T) {
			var cfg session.Config
			tc.set(&cfg)
			err := cfg.Validate()
			var ce *session.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *session.ConfigError", err)
			}
			if ce.Field != tc.field || ce.Value != tc.value {
				t.Errorf("ConfigError{Field: %q, Value: %v}, want {%q, %v}", ce.Field, ce.Value, tc.field, tc.value)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.field) || !strings.Contains(msg, fmt.Sprint(tc.value)) {
				t.Errorf("message %q names neither the field %s nor the value %v", msg, tc.field, tc.value)
			}
		})
	}
}

// TestValidateAccepts guards the configurations that are valid: the zero
// Config (every default), the defaults spelled out, the smallest and
// largest limits, and heartbeats turned off, which leaves HeartbeatTimeout
// unchecked.
func TestValidateAccepts(t *testing.T) {
	for name, cfg := range map[string]session.Config{
		"zero":                {},
		"defaults":            session.DefaultConfig(),
		"timeout just above":  {HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second + time.Millisecond},
		"heartbeats off":      {HeartbeatInterval: -1},
		"heartbeats off, low": {HeartbeatInterval: -1, HeartbeatTimeout: time.Millisecond},
		"smallest limits": {
			MaxFrameSize: wire.MinMaxFrameSize, MaxInFlight: 1, WriteQueueSize: 1,
			MaxMessageSize: 1, MaxQueuedControl: 1, ConnMemory: 1, ReadBufferSize: 256,
		},
		"largest limits": {MaxFrameSize: wire.MaxMaxFrameSize, MaxInFlight: 1 << 30},
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		}
	}
}

// TestWithDefaults guards the defaults: every zero field takes its
// documented default, every set field is kept, negative ones included.
func TestWithDefaults(t *testing.T) {
	want := session.Config{
		HeartbeatInterval: session.DefaultHeartbeatInterval,
		HeartbeatTimeout:  session.DefaultHeartbeatTimeout,
		HandshakeTimeout:  session.DefaultHandshakeTimeout,
		FrameReadTimeout:  session.DefaultFrameReadTimeout,
		WriteTimeout:      session.DefaultWriteTimeout,
		LingerTimeout:     session.DefaultLingerTimeout,
		MaxFrameSize:      session.DefaultMaxFrameSize,
		MaxMessageSize:    session.DefaultMaxMessageSize,
		MaxInFlight:       session.DefaultMaxInFlight,
		WriteQueueSize:    session.DefaultWriteQueueSize,
		MaxQueuedControl:  session.DefaultMaxQueuedControl,
		ConnMemory:        session.DefaultConnMemory,
		ReadBufferSize:    session.DefaultReadBufferSize,
	}
	if got := (session.Config{}).WithDefaults(); got != want {
		t.Errorf("Config{}.WithDefaults() = %+v, want %+v", got, want)
	}
	if got := session.DefaultConfig(); got != want {
		t.Errorf("DefaultConfig() = %+v, want %+v", got, want)
	}
	if session.DefaultHeartbeatTimeout <= session.DefaultHeartbeatInterval {
		t.Errorf("default HeartbeatTimeout %v does not exceed the default HeartbeatInterval %v",
			session.DefaultHeartbeatTimeout, session.DefaultHeartbeatInterval)
	}

	set := session.Config{
		HeartbeatInterval: -1,
		HeartbeatTimeout:  3 * time.Second,
		HandshakeTimeout:  4 * time.Second,
		FrameReadTimeout:  5 * time.Second,
		WriteTimeout:      6 * time.Second,
		LingerTimeout:     7 * time.Second,
		MaxFrameSize:      wire.MinMaxFrameSize,
		MaxMessageSize:    100,
		MaxInFlight:       3,
		WriteQueueSize:    -2,
		MaxQueuedControl:  5,
		ConnMemory:        6,
		ReadBufferSize:    512,
	}
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v, want %+v", got, set)
	}
	one := session.Config{MaxInFlight: 7}.WithDefaults()
	if one.MaxInFlight != 7 || one.HeartbeatInterval != session.DefaultHeartbeatInterval || one.ConnMemory != session.DefaultConnMemory {
		t.Errorf("one field set: %+v, want it kept and the others defaulted", one)
	}
}

// TestHeartbeatBound guards the bound TCP_USER_TIMEOUT is set from:
// HeartbeatTimeout (its default when unset), or 0 with heartbeats off.
func TestHeartbeatBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  session.Config
		want time.Duration
	}{
		{"defaults", session.Config{}, session.DefaultHeartbeatTimeout},
		{"timeout set", session.Config{HeartbeatTimeout: 42 * time.Second}, 42 * time.Second},
		{"interval set", session.Config{HeartbeatInterval: time.Second}, session.DefaultHeartbeatTimeout},
		{"both set", session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}, 3 * time.Second},
		{"heartbeats off", session.Config{HeartbeatInterval: -1, HeartbeatTimeout: 3 * time.Second}, 0},
	} {
		if got := tc.cfg.HeartbeatBound(); got != tc.want {
			t.Errorf("%s: HeartbeatBound() = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (session.Config{HeartbeatInterval: -1}).Heartbeats() || !(session.Config{}).Heartbeats() {
		t.Error("Heartbeats(): want false for a negative interval only")
	}
}

// TestPingGrid pins the PING grid's step: MaxPingGrid, a sixteenth of the
// interval or an eighth of the margin below the timeout, whichever is
// least, never 0 with heartbeats on, 0 with them off.
func TestPingGrid(t *testing.T) {
	for _, c := range []struct {
		interval, timeout, want time.Duration
	}{
		{0, 0, 50 * time.Millisecond}, // the defaults: 5s and 10s
		{time.Second, 3 * time.Second, 50 * time.Millisecond},
		{160 * time.Millisecond, 10 * time.Second, 10 * time.Millisecond},
		{time.Second, 1080 * time.Millisecond, 10 * time.Millisecond},
		{time.Second, time.Second + 4, 1},
		{-1, 0, 0},
	} {
		cfg := session.Config{HeartbeatInterval: c.interval, HeartbeatTimeout: c.timeout}
		if got := cfg.PingGrid(); got != c.want {
			t.Errorf("interval %v, timeout %v: PingGrid() = %v, want %v", c.interval, c.timeout, got, c.want)
		}
	}
}

// TestDocumentedDefaults pins the defaults README and docs/protocol.md
// state, as figures: a changed default fails here until the docs are
// changed with it.
func TestDocumentedDefaults(t *testing.T) {
	d := session.DefaultConfig()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"HeartbeatInterval", d.HeartbeatInterval, 5 * time.Second},
		{"HeartbeatTimeout", d.HeartbeatTimeout, 10 * time.Second},
		{"HandshakeTimeout", d.HandshakeTimeout, 10 * time.Second},
		{"FrameReadTimeout", d.FrameReadTimeout, 10 * time.Second},
		{"WriteTimeout", d.WriteTimeout, 10 * time.Second},
		{"LingerTimeout", d.LingerTimeout, 2 * time.Second},
		{"MaxFrameSize", d.MaxFrameSize, uint32(64 << 10)},
		{"MaxMessageSize", d.MaxMessageSize, uint32(4 << 20)},
		{"MaxInFlight", d.MaxInFlight, 128},
		{"WriteQueueSize", d.WriteQueueSize, 1 << 20},
		{"MaxQueuedControl", d.MaxQueuedControl, 256},
		{"ConnMemory", d.ConnMemory, 8 << 20},
		{"ReadBufferSize", d.ReadBufferSize, 16 << 10},
	} {
		if c.got != c.want {
			t.Errorf("DefaultConfig().%s = %v, want %v (as documented)", c.name, c.got, c.want)
		}
	}
}
