package core

// What each seed of the simulation draws: configurations, transport
// behaviour and faults.

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tcppro/tcppro/session"
)

// simParams is what a seed draws: configurations, transport behaviour and
// faults.
type simParams struct {
	flood        bool // a raw client floods PINGs and never reads
	calm         bool // no faults, quick transports
	cli, srv     session.Config
	budget       int
	pipeCap      [2]int // client→server, server→client
	writeMax     [2]int // Transmit's max: usual, sometimes
	readDelayMax int64
	writeLatMax  int64
	stallPct     int
	stallMax     int64
	tinyReadPct  int
	spuriousPct  int
	resetOnClose bool
	refusePct    int
	activity     int64
	nCalls       int
	goAwayAt     []int64
	closeAt      int64
	closeSide    int8
	freezeSide   int8
	freezeAt     int64
	freezeFor    int64
	readStopAt   int64
	readStopFor  int64
}

func (p *simParams) String() string {
	cfg := func(c session.Config) string {
		return fmt.Sprintf("{hb %v/%v frame %d msg %d inflight %d wq %d ctrl %d mem %d wt %v linger %v}",
			c.HeartbeatInterval, c.HeartbeatTimeout, c.MaxFrameSize, c.MaxMessageSize, c.MaxInFlight,
			c.WriteQueueSize, c.MaxQueuedControl, c.ConnMemory, c.WriteTimeout, c.LingerTimeout)
	}
	d := func(t int64) string { return time.Duration(t).String() }
	s := fmt.Sprintf("flood=%t calm=%t\n  client %s\n  server %s\n  budget %d pipes %v writeMax %v readDelay %s writeLat %s stall %d%%/%s tinyReads %d%% spuriousTicks %d%% reset %t refuse %d%% activity %s calls %d",
		p.flood, p.calm, cfg(p.cli), cfg(p.srv), p.budget, p.pipeCap, p.writeMax, d(p.readDelayMax), d(p.writeLatMax),
		p.stallPct, d(p.stallMax), p.tinyReadPct, p.spuriousPct, p.resetOnClose, p.refusePct, d(p.activity), p.nCalls)
	for _, g := range p.goAwayAt {
		s += " goaway@" + d(g)
	}
	if p.closeAt != 0 {
		s += fmt.Sprintf(" close(%d)@%s", p.closeSide, d(p.closeAt))
	}
	if p.freezeFor != 0 {
		s += fmt.Sprintf(" freeze(%d)@%s for %s", p.freezeSide, d(p.freezeAt), d(p.freezeFor))
	}
	if p.readStopFor != 0 {
		s += fmt.Sprintf(" clientReadStop@%s for %s", d(p.readStopAt), d(p.readStopFor))
	}
	return s
}

func pick[T any](r *rand.Rand, v ...T) T { return v[r.IntN(len(v))] }

func between(r *rand.Rand, lo, hi int64) int64 { return lo + r.Int64N(hi-lo+1) }

func genConfig(r *rand.Rand, server, calm bool) session.Config {
	var c session.Config
	hbi := time.Duration(between(r, 100, 500)) * time.Millisecond
	if r.IntN(8) == 0 {
		hbi = time.Duration(between(r, 800, 2000)) * time.Millisecond // the ping grid's step is its 50ms bound
	}
	c.HeartbeatInterval = hbi
	c.HeartbeatTimeout = 2*hbi + time.Duration(r.Int64N(int64(2*hbi)))
	if r.IntN(8) == 0 {
		// A timeout close to the interval: an eighth of the margin bounds
		// the ping grid's step.
		c.HeartbeatTimeout = hbi + time.Duration(between(r, 40, int64(hbi/2/time.Millisecond)))*time.Millisecond
	}
	if r.IntN(25) == 0 {
		c.HeartbeatInterval = -1
	}
	c.MaxFrameSize = pick(r, uint32(16<<10), uint32(16<<10+r.IntN(16<<10)), 32<<10, 64<<10)
	c.MaxMessageSize = 1 << 20
	if r.IntN(10) < 3 {
		c.MaxMessageSize = uint32(between(r, 64<<10, 256<<10))
	}
	c.MaxInFlight = 1 + r.IntN(4)
	if r.IntN(5) == 0 {
		c.MaxInFlight = pick(r, 8, 128)
	}
	if r.IntN(2) == 0 {
		c.WriteQueueSize = int(between(r, 4<<10, 64<<10))
	}
	if r.IntN(2) == 0 {
		c.MaxQueuedControl = int(between(r, 2, 16))
	}
	if server && r.IntN(2) == 0 {
		c.ConnMemory = int(between(r, 32<<10, 512<<10))
	}
	if !calm && r.IntN(10) < 3 {
		c.WriteTimeout = time.Duration(between(r, 2000, 5000)) * time.Millisecond
	}
	if !calm && r.IntN(10) == 0 {
		c.FrameReadTimeout = time.Duration(between(r, 50, 1000)) * time.Millisecond
	}
	if !calm && r.IntN(10) == 0 {
		c.HandshakeTimeout = time.Duration(between(r, 1, 100)) * time.Millisecond
	}
	if r.IntN(2) == 0 {
		c.LingerTimeout = time.Duration(between(r, 100, 1000)) * time.Millisecond
	}
	return c.WithDefaults()
}

func genParams(r *rand.Rand) *simParams {
	p := &simParams{}
	p.pipeCap = [2]int{int(between(r, 4<<10, 256<<10)), int(between(r, 4<<10, 256<<10))}
	p.writeMax = [2]int{int(between(r, 16<<10, 64<<10)), int(between(r, 64<<10, 1<<20))}
	p.spuriousPct = pick(r, 0, 5, 20)
	p.tinyReadPct = pick(r, 0, 5, 20)
	p.budget = 1 << 40
	if r.IntN(20) == 0 {
		p.flood = true
		p.srv = genConfig(r, true, false)
		p.srv.WriteQueueSize = session.DefaultWriteQueueSize
		p.srv.MaxQueuedControl = int(between(r, 1, 300))
		p.srv.HeartbeatInterval, p.srv.HeartbeatTimeout = time.Second, 10*time.Second
		p.srv.HandshakeTimeout = session.DefaultHandshakeTimeout
		p.srv.FrameReadTimeout = session.DefaultFrameReadTimeout
		p.writeMax[1] = p.writeMax[0]
		p.readDelayMax = between(r, 0, 2*ms)
		return p
	}
	p.calm = r.IntN(5) < 2
	p.cli = genConfig(r, false, p.calm)
	p.srv = genConfig(r, true, p.calm)
	if p.calm {
		p.srv.MaxQueuedControl = max(p.srv.MaxQueuedControl, 3)
		p.readDelayMax = between(r, 0, ms)
		p.writeLatMax = between(r, 0, ms)
	} else {
		p.readDelayMax = pick(r, ms, 5*ms, 20*ms)
		p.writeLatMax = pick(r, ms, 5*ms, 20*ms)
		p.stallPct = pick(r, 0, 1, 5)
		p.stallMax = pick(r, 100*ms, 2*sec)
		p.resetOnClose = r.IntN(3) == 0
	}
	if r.IntN(2) == 0 {
		p.budget = int(between(r, 32<<10, 1<<20))
	}
	p.refusePct = pick(r, 0, 0, 10, 30)
	p.activity = between(r, 300*ms, 3*sec)
	p.nCalls = int(between(r, 5, 60))
	for range pick(r, 0, 0, 1, 2) {
		p.goAwayAt = append(p.goAwayAt, r.Int64N(p.activity))
	}
	if p.calm {
		return p
	}
	if r.IntN(4) == 0 {
		p.closeAt, p.closeSide = 1+r.Int64N(p.activity), int8(r.IntN(2))
	}
	if r.IntN(5) == 0 {
		p.freezeSide = int8(r.IntN(2))
		p.freezeAt = r.Int64N(p.activity)
		hbt := p.cli.HeartbeatTimeout
		if p.freezeSide == 0 {
			hbt = p.srv.HeartbeatTimeout
		}
		p.freezeFor = int64(hbt)*3/2 + r.Int64N(int64(hbt)*2)
	}
	if r.IntN(4) == 0 {
		p.readStopAt = r.Int64N(p.activity)
		p.readStopFor = between(r, 50*ms, int64(3*p.cli.HeartbeatTimeout))
	}
	return p
}
