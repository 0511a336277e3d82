package session

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/wire"
)

// recorder is a Handler and an output sink for driving a Protocol without
// sockets.
type recorder struct {
	requests  []uint64
	responses map[uint64]string
	errs      map[uint64]wire.Code
	goAway    []uint64
	out       []wire.Frame
}

func newRecorder() *recorder {
	return &recorder{responses: map[uint64]string{}, errs: map[uint64]wire.Code{}}
}

func (r *recorder) HandleRequest(id uint64, _ time.Duration, _, _ []byte) {
	r.requests = append(r.requests, id)
}
func (r *recorder) HandleResponse(id uint64, body []byte) { r.responses[id] = string(body) }
func (r *recorder) HandleError(id uint64, code wire.Code, _ []byte) {
	r.errs[id] = code
}
func (r *recorder) HandleGoAway(lastID uint64, _ wire.Reason, _ []byte) {
	r.goAway = append(r.goAway, lastID)
}

func (r *recorder) send(b []byte) {
	var d wire.Decoder
	f, n, err := d.Next(b)
	if err != nil || n != len(b) {
		panic("protocol sent a malformed frame")
	}
	f.Payload = append([]byte(nil), f.Payload...)
	r.out = append(r.out, f)
}

func (r *recorder) last() wire.Frame {
	if len(r.out) == 0 {
		return wire.Frame{}
	}
	return r.out[len(r.out)-1]
}

// clock is a fake monotonic clock for driving a Protocol.
type clock struct{ t time.Duration }

func (c *clock) now() int64 { return int64(c.t) }

// deliver hands b to p as a transport does: an arrival, then the bytes.
func deliver(p *Protocol, b []byte) (int, error) {
	p.Arrived(len(b))
	return p.Feed(b)
}

// tickAt moves the clock to d and ticks.
func tickAt(p *Protocol, c *clock, d time.Duration) error {
	c.t = d
	return p.Tick()
}

func testConfig() Config {
	return Config{HeartbeatInterval: time.Second, HeartbeatTimeout: time.Second, MaxInFlight: 2}
}

func TestHeartbeatSilentPeerIsDead(t *testing.T) {
	r := newRecorder()
	clk := &clock{}
	p := NewProtocol(RoleClient, testConfig(), r, r.send, clk.now)
	if err := tickAt(p, clk, 900*time.Millisecond); err != nil || len(r.out) != 0 {
		t.Fatalf("before the interval: err %v, sent %d frames", err, len(r.out))
	}
	if err := tickAt(p, clk, time.Second); err != nil {
		t.Fatal(err)
	}
	if r.last().Type != wire.TypePing {
		t.Fatalf("after the interval: want PING, got %v", r.last().Header)
	}
	if err := tickAt(p, clk, 1900*time.Millisecond); err != nil {
		t.Fatalf("within the timeout: %v", err)
	}
	if len(r.out) != 1 {
		t.Fatalf("sent %d PINGs, want exactly one per silence", len(r.out))
	}
	if err := tickAt(p, clk, 2*time.Second); !errors.Is(err, ErrPeerDead) {
		t.Fatalf("after interval+timeout: err = %v, want ErrPeerDead", err)
	}
}

// TestHeartbeatTimesArrivals: silence is measured from when bytes arrived,
// not from the tick that noticed them.
func TestHeartbeatTimesArrivals(t *testing.T) {
	r := newRecorder()
	clk := &clock{}
	p := NewProtocol(RoleClient, testConfig(), r, r.send, clk.now)
	clk.t = 50 * time.Millisecond
	if _, err := deliver(p, wire.AppendResponse(nil, 1, nil)); err != nil {
		t.Fatal(err)
	}
	if err := tickAt(p, clk, 1049*time.Millisecond); err != nil || len(r.out) != 0 {
		t.Fatalf("PING %v before a full interval of silence (err %v)", r.out, err)
	}
	if err := tickAt(p, clk, 1050*time.Millisecond); err != nil || r.last().Type != wire.TypePing {
		t.Fatalf("no PING after a full interval of silence (err %v)", err)
	}
}

func TestHeartbeatAnyFrameProvesLife(t *testing.T) {
	r := newRecorder()
	clk := &clock{}
	p := NewProtocol(RoleClient, testConfig(), r, r.send, clk.now)
	// A busy connection: a response arrives every 500ms: no PING ever.
	for i := 1; i <= 20; i++ {
		clk.t = time.Duration(i) * 500 * time.Millisecond
		if _, err := deliver(p, wire.AppendResponse(nil, uint64(i), []byte("x"))); err != nil {
			t.Fatal(err)
		}
		if err := p.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.out) != 0 {
		t.Fatalf("a busy connection sent %d frames (PINGs)", len(r.out))
	}
	// Silence, a PING, then the PONG: alive again, and the RTT is known.
	if err := tickAt(p, clk, 11*time.Second); err != nil || r.last().Type != wire.TypePing {
		t.Fatalf("want a PING, got %v (err %v)", r.last().Header, err)
	}
	data, _ := wire.ParsePing(r.last().Payload)
	clk.t += 30 * time.Millisecond
	if _, err := deliver(p, wire.AppendPong(nil, data)); err != nil {
		t.Fatal(err)
	}
	if err := tickAt(p, clk, 12500*time.Millisecond); err != nil {
		t.Fatalf("after PONG: %v", err)
	}
	if p.RTT() != 30*time.Millisecond {
		t.Fatalf("RTT %v, want 30ms", p.RTT())
	}
}

func TestPingAnsweredWithPong(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleServer, testConfig(), r, r.send, nil)
	if _, err := p.Feed(wire.AppendPing(nil, 0xfeed)); err != nil {
		t.Fatal(err)
	}
	f := r.last()
	data, _ := wire.ParsePing(f.Payload)
	if f.Type != wire.TypePong || data != 0xfeed {
		t.Fatalf("got %v data %x, want PONG feed", f.Header, data)
	}
}

func TestHeartbeatsDisabled(t *testing.T) {
	r := newRecorder()
	cfg := testConfig()
	cfg.HeartbeatInterval = -1
	clk := &clock{}
	p := NewProtocol(RoleClient, cfg, r, r.send, clk.now)
	if err := tickAt(p, clk, time.Hour); err != nil || len(r.out) != 0 {
		t.Fatalf("disabled heartbeats: err %v, %d frames", err, len(r.out))
	}
}

func TestFeedPartialFramesAndSplits(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleClient, testConfig(), r, r.send, nil)
	var stream []byte
	for i := uint64(1); i <= 3; i++ {
		stream = wire.AppendResponse(stream, i, []byte("body"))
	}
	// Feed byte by byte, keeping what was not consumed, as a transport does.
	var buf []byte
	for _, b := range stream {
		buf = append(buf, b)
		n, err := p.Feed(buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[n:]
		if len(buf) > 0 {
			if need := p.Need(buf); need <= len(buf) {
				t.Fatalf("Need(%d bytes) = %d", len(buf), need)
			}
		}
	}
	if len(r.responses) != 3 || r.responses[2] != "body" {
		t.Fatalf("responses %v", r.responses)
	}
}

func TestFrameTimeoutOnlyForPartialFrames(t *testing.T) {
	r := newRecorder()
	cfg := testConfig()
	cfg.HeartbeatInterval = -1
	cfg.FrameReadTimeout = 10 * time.Millisecond
	clk := &clock{}
	p := NewProtocol(RoleServer, cfg, r, r.send, clk.now)
	if err := tickAt(p, clk, time.Hour); err != nil {
		t.Fatalf("idle connection: %v", err)
	}
	p.MarkPartial(true)
	if err := tickAt(p, clk, time.Hour+9*time.Millisecond); err != nil {
		t.Fatalf("before the frame timeout: %v", err)
	}
	if err := tickAt(p, clk, time.Hour+10*time.Millisecond); !errors.Is(err, ErrFrameTimeout) {
		t.Fatalf("err = %v, want ErrFrameTimeout", err)
	}
	p.ClearPartial()
	if err := p.Tick(); err != nil {
		t.Fatalf("after the frame completed: %v", err)
	}
}

func TestServerInFlightLimitStopsFeeding(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleServer, testConfig(), r, r.send, nil) // MaxInFlight 2
	var stream []byte
	for i := uint64(1); i <= 3; i++ {
		stream = wire.AppendRequest(stream, i, 0, "m", nil)
	}
	n, err := p.Feed(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.requests) != 2 || !p.Blocked() {
		t.Fatalf("dispatched %v, blocked %v: want 2 and blocked", r.requests, p.Blocked())
	}
	if n == len(stream) {
		t.Fatal("consumed the request over the limit")
	}
	p.Done()
	if p.Blocked() {
		t.Fatal("still blocked after Done")
	}
	if _, err := p.Feed(stream[n:]); err != nil {
		t.Fatal(err)
	}
	if len(r.requests) != 3 {
		t.Fatalf("dispatched %v after Done", r.requests)
	}
}

func TestGoAwayDropsLaterRequests(t *testing.T) {
	r := newRecorder()
	cfg := testConfig()
	cfg.MaxInFlight = 100
	p := NewProtocol(RoleServer, cfg, r, r.send, nil)
	if _, err := p.Feed(wire.AppendRequest(wire.AppendRequest(nil, 1, 0, "m", nil), 2, 0, "m", nil)); err != nil {
		t.Fatal(err)
	}
	last, first := p.GoAway(wire.ReasonShutdown, "bye")
	if last != 2 || !first {
		t.Fatalf("GoAway = %d, %v; want 2, true", last, first)
	}
	f := r.last()
	id, reason, _, _ := wire.ParseGoAway(f.Payload)
	if f.Type != wire.TypeGoAway || id != 2 || reason != wire.ReasonShutdown {
		t.Fatalf("sent %v (last %d, reason %v)", f.Header, id, reason)
	}
	if _, err := p.Feed(wire.AppendRequest(nil, 3, 0, "m", nil)); err != nil {
		t.Fatal(err)
	}
	if len(r.requests) != 2 {
		t.Fatalf("a request above the GOAWAY's last id was processed: %v", r.requests)
	}
	if again, first := p.GoAway(wire.ReasonShutdown, "bye"); again != 2 || first {
		t.Fatalf("second GoAway = %d, %v", again, first)
	}
	if len(r.out) != 1 {
		t.Fatal("second GoAway sent another frame")
	}
}

func TestClientLearnsPeerGoAway(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleClient, testConfig(), r, r.send, nil)
	if _, err := p.Feed(wire.AppendGoAway(nil, 7, wire.ReasonMaxAge, "old")); err != nil {
		t.Fatal(err)
	}
	if ok, last := p.PeerGoingAway(); !ok || last != 7 || len(r.goAway) != 1 {
		t.Fatalf("PeerGoingAway = %v, %d", ok, last)
	}
}

func TestProtocolViolations(t *testing.T) {
	cases := []struct {
		name  string
		role  Role
		input []byte
		want  error
	}{
		{"request to client", RoleClient, wire.AppendRequest(nil, 1, 0, "m", nil), wire.ErrProtocol},
		{"response to server", RoleServer, wire.AppendResponse(nil, 1, nil), wire.ErrProtocol},
		{"ids must increase", RoleServer, wire.AppendRequest(wire.AppendRequest(nil, 5, 0, "m", nil), 5, 0, "m", nil), wire.ErrProtocol},
		{"too large", RoleServer, wire.AppendHeader(nil, wire.Header{Length: 1 << 30, Type: wire.TypeResponse, ID: 1}), wire.ErrFrameTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecorder()
			cfg := testConfig()
			cfg.MaxInFlight = 10
			p := NewProtocol(tc.role, cfg, r, r.send, nil)
			if _, err := p.Feed(tc.input); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConnectionLevelErrorEndsConnection(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleClient, testConfig(), r, r.send, nil)
	_, err := p.Feed(wire.AppendError(nil, 0, wire.CodeBusy, "full"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != wire.CodeBusy || !IsNotProcessed(err) {
		t.Fatalf("err = %v, want a retryable *RemoteError BUSY", err)
	}
	if _, err := p.Feed(wire.AppendError(nil, 3, wire.CodeApplication, "no")); err != nil {
		t.Fatal(err)
	}
	if r.errs[3] != wire.CodeApplication {
		t.Fatalf("request error not delivered: %v", r.errs)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	err := Config{ReadBufferSize: 10}.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "ReadBufferSize" || ce.Value != 10 {
		t.Fatalf("err = %v, want ConfigError naming ReadBufferSize and 10", err)
	}
	if got := DefaultConfig().TickInterval(); got != 200*time.Millisecond {
		t.Fatalf("default tick %v", got)
	}
}

// TestInFlightLimitLetsControlFramesThrough: at the limit only requests
// wait; a PING behind them is still answered, so liveness never starves.
func TestInFlightLimitLetsControlFramesThrough(t *testing.T) {
	r := newRecorder()
	p := NewProtocol(RoleServer, testConfig(), r, r.send, nil) // MaxInFlight 2
	in := wire.AppendRequest(wire.AppendRequest(nil, 1, 0, "m", nil), 2, 0, "m", nil)
	in = wire.AppendPing(in, 9)
	n, err := p.Feed(in)
	if err != nil || n != len(in) {
		t.Fatalf("Feed = %d of %d, %v", n, len(in), err)
	}
	if f := r.last(); f.Type != wire.TypePong {
		t.Fatalf("the PING behind two requests at the limit got %v, want PONG", f.Header)
	}
	if n, _ := p.Feed(wire.AppendRequest(nil, 3, 0, "m", nil)); n != 0 {
		t.Fatal("a request over the limit was taken")
	}
}
