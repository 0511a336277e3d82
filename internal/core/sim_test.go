package core

// Deterministic simulation of a client Conn and a server Conn wired
// together through the harness of sim_harness_test.go and
// sim_trace_test.go. Each seed draws a configuration, transport behaviour
// and faults (sim_params_test.go), and a schedule of calls (this file); the
// invariants are checked as events happen and after every step
// (sim_check_test.go). A failing seed prints the command that reruns it
// with its whole trace:
//
//	go test ./internal/core -run 'TestSimulation$'                       # the default seeds
//	go test ./internal/core -run 'TestSimulation$' -sim.seeds=100000 -sim.first=0
//	go test ./internal/core -run 'TestSimulation$' -v -sim.seed=12345 -sim.trace

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

var (
	simSeeds = flag.Int("sim.seeds", 0, "number of seeds TestSimulation runs (0: its default)")
	simFirst = flag.Uint64("sim.first", 0, "first seed TestSimulation runs")
	simSeed  = flag.Int64("sim.seed", -1, "run only this seed")
	simTrace = flag.Bool("sim.trace", false, "print every event of the seeds run")
)

// simDefaultSeeds is the number of seeds a plain go test runs.
const simDefaultSeeds = 3000

// simT0 is the clock at the start of a run (0 is never a valid time).
const simT0 = 1000 * sec

func TestSimulation(t *testing.T) {
	if *simSeed >= 0 {
		runSeeds(t, uint64(*simSeed), 1)
		return
	}
	n := *simSeeds
	if n == 0 {
		n = simDefaultSeeds
		if testing.Short() {
			n = simDefaultSeeds / 10
		}
	}
	runSeeds(t, *simFirst, n)
}

func runSeeds(t *testing.T, first uint64, n int) {
	start := time.Now()
	failures := 0
	stats := make(map[string]int)
	for seed := first; seed < first+uint64(n); seed++ {
		var print func(string)
		if *simTrace {
			print = func(s string) { fmt.Println(s) }
		}
		w := simulate(seed, print, stats)
		if w.err == "" {
			continue
		}
		failures++
		t.Errorf("seed %d: step %d at t=%s: %s\nreproduce: go test ./internal/core -run 'TestSimulation$' -v -sim.seed=%d -sim.trace\nparams: %s\nlast events:\n%s",
			seed, w.errStep, fmtTime(w.now-simT0), w.err, seed, w.p, w.traceTail())
		if failures == 3 {
			t.Fatalf("stopping after %d failing seeds", failures)
		}
	}
	t.Logf("%d seeds from %d in %v", n, first, time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		keys := slices.Sorted(maps.Keys(stats))
		for _, k := range keys {
			t.Logf("%8d  %s", stats[k], k)
		}
	}
}

// simulate runs one seed, adding what happened to stats.
func simulate(seed uint64, print func(string), stats map[string]int) *world {
	r := rand.New(rand.NewPCG(seed, 0x7463_7070_726f))
	w := &world{seed: seed, rng: r, p: genParams(r), now: simT0, stats: stats}
	w.tr.print = print
	w.budget = simBudget{limit: w.p.budget, w: w}
	c2s, s2c := &pipe{cap: w.p.pipeCap[0]}, &pipe{cap: w.p.pipeCap[1]}
	w.cli = &side{w: w, idx: 0, name: "client", in: s2c, out: c2s}
	w.srv = &side{w: w, idx: 1, name: "server", in: c2s, out: s2c}
	w.cli.peer, w.srv.peer = w.srv, w.cli
	w.sides = [2]*side{w.cli, w.srv}
	w.scen = scenario{w: w, byID: make(map[uint64]*simCall)}
	if print != nil {
		print(fmt.Sprintf("seed %d params: %s", seed, w.p))
	}
	w.srv.conn = New(Server, w.p.srv, Options{Budget: &w.budget}, srvSink{w}, w.now)
	w.srv.cfg = w.srv.conn.Config()
	switch {
	case w.p.flood:
		w.count("seeds: flood")
	case w.p.calm:
		w.count("seeds: calm")
	default:
		w.count("seeds: faults")
	}
	if w.p.flood {
		w.cli.raw = &rawPeer{}
	} else {
		w.cli.conn = New(Client, w.p.cli, Options{}, cliSink{w}, w.now)
		w.cli.cfg = w.cli.conn.Config()
	}
	w.scen.start()
	w.pump()
	w.run(simT0+w.p.activity+120*sec, 2_000_000)
	if w.err == "" {
		w.scen.end()
	}
	return w
}

// scenario is the simulated application: the client's calls and the
// server's handlers, with what they expect.
type scenario struct {
	w          *world
	calls      []*simCall // by token-1
	live       []*simCall // taken and not ended
	byID       map[uint64]*simCall
	lastReqID  uint64
	goAway     bool
	goAwayL    uint64 // the smallest last id the client was told
	srvQueued  int    // answer bytes the server queued and has not handed out
	maxReq     int    // the largest request taken, encoded
	earlyGoAwy bool   // the server's GoAway came before the client's HELLO
	fifoWait   int    // single-frame answers queued in the server and not sent
	fifoMissed bool   // a chunk went out while one waited, and no such answer since
}

// simCall is one call of the client and what the server did with it.
type simCall struct {
	tok       int
	call      Call
	start     int64
	ans       simAnswer
	taken     bool // Call returned nil
	id        uint64
	ended     bool
	endAt     int64
	endStep   int
	err       error
	answered  bool // ended with the handler's answer
	seen      bool // delivered to the server's Sink
	handled   bool // accepted by the server's Sink: its handler ran
	cancelled bool // the server's Sink was told Cancelled
	dropped   bool // the handler answered after Cancelled
	abandoned bool // Abandon was called while it was live
	heads     int  // answer heads the server sent
}

const (
	ansOK = iota
	ansApp
	ansTimeout
)

type simAnswer struct {
	kind  int
	body  []byte
	md    wire.Metadata
	msg   string
	delay int64
}

var errSimAbandon = errors.New("sim: the caller gave up")
var errSimClose = fmt.Errorf("sim: local close: %w", session.ErrConnClosed)

// simBlock is the random bytes bodies are cut from.
var simBlock = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}()

func blockBytes(tok, salt, n int) []byte {
	off := (tok*7919 + salt*104729) % (len(simBlock) - n + 1)
	return simBlock[off : off+n : off+n]
}

func (sc *scenario) start() {
	w, p := sc.w, sc.w.p
	if p.flood {
		return
	}
	w.at(w.now+w.rng.Int64N(20*ms), 0, sc.burst)
	for _, t := range p.goAwayAt {
		w.at(simT0+t, 1, func() { sc.serverGoAway("scheduled") })
	}
	w.at(simT0+p.activity, 1, func() { sc.serverGoAway("end of activity") })
	if p.closeAt != 0 {
		s := w.sides[p.closeSide]
		w.at(simT0+p.closeAt, s.idx, func() {
			w.log(s.idx, "local Close")
			s.conn.Close(w.now, errSimClose)
		})
	}
	if p.freezeFor != 0 {
		w.at(simT0+p.freezeAt, -1, func() { w.sides[p.freezeSide].freeze(p.freezeFor) })
	}
	if p.readStopFor != 0 {
		w.at(simT0+p.readStopAt, 0, func() {
			w.log(0, "client stops reading for %dms", p.readStopFor/ms)
			w.cli.stopUntil = w.now + p.readStopFor
			w.at(w.cli.stopUntil, 0, func() { w.log(0, "client reads again") })
		})
	}
}

func (sc *scenario) serverGoAway(why string) {
	w := sc.w
	if !w.srv.conn.helloRecv {
		sc.earlyGoAwy = true
	}
	last, first := w.srv.conn.GoAway(w.now, wire.ReasonShutdown, why)
	w.logx(1, "GoAway", "last id %d, first %t (%s)", last, first, why)
}

// burst issues a few calls and schedules the next burst.
func (sc *scenario) burst() {
	w, r := sc.w, sc.w.rng
	for range 1 + r.IntN(8) {
		if len(sc.calls) < w.p.nCalls {
			sc.issue()
		}
	}
	if len(sc.calls) >= w.p.nCalls || w.now-simT0 >= w.p.activity {
		return
	}
	var gap int64
	switch x := r.IntN(10); {
	case x < 7:
		gap = r.Int64N(30 * ms)
	case x < 9:
		gap = r.Int64N(200 * ms)
	default:
		gap = int64(w.cli.cfg.HeartbeatInterval.Abs()) * between(r, 12, 30) / 10
	}
	w.at(w.now+gap, 0, sc.burst)
}

func bodySize(r *rand.Rand, frame int) int {
	switch x := r.IntN(100); {
	case x < 35:
		return r.IntN(65)
	case x < 65:
		return r.IntN(4 << 10)
	case x < 88:
		return r.IntN(64 << 10)
	}
	return r.IntN(3*frame + 1)
}

func genMetadata(r *rand.Rand, n int) wire.Metadata {
	var md wire.Metadata
	for i := range n {
		v := strings.Repeat(string(rune('a'+r.IntN(26))), r.IntN(40))
		if r.IntN(20) == 0 {
			v = string(blockBytes(r.IntN(1000), 3, int(between(r, 1<<10, 6<<10))))
		}
		f := wire.Field{Key: fmt.Sprintf("k%d.%s", i, pick(r, "trace", "auth", "x_y-z")), Value: v}
		if append(md, f).EncodedLen() > wire.MaxMetadataLen-64 {
			break
		}
		md = append(md, f)
	}
	return md
}

// issue makes one call: its body, metadata, deadline, the answer its
// handler will give, and whether its caller gives up on it.
func (sc *scenario) issue() {
	w, r := sc.w, sc.w.rng
	rec := &simCall{tok: len(sc.calls) + 1, start: w.now}
	sc.calls = append(sc.calls, rec)
	srvFrame := int(w.srv.cfg.MaxFrameSize)
	size := bodySize(r, srvFrame)
	if r.IntN(30) == 0 {
		size = int(w.srv.cfg.MaxMessageSize) + r.IntN(100)
	}
	var md wire.Metadata
	var body []byte
	if r.IntN(4) == 0 {
		size = max(size, 8)
		if size <= len(simBlock) {
			body = append(make([]byte, 0, size), blockBytes(rec.tok, 1, size)...)
		} else {
			body = make([]byte, size)
		}
		binary.BigEndian.PutUint64(body, uint64(rec.tok))
	} else {
		if size <= len(simBlock) {
			body = blockBytes(rec.tok, 1, size)
		} else {
			body = make([]byte, size)
		}
		md = append(wire.Metadata{{Key: "tok", Value: strconv.Itoa(rec.tok)}}, genMetadata(r, r.IntN(4))...)
	}
	method := pick(r, "echo", "sum", "x")
	if r.IntN(20) == 0 {
		method = strings.Repeat("m", 1+r.IntN(255))
	}
	var deadline int64
	switch x := r.IntN(10); {
	case x < 3:
		deadline = w.now + between(r, 5*ms, 300*ms)
	case x < 6:
		deadline = w.now + between(r, 300*ms, 5*sec)
	}
	rec.call = Call{Method: method, Metadata: md, Body: body, Deadline: deadline, Owner: rec}
	a := &rec.ans
	switch x := r.IntN(100); {
	case x < 15:
		a.kind, a.msg = ansApp, "handler error "+strings.Repeat("e", r.IntN(100))
	case x < 20:
		a.kind, a.msg = ansTimeout, "too slow"
	}
	if a.kind == ansOK {
		n := bodySize(r, int(w.cli.cfg.MaxFrameSize))
		if r.IntN(20) == 0 {
			n = int(w.cli.cfg.MaxMessageSize) + 1 + r.IntN(1000)
		}
		a.body = blockBytes(rec.tok, 2, min(n, len(simBlock)))
	}
	if r.IntN(2) == 0 {
		a.md = genMetadata(r, 1+r.IntN(3))
	}
	hbi := int64(w.srv.cfg.HeartbeatInterval.Abs())
	switch x := r.IntN(100); {
	case x < 55:
		a.delay = r.Int64N(2 * ms)
	case x < 80:
		a.delay = between(r, 2*ms, 100*ms)
	case x < 92:
		a.delay = between(r, hbi, 2*int64(w.srv.cfg.HeartbeatTimeout))
	default:
		a.delay = between(r, sec, 3*sec)
	}
	err := w.cli.conn.Call(w.now, &rec.call)
	w.logx(0, "Call", "tok %d body %d md %d deadline %s: %v", rec.tok, len(body), len(md), fmtDeadline(deadline, w.now), err)
	if err != nil {
		sc.checkCallErr(rec, err)
		return
	}
	rec.taken = true
	sc.live = append(sc.live, rec)
	sc.maxReq = max(sc.maxReq, wire.HeaderLen+wire.RequestOverhead(method, md)+len(body))
	switch x := r.IntN(100); {
	case x < 4:
		sc.abandon(rec)
	case x < 12:
		w.at(w.now+r.Int64N(300*ms), 0, func() { sc.abandon(rec) })
	}
}

func fmtDeadline(d, now int64) string {
	if d == 0 {
		return "none"
	}
	return time.Duration(d - now).String()
}

func (sc *scenario) abandon(rec *simCall) {
	w := sc.w
	if !rec.ended {
		rec.abandoned = true
	}
	w.logx(0, "Abandon", "tok %d id %d (ended %t)", rec.tok, rec.id, rec.ended)
	w.cli.conn.Abandon(w.now, &rec.call, errSimAbandon)
}

// token finds the token of a request: in its metadata, or its body's
// first 8 bytes.
func token(md wire.Metadata, body []byte) int {
	if v, ok := md.Get("tok"); ok {
		n, _ := strconv.Atoi(v)
		return n
	}
	if len(body) >= 8 {
		return int(binary.BigEndian.Uint64(body))
	}
	return 0
}

func (sc *scenario) call(tok int) *simCall {
	if tok < 1 || tok > len(sc.calls) {
		sc.w.fail("no call has token %d", tok)
		return nil
	}
	return sc.calls[tok-1]
}

// answer runs when a handler is done: it answers as its call planned.
func (sc *scenario) answer(rec *simCall) {
	w := sc.w
	c := w.srv.conn
	if rec.cancelled {
		rec.dropped = true
	}
	before, failed, fifo := c.queued(), c.failed, c.fifoLen()
	switch rec.ans.kind {
	case ansOK:
		c.Answer(w.now, rec.id, rec.ans.md, rec.ans.body)
	case ansApp:
		c.AnswerError(w.now, rec.id, wire.CodeApplication, rec.ans.msg, rec.ans.md)
	case ansTimeout:
		c.AnswerError(w.now, rec.id, wire.CodeTimeout, rec.ans.msg, rec.ans.md)
	}
	d := c.queued() - before
	w.logx(1, "Answer", "id %d tok %d kind %d body %d: queued %+d", rec.id, rec.tok, rec.ans.kind, len(rec.ans.body), d)
	if (rec.dropped || failed || c.done) && d != 0 {
		w.fail("the answer to request %d was queued (%d bytes) though it must be dropped", rec.id, d)
	}
	if !c.failed {
		sc.srvQueued += d
		if c.fifoLen() > fifo {
			sc.fifoWait++
		}
	}
}

type srvSink struct{ w *world }

func (k srvSink) Ready(h wire.Hello) { k.w.logx(1, "Ready", "%+v", h) }

func (k srvSink) Request(in Incoming) bool {
	w := k.w
	sc := &w.scen
	if w.p.flood {
		w.at(w.now+w.rng.Int64N(10*ms), 1, func() { w.srv.conn.Answer(w.now, in.ID, nil, []byte("pong")) })
		return true
	}
	rec := sc.call(token(in.Metadata, in.Body))
	if rec == nil {
		return false
	}
	w.logx(1, "Request", "id %d tok %d body %d", in.ID, rec.tok, len(in.Body))
	switch {
	case rec.seen:
		w.fail("request %d (token %d) delivered twice", in.ID, rec.tok)
	case in.ID != rec.id:
		w.fail("request %d carries token %d, which went out as request %d", in.ID, rec.tok, rec.id)
	case string(in.Method) != rec.call.Method || string(in.Body) != string(rec.call.Body) || !mdEqual(in.Metadata, rec.call.Metadata):
		w.fail("request %d (token %d) arrived altered: method %q body %d bytes, want %d", in.ID, rec.tok, in.Method, len(in.Body), len(rec.call.Body))
	case rec.ended && session.RetrySafe(rec.err):
		w.fail("request %d reached the handler after its call ended retry safe: %v", in.ID, rec.err)
	}
	if ga, last := w.srv.conn.GoingAway(); ga && in.ID > last {
		w.fail("request %d handed to the Sink after GOAWAY with last id %d", in.ID, last)
	}
	rec.seen = true
	if w.rng.IntN(100) < w.p.refusePct {
		return false
	}
	rec.handled = true
	w.at(w.now+rec.ans.delay, 1, func() { sc.answer(rec) })
	return true
}

func (k srvSink) Cancelled(id uint64) {
	w := k.w
	w.log(1, "Cancelled %d", int64(id))
	if w.p.flood {
		return
	}
	rec := w.scen.byID[id]
	switch {
	case rec == nil || !rec.handled:
		w.fail("Cancelled(%d) for a request the Sink did not accept", id)
	case rec.cancelled:
		w.fail("Cancelled(%d) twice", id)
	default:
		rec.cancelled = true
	}
}

func (k srvSink) CallDone(*Call, []byte, wire.Metadata, error) { k.w.fail("server: CallDone") }
func (k srvSink) GoAway(uint64, wire.Reason, []byte)           { k.w.fail("server: GoAway") }
func (k srvSink) Closed(err error)                             { k.w.scen.closed(k.w.srv, err) }
func (k srvSink) HeartbeatRTT(d time.Duration)                 { k.w.log(1, "RTT %dus", int64(d)/us) }

type cliSink struct{ w *world }

func (k cliSink) Ready(h wire.Hello) { k.w.logx(0, "Ready", "%+v", h) }
func (k cliSink) Request(Incoming) bool {
	k.w.fail("client: Request")
	return false
}
func (k cliSink) Cancelled(uint64) { k.w.fail("client: Cancelled") }
func (k cliSink) CallDone(c *Call, body []byte, md wire.Metadata, err error) {
	k.w.scen.callDone(c.Owner.(*simCall), body, md, err)
}
func (k cliSink) GoAway(lastID uint64, reason wire.Reason, msg []byte) {
	k.w.logx(0, "GoAway", "last id %d %v %q", lastID, reason, msg)
	k.w.scen.clientGoAway(lastID)
}
func (k cliSink) Closed(err error)             { k.w.scen.closed(k.w.cli, err) }
func (k cliSink) HeartbeatRTT(d time.Duration) { k.w.log(0, "RTT %dus", int64(d)/us) }

func mdEqual(a, b wire.Metadata) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
