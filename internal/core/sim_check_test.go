package core

// The invariants of the simulation (sim_test.go), checked as events happen
// and after every step:
//
//  1. Every call Call took ends exactly once through CallDone, with its
//     answer or a typed error, and never after its deadline (the client is
//     ticked exactly at Next) nor with a deadline error before it.
//  2. An answered call gets exactly its handler's body and metadata (or the
//     ERROR its handler chose, or INTERNAL for an answer too large); a
//     request reaches the handler exactly as sent, once.
//  3. A call that ends retry safe never reached the server's handler.
//  4. After GOAWAY, calls above its last id end retry safe at once and are
//     never handled; the last id never grows; when both sides end
//     gracefully, every handled call that was not abandoned got its answer.
//  5. Bounds: the server's Held ≤ ConnMemory (a request reserves its bytes
//     only while Held + Queued + its bytes ≤ ConnMemory; answers are never
//     counted in Held); the server's Queued is exactly the bytes of the
//     answers its handlers gave that are not handed out yet, so that Held +
//     Queued ≤ ConnMemory + those answers; the Budget holds exactly Held +
//     Queued; the client's Queued < WriteQueueSize + its largest request;
//     the control frames queued because of the peer ≤ its flood bound
//     (MaxQueuedControl, plus MaxInFlight on a server); the
//     client's calls in flight ≤ both MaxInFlight, and no call waits while
//     there is room for it; the server never refuses a request for its
//     in-flight limit.
//  6. Every PONG owed goes out in the next Transmit, ahead of any message
//     frame; Transmit hands out whole frames within the peer's
//     MAX_FRAME_SIZE and max; a waiting single-frame answer gets its turn
//     between two chunks of large answers; nothing is sent after FIN.
//  7. In calm runs no side declares a live peer dead, and both end
//     gracefully (unless GOAWAY came before the handshake).
//  8. At the end both Conns are done, Closed was called once on each side,
//     every call ended, and the server holds nothing, the Budget 0.
//  9. Timers fire on time: a side never frozen is never alive past its
//     heartbeat timeout (from the last bytes received) or its write
//     timeout; so the peer of a frozen side ends by then. Next is in the
//     future after Tick, and a side is done once a write failed.
//  10. REQUEST ids on the wire strictly increase.

import (
	"errors"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// typedErr reports whether err is one a call may end with: a session
// sentinel, the caller's own, or an ERROR frame.
func typedErr(err error) bool {
	for _, e := range []error{session.ErrTimeout, session.ErrPeerDead, session.ErrConnClosed, session.ErrGoAway,
		session.ErrWriteTimeout, session.ErrFrameTimeout, session.ErrHandshakeTimeout, session.ErrControlFlood,
		session.ErrTooLarge, errSimAbandon} {
		if errors.Is(err, e) {
			return true
		}
	}
	var se *session.Error
	return errors.As(err, &se)
}

// checkCallErr checks an error Call returned: the call was not taken.
func (sc *scenario) checkCallErr(rec *simCall, err error) {
	var de *session.DeadlineError
	if !session.RetrySafe(err) && !errors.Is(err, session.ErrTooLarge) && !errors.As(err, &de) {
		sc.w.fail("Call(token %d) refused with %v: neither retry safe nor too large nor past its deadline", rec.tok, err)
	}
}

// callDone checks a call's end (invariants 1, 2, 3).
func (sc *scenario) callDone(rec *simCall, body []byte, md wire.Metadata, err error) {
	w := sc.w
	w.logx(0, "CallDone", "tok %d id %d body %d: %v", rec.tok, rec.id, len(body), err)
	if rec.ended || !rec.taken {
		w.fail("call %d (token %d) ended twice, or without being taken", rec.id, rec.tok)
		return
	}
	rec.ended, rec.endAt, rec.endStep, rec.err = true, w.now, w.step, err
	for i, l := range sc.live {
		if l == rec {
			sc.live = append(sc.live[:i], sc.live[i+1:]...)
			break
		}
	}
	w.count("call: " + errClass(err))
	if err != nil && !typedErr(err) {
		w.fail("call %d ended with an untyped error: %v", rec.id, err)
	}
	var de *session.DeadlineError
	switch dl := rec.call.Deadline; {
	case dl != 0 && w.now > dl && w.cli.frozeAt == 0:
		w.fail("call %d ended %s after its deadline", rec.id, fmtTime(w.now-dl))
	case errors.As(err, &de) && w.now < dl:
		w.fail("call %d failed with %v %s before its deadline", rec.id, err, fmtTime(dl-w.now))
	}
	if rec.abandoned != errors.Is(err, errSimAbandon) {
		w.fail("call %d: abandoned %t, ended with %v", rec.id, rec.abandoned, err)
	}
	if session.RetrySafe(err) && rec.handled {
		w.fail("call %d ended retry safe (%v) but the server's handler ran", rec.id, err)
	}
	a := &rec.ans
	tooLarge := len(a.body) > int(w.cli.cfg.MaxMessageSize)
	var se *session.Error
	switch {
	case err == nil:
		switch {
		case !rec.handled:
			w.fail("call %d answered, but the server never handled it", rec.id)
		case a.kind != ansOK || tooLarge:
			w.fail("call %d answered with a body, its handler answered kind %d (too large %t)", rec.id, a.kind, tooLarge)
		case string(body) != string(a.body) || !mdEqual(md, a.md):
			w.fail("call %d got a body of %d bytes and %d metadata entries, not its handler's answer (%d bytes, %d entries)", rec.id, len(body), len(md), len(a.body), len(a.md))
		}
		rec.answered = true
	case errors.As(err, &se) && !se.Conn:
		want := map[int]wire.Code{ansOK: wire.CodeInternal, ansApp: wire.CodeApplication, ansTimeout: wire.CodeTimeout}[a.kind]
		switch {
		case se.Code == wire.CodeOverloaded:
			return
		case !rec.handled:
			w.fail("call %d answered %v, but the server never handled it", rec.id, se)
		case se.Code != want || (a.kind == ansOK && !tooLarge):
			w.fail("call %d answered %v, its handler answered kind %d (too large %t)", rec.id, se, a.kind, tooLarge)
		case a.kind != ansOK && (se.Message != a.msg || !mdEqual(se.Metadata, a.md)):
			w.fail("call %d: the ERROR's message or metadata differs from its handler's: %v", rec.id, se)
		}
		rec.answered = true
	}
}

// clientGoAway checks the client's GoAway (invariant 4): calls above the
// last id ended retry safe, now, and were never handled.
func (sc *scenario) clientGoAway(lastID uint64) {
	w := sc.w
	if sc.goAway && lastID > sc.goAwayL {
		w.fail("GoAway(%d) after GoAway(%d): the last id grew", lastID, sc.goAwayL)
	}
	sc.goAway, sc.goAwayL = true, lastID
	if ga, last := w.srv.conn.GoingAway(); !ga || last != lastID {
		w.fail("the client was told last id %d, the server sent %d (going away %t)", lastID, last, ga)
	}
	for _, rec := range sc.calls {
		if rec.id <= lastID {
			continue
		}
		switch {
		case rec.handled:
			w.fail("call %d is above GOAWAY's last id %d but the server handled it", rec.id, lastID)
		case !rec.ended:
			w.fail("call %d is above GOAWAY's last id %d and still in progress", rec.id, lastID)
		case rec.endStep == w.step && !session.RetrySafe(rec.err):
			w.fail("call %d is above GOAWAY's last id %d and ended with %v, not retry safe", rec.id, lastID, rec.err)
		}
	}
}

// closed checks the Sink's Closed (invariants 7, 8).
func (sc *scenario) closed(s *side, err error) {
	w := sc.w
	w.logx(s.idx, "Closed", "%v", err)
	w.count(s.name + " closed: " + errClass(err))
	s.closedN++
	s.closedErr, s.closedAt = err, w.now
	if s.closedN > 1 {
		w.fail("%s: Closed called %d times", s.name, s.closedN)
	}
	if s == w.cli && len(sc.live) > 0 {
		w.fail("client: Closed with call %d not ended", sc.live[0].id)
	}
	if s.peer.frozen() {
		w.count("live side of a frozen peer closed: " + errClass(err))
	}
	if w.p.calm && errors.Is(err, session.ErrPeerDead) {
		w.fail("%s declared a live peer dead in a calm schedule", s.name)
	}
}

// sent sees each frame a side transmits (invariants 2, 5, 10).
func (sc *scenario) sent(s *side, f wire.Frame) {
	w := sc.w
	if w.p.flood {
		return
	}
	if s == w.cli {
		if f.Type != wire.TypeRequest {
			return
		}
		if f.ID <= sc.lastReqID {
			w.fail("REQUEST id %d after REQUEST id %d", f.ID, sc.lastReqID)
		}
		sc.lastReqID = f.ID
		_, _, md, body, _ := wire.ParseRequest(f.Flags, f.Payload)
		rec := sc.call(token(md.Metadata(), body))
		if rec == nil {
			return
		}
		if rec.id != 0 && rec.id != f.ID {
			w.fail("token %d went out as request %d, its call has id %d", rec.tok, f.ID, rec.id)
		}
		rec.id = f.ID
		sc.byID[f.ID] = rec
		return
	}
	var rec *simCall
	if f.ID != 0 {
		rec = sc.byID[f.ID]
	}
	switch f.Type {
	case wire.TypeResponse, wire.TypeData, wire.TypeError:
		if f.ID == 0 {
			return
		}
		if rec == nil {
			w.fail("server sent %v for request %d, never sent", f.Type, f.ID)
			return
		}
		if f.Type == wire.TypeError {
			code, _, msg, _ := wire.ParseError(f.ID, f.Flags, f.Payload)
			if code == wire.CodeOverloaded {
				w.count("server refusal: " + string(msg[:min(len(msg), 20)]))
				if rec.handled {
					w.fail("server refused request %d, which its handler runs", f.ID)
				}
				return
			}
		}
		if rec.dropped {
			w.fail("server sent %v for request %d, answered after it was cancelled", f.Type, f.ID)
		}
		// A waiting single-frame answer gets its turn between two chunks
		// of large answers (protocol.md §5).
		if f.More() || f.Type == wire.TypeData {
			if sc.fifoWait > 0 {
				if sc.fifoMissed {
					w.fail("%v #%d: a second chunk went out while a single-frame answer waited", f.Type, f.ID)
				}
				sc.fifoMissed = true
			}
		} else {
			sc.fifoWait--
			sc.fifoMissed = false
		}
		if f.Type == wire.TypeData {
			sc.srvQueued -= len(f.Payload)
			return
		}
		sc.srvQueued -= wire.HeaderLen + len(f.Payload)
		if rec.heads++; rec.heads > 1 {
			w.fail("server answered request %d twice", f.ID)
		}
	}
}

// check runs after every step.
func (w *world) check() {
	if w.err != "" {
		return
	}
	sc := &w.scen
	for _, s := range w.sides {
		if s.conn == nil {
			continue
		}
		c := s.conn
		if c.failed {
			s.owed = nil
		}
		if n := c.peerControlQueued(); n > c.floodBound() {
			w.fail("%s has %d control frames queued for the peer, its flood bound is %d", s.name, n, c.floodBound())
		}
		// What a connection holds while busy is given back once it is
		// idle, by the method that made it so.
		if c.b != nil && c.b.idle() {
			w.fail("%s holds its busy state with no work left", s.name)
		}
		// Timers fire on time: a side that was never frozen is never
		// alive past its heartbeat, write or frame deadline.
		if s.frozeAt != 0 || c.done || c.failed {
			continue
		}
		cfg := &s.cfg
		if c.reading() && c.helloRecv && cfg.Heartbeats() && w.now > c.lastRecv+int64(cfg.HeartbeatTimeout) {
			w.fail("%s still alive %s after the last bytes it received (HeartbeatTimeout %v)", s.name, fmtTime(w.now-c.lastRecv), cfg.HeartbeatTimeout)
		}
		if c.pending() > 0 && w.now > c.b.out.waitStart+int64(cfg.WriteTimeout) {
			w.fail("%s: output without progress for %s (WriteTimeout %v)", s.name, fmtTime(w.now-c.b.out.waitStart), cfg.WriteTimeout)
		}
		// PINGs leave after an interval of silence, never before, and
		// at most one step of the ping grid after it.
		if cfg.Heartbeats() && c.helloRecv {
			if c.pingSeq != s.pings {
				if c.lastPingAt < s.pingDue {
					w.fail("%s sent a PING %s before it fell due", s.name, fmtTime(s.pingDue-c.lastPingAt))
				}
				s.pings = c.pingSeq
			}
			s.pingDue = max(c.lastRecv, c.lastPingAt) + int64(cfg.HeartbeatInterval)
			if c.reading() && w.now > s.pingDue+int64(cfg.PingGrid()) {
				w.fail("%s has sent no PING %s after one fell due (grid step %v)", s.name, fmtTime(w.now-s.pingDue), cfg.PingGrid())
			}
		}
	}
	if srv := w.srv.conn; srv != nil {
		cfg := &w.srv.cfg
		if n := srv.Stats().RefusedInFlight; n != 0 && !w.p.flood {
			w.fail("server refused %d requests for its in-flight limit (MAX_IN_FLIGHT %d) from a conforming client", n, cfg.MaxInFlight)
		}
		if srv.paused {
			w.count("server: reading paused")
		}
		if srv.held() > cfg.ConnMemory {
			w.fail("server holds %d bytes of requests, ConnMemory is %d", srv.held(), cfg.ConnMemory)
		}
		if w.budget.n != srv.held()+srv.queued() {
			w.fail("Budget holds %d bytes, the server %d held + %d queued", w.budget.n, srv.held(), srv.queued())
		}
		if srv.failed || w.p.flood {
			sc.srvQueued = srv.queued()
			sc.fifoWait, sc.fifoMissed = 0, false
		}
		if srv.queued() != sc.srvQueued {
			w.fail("server queues %d bytes, its handlers' answers not yet sent are %d", srv.queued(), sc.srvQueued)
		}
	}
	cli := w.cli.conn
	if cli == nil {
		return
	}
	for _, rec := range sc.live {
		if id := rec.call.ID(); id != 0 && rec.id == 0 {
			rec.id = id
			sc.byID[id] = rec
		}
	}
	cfg := &w.cli.cfg
	limit := min(cfg.MaxInFlight, w.srv.cfg.MaxInFlight)
	if cli.InFlight() > limit {
		w.fail("client has %d calls in flight, the limit is %d", cli.InFlight(), limit)
	}
	if cli.Usable() && cli.cl.waiting.head != nil && len(cli.cl.calls) < limit && cli.queued() < cfg.WriteQueueSize {
		w.fail("a call waits though %d of %d calls are in flight and %d of %d bytes queued", len(cli.cl.calls), limit, cli.queued(), cfg.WriteQueueSize)
	}
	if cli.queued() >= cfg.WriteQueueSize+max(sc.maxReq, 1) {
		w.fail("client queues %d bytes, WriteQueueSize %d + largest request %d", cli.queued(), cfg.WriteQueueSize, sc.maxReq)
	}
}

// end checks the state once no event is left (invariants 4, 8).
func (sc *scenario) end() {
	w := sc.w
	for _, s := range w.sides {
		if s.conn == nil {
			continue
		}
		if !s.conn.Done() {
			w.fail("%s not done at the end", s.name)
		}
		if s.closedN != 1 {
			w.fail("%s: Closed called %d times", s.name, s.closedN)
		}
	}
	srv := w.srv.conn
	if srv.held() != 0 || srv.queued() != 0 || w.budget.n != 0 || srv.reqLen() != 0 {
		w.fail("server holds %d bytes, queues %d, %d requests; Budget %d", srv.held(), srv.queued(), srv.reqLen(), w.budget.n)
	}
	if w.p.flood {
		if !errors.Is(w.srv.closedErr, session.ErrControlFlood) {
			w.fail("the flooded server ended with %v, not ErrControlFlood", w.srv.closedErr)
		}
		return
	}
	cli := w.cli.conn
	if len(cli.cl.calls) != 0 || cli.cl.waiting.head != nil || len(cli.cl.deadlines) != 0 {
		w.fail("client still holds %d calls, %d deadlines", len(cli.cl.calls), len(cli.cl.deadlines))
	}
	graceful := w.cli.closedErr == nil && w.srv.closedErr == nil
	for _, rec := range sc.calls {
		switch {
		case rec.taken && !rec.ended:
			w.fail("call %d (token %d) never ended", rec.id, rec.tok)
		case sc.goAway && rec.id > sc.goAwayL && rec.handled:
			w.fail("call %d is above GOAWAY's last id %d but was handled", rec.id, sc.goAwayL)
		case graceful && rec.handled && !rec.answered && !rec.abandoned && !errors.Is(rec.err, session.ErrTimeout):
			w.fail("call %d was handled but ended with %v on a connection that ended gracefully", rec.id, rec.err)
		}
	}
	if w.p.calm && !sc.earlyGoAwy && !graceful {
		w.fail("a calm run ended with client %v, server %v", w.cli.closedErr, w.srv.closedErr)
	}
}

// errClass names the kind of err, for the run's statistics.
func errClass(err error) string {
	var se *session.Error
	var de *session.DeadlineError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errSimAbandon):
		return "abandoned"
	case errors.As(err, &de):
		return "deadline"
	case errors.As(err, &se):
		s := "ERROR " + se.Code.String()
		if se.Conn {
			s += " (connection)"
		}
		return s
	}
	c := "other"
	for _, e := range []error{session.ErrPeerDead, session.ErrWriteTimeout, session.ErrFrameTimeout, session.ErrHandshakeTimeout,
		session.ErrControlFlood, session.ErrGoAway, session.ErrTooLarge, session.ErrConnClosed} {
		if errors.Is(err, e) {
			c = e.Error()
			break
		}
	}
	if session.RetrySafe(err) {
		c += " (retry safe)"
	}
	return c
}
