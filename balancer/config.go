// Package balancer picks the server for each call of a client that talks
// to many (design practice 8): power of two choices over a cost that sees
// both load and speed, warm-up of servers that join a fleet already
// serving, outlier ejection with a panic rule, and deterministic
// subsetting.
//
// It is sans-I/O: it holds no connection, starts no goroutine and reads
// the time only through the clock it is given. Its user (package client)
// tells it which endpoints exist and are ready (Add, Remove, SetReady),
// asks it for one (Pick), reports how each call and each connect ended
// (Start, Done, Failed), and calls Tick when Tick last asked to be called.
// So its rules run on a fake clock in tests.
//
// # Cost and pick
//
// With the default policy, P2C, a pick draws two endpoints at random from
// those ready and not ejected and takes the one of lower cost:
//
//	cost = (latency + 1ns) × (calls in flight + 1)
//
// latency is the peak EWMA of Finagle and Linkerd as it behaves under load:
// a sample above the current value replaces it at once, and the value
// decays towards zero with the time constant Decay — so it is the largest
// recent sample, forgotten exponentially. A slow endpoint's cost stays high
// for a while after each slow answer; one that was slow once is tried
// again once its cost has decayed below the others'. An endpoint that has
// not answered yet (and is not a joiner, which starts at the fleet's mean)
// has no latency: while it holds no call it is the cheapest, so it is
// tried; once it holds calls it loses against every endpoint that has
// answered, so that a server that hangs on its first call does not draw
// the client's calls (Finagle's penalty). A pick is O(1) in the number of
// endpoints. RoundRobin is available instead.
//
// # Warm-up
//
// An endpoint added while another is ready (a server joining a fleet that
// already serves, not the first set of a client) and an endpoint back from
// ejection are warmed in: when one wins a pick, it takes the call only with
// a probability that grows linearly from 0.1 to 1 over WarmUp from the
// time it is first ready (the call goes to the other endpoint drawn
// otherwise; round-robin skips it likewise), and a joiner's latency starts
// at the fleet's mean rather than at zero, so every client does not rush
// to the fresh instance at once.
//
// # Outlier ejection
//
// An endpoint is ejected — not picked — after ConsecutiveFailures transport
// failures in a row (connects that fail, connections that end without
// GOAWAY: a dead peer, a reset; application errors and refusals never
// count, and an answer ends the run), or when, with enough
// calls in an Interval, its success rate is far below the fleet's. The
// ejection lasts BaseTime × the endpoint's ejection count, at most MaxTime,
// jittered by ±10%; the count decreases by one for every Interval the
// endpoint spends in service without a failure. At most MaxPercent of the
// endpoints are ejected at once (at least one may be). Panic rule: when no
// ready endpoint is left outside ejection, the ejected ones that are ready
// are picked rather than failing calls; as long as one healthy endpoint
// remains, none that is ejected is picked.
//
// # Subsetting
//
// Subset returns the deterministic subset of a server list that a client
// with a given id connects to (the Google SRE book, chapter 20): clients
// with consecutive ids spread their connections evenly over the servers.
package balancer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tcppro/tcppro/internal/defaults"
	"github.com/tcppro/tcppro/session"
)

// Policy names a way of picking endpoints.
type Policy string

// Policies.
const (
	// P2C: power of two choices on the peak-EWMA cost (the default).
	P2C Policy = "p2c"
	// RoundRobin: each ready endpoint in turn (warming endpoints are
	// skipped in proportion to their warm-up).
	RoundRobin Policy = "round-robin"
)

// Config configures a Balancer. Zero fields take the documented defaults.
type Config struct {
	// Policy is how endpoints are picked. Default P2C.
	Policy Policy

	// Decay is the time constant of the latency (peak EWMA): a sample's
	// value has decayed to 1/e of itself after Decay. Default 10s.
	Decay time.Duration

	// WarmUp is the time over which an endpoint that joins a serving fleet,
	// or comes back from ejection, reaches its full share. Default 10s;
	// negative disables warm-up.
	WarmUp time.Duration

	// Ejection configures outlier ejection.
	Ejection Ejection

	// Subset is how many servers of the set a client connects to (see
	// Subset); 0 connects to every one. Default 0: a connection costs a
	// server a few KiB and one heartbeat per interval, so fleets of up to a
	// few hundred servers need no subsetting; beyond, or with thousands of
	// clients, set it (20 to 50 keeps the load even).
	Subset int

	// SubsetID is the client's id among the clients of the fleet, counted
	// from 1 (a pod ordinal + 1, an instance number): clients with
	// consecutive ids spread their connections evenly. Default 0: a random
	// id, which spreads connections evenly only on average.
	SubsetID int

	// Logger receives ejections and returns. Default slog.Default().
	Logger *slog.Logger
}

// Ejection configures outlier ejection. Zero fields take the defaults.
type Ejection struct {
	// ConsecutiveFailures is the number of transport failures in a row
	// (failed connects; connections that ended without GOAWAY: a dead
	// peer, a reset, a write timeout — each counts once, however many
	// calls it carried) that ejects an endpoint. A call answered, even
	// with an application error, resets the count. Default 5; negative
	// disables.
	ConsecutiveFailures int

	// Interval is how often success rates are compared and ejection counts
	// decrease. Default 10s.
	Interval time.Duration

	// BaseTime is the length of a first ejection; the n-th lasts n times
	// longer. Default 30s.
	BaseTime time.Duration

	// MaxTime caps an ejection's length. Default 300s.
	MaxTime time.Duration

	// MaxPercent caps the share of the endpoints ejected at once (rounded
	// down, but at least one may be). Default 50: ejecting more than half
	// a fleet would pile its load on the rest, and when more than half
	// fails at once the fault is more likely on the client's side of the
	// network than in the servers.
	MaxPercent int

	// SuccessRateMinCalls is the number of calls an endpoint must have
	// ended in an Interval for its success rate to count (failures are
	// transport failures, calls that timed out on it and refusals).
	// Default 100; negative disables success-rate ejection.
	SuccessRateMinCalls int

	// SuccessRateMinEndpoints is how many endpoints must have enough calls
	// for success rates to be compared. Default 5.
	SuccessRateMinEndpoints int

	// SuccessRateStdevFactor: an endpoint whose success rate is below the
	// mean of those compared minus this many standard deviations, and at
	// least 5 points below the mean, is ejected. Default 1.9.
	SuccessRateStdevFactor float64
}

// Defaults, as documented on the fields.
const (
	DefaultDecay                   = 10 * time.Second
	DefaultWarmUp                  = 10 * time.Second
	DefaultConsecutiveFailures     = 5
	DefaultEjectionInterval        = 10 * time.Second
	DefaultEjectionBaseTime        = 30 * time.Second
	DefaultEjectionMaxTime         = 300 * time.Second
	DefaultMaxEjectionPercent      = 50
	DefaultSuccessRateMinCalls     = 100
	DefaultSuccessRateMinEndpoints = 5
	DefaultSuccessRateStdevFactor  = 1.9
)

// minSuccessGap is how far below the mean a success rate must be, besides
// the standard deviations, to eject: with near-identical rates the
// deviation is tiny and would eject for noise.
const minSuccessGap = 0.05

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	defaults.Set(&c.Policy, P2C)
	defaults.Set(&c.Decay, DefaultDecay)
	defaults.Set(&c.WarmUp, DefaultWarmUp)
	e := &c.Ejection
	defaults.Set(&e.ConsecutiveFailures, DefaultConsecutiveFailures)
	defaults.Set(&e.Interval, DefaultEjectionInterval)
	defaults.Set(&e.BaseTime, DefaultEjectionBaseTime)
	defaults.Set(&e.MaxTime, DefaultEjectionMaxTime)
	defaults.Set(&e.MaxPercent, DefaultMaxEjectionPercent)
	defaults.Set(&e.SuccessRateMinCalls, DefaultSuccessRateMinCalls)
	defaults.Set(&e.SuccessRateMinEndpoints, DefaultSuccessRateMinEndpoints)
	defaults.Set(&e.SuccessRateStdevFactor, DefaultSuccessRateStdevFactor)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field as a *session.ConfigError.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return &session.ConfigError{Field: field, Value: v, Reason: why}
	}
	c = c.withDefaults()
	e := c.Ejection
	switch {
	case c.Policy != P2C && c.Policy != RoundRobin:
		return bad("Policy", c.Policy, fmt.Sprintf("must be %q or %q", P2C, RoundRobin))
	case c.Decay < 0:
		return bad("Decay", c.Decay, "must be positive")
	case c.Subset < 0:
		return bad("Subset", c.Subset, "must not be negative (0: every server)")
	case c.SubsetID < 0:
		return bad("SubsetID", c.SubsetID, "must not be negative (0: random)")
	case e.Interval < 0:
		return bad("Ejection.Interval", e.Interval, "must be positive")
	case e.BaseTime < 0:
		return bad("Ejection.BaseTime", e.BaseTime, "must be positive")
	case e.MaxTime < e.BaseTime:
		return bad("Ejection.MaxTime", e.MaxTime, "must be at least Ejection.BaseTime")
	case e.MaxPercent < 0 || e.MaxPercent > 100:
		return bad("Ejection.MaxPercent", e.MaxPercent, "must be in 0..100")
	case e.SuccessRateMinEndpoints < 1:
		return bad("Ejection.SuccessRateMinEndpoints", e.SuccessRateMinEndpoints, "must be at least 1")
	case e.SuccessRateStdevFactor < 0:
		return bad("Ejection.SuccessRateStdevFactor", e.SuccessRateStdevFactor, "must not be negative")
	}
	return nil
}
