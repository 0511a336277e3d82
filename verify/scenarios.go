package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/session"
)

// The test configuration of every scenario.
const (
	hbInterval = time.Second     // heartbeat interval, client and server
	hbTimeout  = 2 * time.Second // heartbeat timeout, client and server: from the last bytes received

	servicePort = 7420 // the reference service's port
	plainPort   = 7421 // plain TCP peers

	// fpWindow is how long a live idle peer must not be declared dead.
	fpWindow = 30 * time.Second
	// busyBound bounds how fast a client over the cap hears BUSY.
	busyBound = 100 * time.Millisecond
	// closeWaitBound bounds how long a socket of ours may sit in
	// CLOSE_WAIT after the peer's FIN.
	closeWaitBound = time.Second
	// resumeSlack is added to the backoff ceiling for the reconnect's dial,
	// the load's pace and the first call.
	resumeSlack = 200 * time.Millisecond
	// frozenAfter is how long after the client's last received frame the
	// server is frozen: the client is idle, as in link-cut-idle.
	frozenAfter = 300 * time.Millisecond
	// outage is how long a killed server stays down before its restart.
	outage = time.Second
	// drainShutdownTimeout is the draining server's --shutdown-timeout.
	drainShutdownTimeout = 10 * time.Second
)

// detectBound is the dead-peer bound: the heartbeat timeout + 20 %. The
// timeout runs from the last bytes received, which came at the latest when
// the fault struck, so a dead peer is declared at most hbTimeout after the
// fault; the 20 % is for timers and scheduling on a busy machine. (With
// protocol v1's 1 s interval + 1 s timeout after a PING, the bound was
// (interval+timeout) × 1.2: the same 2.4 s.) TCP_USER_TIMEOUT is set to the
// heartbeat timeout too; Linux counts it from the first retransmission, one
// RTO (≥ 200 ms) after the data was sent, so unacknowledged data is found
// ~2.25 s after it was sent: inside the same bound, with less margin.
const detectBound = hbTimeout * 12 / 10

// dialTimeout is the client's connect timeout: its default. A connect into
// a black hole must fail within ±10 % of it.
const (
	dialTimeout = client.DefaultDialTimeout
	dialLo      = dialTimeout * 9 / 10
	dialHi      = dialTimeout * 11 / 10
)

// Scenarios returns the scenarios in report order.
func Scenarios() []Scenario {
	return append([]Scenario{
		{Name: "link-cut-idle", Bound: detectBound, Run: linkCutIdle,
			Description: "the link to an idle peer is cut: client and server detect the dead peer within the heartbeat timeout (2 s, from the last bytes received) + 20 %; a live idle peer is not declared dead over 30 s"},
		{Name: "link-cut-unacked", Bound: detectBound, Run: linkCutUnacked,
			Description: "the link is cut (or only the client's data is lost, the peer still sending) while the client has unacknowledged data in flight: detected within the same bound (heartbeat, TCP_USER_TIMEOUT), not tcp_retries2's ~15 min"},
		{Name: "server-frozen", Bound: detectBound, Run: serverFrozen,
			Description: "the server process is frozen (SIGSTOP): its kernel still ACKs, but the client's heartbeat declares it dead and fails the call with ErrPeerDead"},
		{Name: "connect-blackhole", Bound: dialHi, Run: connectBlackhole,
			Description: "a connect into a SYN black hole fails at the dial timeout (±10 %); about TCP's connect: with --tls the client is a TLS client, but its handshake never starts"},
		{Name: "server-killed", Bound: client.DefaultBackoffMax + resumeSlack, Run: serverKilled,
			Description: "the server is killed (SIGKILL) under steady load: every call succeeds or fails typed, none hangs; the restarted server binds at once; traffic resumes through backoff"},
		{Name: "server-drain", Bound: drainShutdownTimeout, Run: serverDrain,
			Description: "one of two servers gets SIGTERM under steady load: graceful drain, zero failed calls (unprocessed calls retried on the other through GOAWAY)"},
		{Name: "conn-cap", Bound: busyBound, Run: connCap,
			Description: "clients over the server's connection cap get the BUSY error within 100 ms"},
		{Name: "peer-close", Bound: closeWaitBound, Run: peerClose,
			Description: "the peer closes: no socket of ours (server side or client side) stays in CLOSE_WAIT beyond 1 s"},
	}, fleetScenarios()...)
}

// pair builds a lab with a server and a client host joined by a link.
func (e *Env) pair() (lab *faultnet.Lab, srv, cli *faultnet.Host, lk *faultnet.Link, err error) {
	lab, err = e.newLab()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if srv, err = lab.AddHost("server"); err != nil {
		return nil, nil, nil, nil, err
	}
	if cli, err = lab.AddHost("client"); err != nil {
		return nil, nil, nil, nil, err
	}
	if lk, err = lab.Link(cli, srv); err != nil {
		return nil, nil, nil, nil, err
	}
	return lab, srv, cli, lk, nil
}

// cutTimed cuts lk in two steps, as Link.Cut does in one: first it drops
// what srv sends (from then on the client hears nothing), then what cli
// sends (from then on the server hears nothing). It returns when each step
// was requested: detection on each side is measured from its own step, so
// the time nft takes to apply the other does not count against it.
func cutTimed(lk *faultnet.Link, srv, cli *faultnet.Host) (toCli, toSrv int64, took time.Duration, err error) {
	toCli = mono()
	if err := lk.DropDirection(srv); err != nil {
		return 0, 0, 0, err
	}
	toSrv = mono()
	if err := lk.DropDirection(cli); err != nil {
		return 0, 0, 0, err
	}
	return toCli, toSrv, since(toCli, mono()), nil
}

func addr(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// within describes a measured time against its bound.
func within(d, bound time.Duration) string {
	if d <= bound {
		return fmt.Sprintf("%s (bound %s)", fmtDur(d), fmtDur(bound))
	}
	return fmt.Sprintf("%s, OVER the bound %s", fmtDur(d), fmtDur(bound))
}

// ---------------------------------------------------------------------------
// 1. link-cut-idle

func linkCutIdle(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(detectBound), BaselineMS: -1,
		Metric: "time from the cut to the later of the client's and the server's detection of the dead peer"}
	lab, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	liveH, err := lab.AddHost("live")
	if err != nil {
		return r, err
	}
	liveLk, err := lab.Link(liveH, srvH)
	if err != nil {
		return r, err
	}
	// One server on every address of its host: the cut client's link and
	// the live client's.
	_, obs, err := env.startInProcServer(srvH, addr(netip.IPv4Unspecified(), servicePort), nil)
	if err != nil {
		return r, err
	}
	if _, err := env.startPlainServer(srvH, addr(lk.Addr(srvH), plainPort), plainMode{}); err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	liveAg, err := env.startAgent(liveH)
	if err != nil {
		return r, err
	}
	if _, err := ag.newClient(ctx, "c", []string{addr(lk.Addr(srvH), servicePort).String()}); err != nil {
		return r, err
	}
	if _, err := liveAg.newClient(ctx, "live", []string{addr(liveLk.Addr(srvH), servicePort).String()}); err != nil {
		return r, err
	}
	if err := ag.callOK(ctx, "c"); err != nil {
		return r, err
	}
	if err := liveAg.callOK(ctx, "live"); err != nil {
		return r, err
	}
	fpStart := mono()
	pc, err := env.plainConn(ctx, cliH, addr(lk.Addr(srvH), plainPort), nil)
	if err != nil {
		return r, err
	}
	if err := roundTrip(pc, "hello"); err != nil {
		pc.Close()
		return r, err
	}
	watch := env.watchRead(pc)

	// Idle for a while: only heartbeats on the connections, at whatever
	// phase they have reached.
	if err := sleepCtx(ctx, 1500*time.Millisecond); err != nil {
		return r, err
	}
	env.logf("cutting the link to the idle client")
	t0, tSrv, cutTook, err := cutTimed(lk, srvH, cliH)
	if err != nil {
		return r, err
	}
	wait := detectBound + 3*time.Second

	var wg sync.WaitGroup
	var cliResp agentResp
	var cliErr, srvErr, baseErr error
	var srvEv closeEvent
	var base baseline
	wg.Go(func() {
		cliResp, cliErr = ag.do(ctx, agentReq{Op: "wait_dead", Client: "c", N: 1, Timeout: wait})
	})
	wg.Go(func() {
		srvEv, srvErr = obs.waitClose(ctx, wait, func(c closeEvent) bool { return lk.Prefix().Contains(c.remote.Addr()) })
	})
	wg.Go(func() { base, baseErr = watch.wait(ctx, t0, env.BaselineCap()) })
	wg.Wait()
	if baseErr != nil {
		return r, baseErr
	}
	r.BaselineMS, r.BaselineCapped, r.Baseline = base.ms(), base.capped, base.cell()

	var detail []string
	pass := true
	var worst time.Duration
	if cliErr != nil {
		pass = false
		detail = append(detail, fmt.Sprintf("client: %v", cliErr))
		worst = max(worst, wait)
	} else {
		d := since(t0, cliResp.Mono)
		worst = max(worst, d)
		pass = pass && d <= detectBound
		detail = append(detail, "client declared the peer dead "+within(d, detectBound))
	}
	if srvErr != nil {
		pass = false
		detail = append(detail, fmt.Sprintf("server: %v", srvErr))
		worst = max(worst, wait)
	} else {
		d := since(tSrv, srvEv.at)
		worst = max(worst, d)
		pass = pass && d <= detectBound && errors.Is(srvEv.err, session.ErrPeerDead)
		detail = append(detail, fmt.Sprintf("server closed the connection %s with %q", within(d, detectBound), errText(srvEv.err)))
		if !errors.Is(srvEv.err, session.ErrPeerDead) {
			detail = append(detail, "the server's close was not ErrPeerDead")
		}
	}
	r.MeasuredMS = ms(worst)
	detail = append(detail, fmt.Sprintf("each side's time runs from the moment the drop of what it receives was requested (the whole cut took %s to apply)", fmtDur(cutTook)))

	// No false positive: the live idle client, on its own link, over the
	// whole window.
	if left := fpWindow - since(fpStart, mono()); left > 0 {
		env.logf("waiting %s more: the live client must stay idle and alive for %s", fmtDur(left), fmtDur(fpWindow))
		if err := sleepCtx(ctx, left); err != nil {
			return r, err
		}
	}
	st, err := liveAg.stats(ctx, "live")
	if err != nil {
		return r, err
	}
	callErr := liveAg.callOK(ctx, "live")
	st2, err := liveAg.stats(ctx, "live")
	if err != nil {
		return r, err
	}
	liveCloses := obs.closesFrom(liveLk.Prefix())
	fpOK := st.DeadPeers == 0 && st.Reconnects == 0 && st2.Dials == 1 && len(liveCloses) == 0 && callErr == nil
	if fpOK {
		detail = append(detail, fmt.Sprintf("a live idle client on another link was not declared dead over %s (0 dead peers, 1 connection, then an echo on it)", fmtDur(fpWindow)))
	} else {
		detail = append(detail, fmt.Sprintf("FALSE POSITIVE over the %s idle window of a live client: stats %+v, echo after: %v, server-side closes: %d", fmtDur(fpWindow), st2, callErr, len(liveCloses)))
	}
	pass = pass && fpOK
	detail = append(detail, env.baselineText(base, "blocked in Read on an idle connection", keepaliveText(cliH)))
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// baselineText explains a plain connection's measurement.
func (e *Env) baselineText(b baseline, what, kernel string) string {
	s := "plain net.Conn (kernel defaults; Go's keepalive override off, so SO_KEEPALIVE stays off as the kernel leaves it) "
	if e.opts.TLS != nil {
		s += "with TLS on top, no heartbeat, "
	}
	s += what + ": "
	if b.capped {
		s += "noticed nothing within " + fmtDur(b.d)
	} else {
		s += fmt.Sprintf("failed after %s (%v)", fmtDur(b.d), b.err)
	}
	if kernel != "" {
		s += "; the kernel's own bound: " + kernel
	}
	return s
}

// ---------------------------------------------------------------------------
// 2. link-cut-unacked

// unackedBody is the size of the call sent into the cut link.
const unackedBody = 8 << 10

// linkCutUnacked has two cases, on two links of the same client host:
//
//   - a: the link is cut both ways, then a call is sent into it: the
//     heartbeat (nothing arrives) and TCP_USER_TIMEOUT (nothing is
//     acknowledged) race to detect it;
//   - b: only what the client sends is lost, and the peer keeps sending
//     (PONGs, which need no answer), so the heartbeat sees a live peer:
//     only TCP_USER_TIMEOUT can detect that the call's data is never
//     acknowledged. The call's bytes are the first the client sends after
//     the fault, so its time runs from the call's start: before it nothing
//     is unacknowledged and there is nothing to detect. (With PINGs, whose
//     PONGs would be lost too, the unacknowledged data would start at a
//     moment set by the peer's pace, up to a PING interval after the
//     fault, and the kernel's TCP_USER_TIMEOUT, which fires at an RTO,
//     ~0.25 s after the timeout, would be measured from a moment nobody
//     chose.)
func linkCutUnacked(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(detectBound), BaselineMS: -1,
		Metric: "time to the failure of the call whose data is never acknowledged, from the fault (a: link cut both ways) or from the call's start (b: only the client's data lost), worst of the two cases"}
	lab, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	lk2, err := lab.Link(cliH, srvH)
	if err != nil {
		return r, err
	}
	srvAddr := addr(lk.Addr(srvH), servicePort)
	plainAddr := addr(lk.Addr(srvH), plainPort)
	talkerAddr := addr(lk2.Addr(srvH), plainPort)
	if _, _, err := env.startInProcServer(srvH, srvAddr, nil); err != nil {
		return r, err
	}
	if _, err := env.startPlainServer(srvH, plainAddr, plainMode{}); err != nil {
		return r, err
	}
	talker, err := env.startPlainServer(srvH, talkerAddr, plainMode{talkEvery: 250 * time.Millisecond})
	if err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	if _, err := ag.newClient(ctx, "c", []string{srvAddr.String()}); err != nil {
		return r, err
	}
	if err := ag.callOK(ctx, "c"); err != nil {
		return r, err
	}
	if _, err := ag.newClient(ctx, "u", []string{talkerAddr.String()}); err != nil {
		return r, err
	}
	select {
	case <-talker.accepted:
	case <-time.After(5 * time.Second):
		return r, errors.New("the client never connected to the talking peer")
	case <-ctx.Done():
		return r, ctx.Err()
	}
	pc, err := env.plainConn(ctx, cliH, plainAddr, nil)
	if err != nil {
		return r, err
	}
	if err := roundTrip(pc, "hello"); err != nil {
		pc.Close()
		return r, err
	}
	watch := env.watchRead(pc)
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return r, err
	}

	env.logf("cutting link a, dropping what the client sends on link b, then sending %d bytes into each", unackedBody)
	var wg sync.WaitGroup
	var callA, callB *callResult
	var errA, errB error
	var tA, tB int64
	var cutTook time.Duration
	tA, _, cutTook, errA = cutTimed(lk, srvH, cliH)
	if errA != nil {
		return r, errA
	}
	wg.Go(func() {
		resp, err := ag.do(ctx, agentReq{Op: "call", Client: "c", Method: "echo", BodySize: unackedBody, Timeout: 30 * time.Second})
		callA, errA = resp.Call, err
	})
	tB = mono()
	if err := lk2.DropDirection(cliH); err != nil {
		return r, err
	}
	wg.Go(func() {
		resp, err := ag.do(ctx, agentReq{Op: "call", Client: "u", Method: "echo", BodySize: unackedBody, Timeout: 30 * time.Second})
		callB, errB = resp.Call, err
	})
	// The plain connection writes as much (it fits the socket buffer, so
	// the write returns) and waits for the answer.
	_ = pc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := pc.Write(make([]byte, unackedBody)); err != nil {
		return r, fmt.Errorf("plain connection: writing into the cut link: %w", err)
	}
	// Every socket holds unacknowledged data now.
	unacked := map[netip.AddrPort]int{}
	if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
		return r, err
	}
	if socks, err := tcpTable(cliH); err == nil {
		for _, s := range socks {
			unacked[s.Remote] = max(unacked[s.Remote], s.TxQueue)
		}
	}
	var base baseline
	var baseErr error
	wg.Go(func() { base, baseErr = watch.wait(ctx, tA, env.BaselineCap()) })
	wg.Wait()
	if err := errors.Join(errA, errB, baseErr); err != nil {
		return r, err
	}
	r.BaselineMS, r.BaselineCapped, r.Baseline = base.ms(), base.capped, base.cell()

	var detail []string
	pass := true
	var worst time.Duration
	for _, c := range []struct {
		name string
		call *callResult
		t0   int64
		peer netip.AddrPort
		want string // the mechanism that must see it, or "" for either
	}{
		{"a, link cut both ways", callA, tA, srvAddr, ""},
		{"b, only the client's data lost, the peer still sending", callB, tB, talkerAddr, "conn_closed"},
	} {
		from := c.t0
		if c.want == "conn_closed" {
			from = c.call.Start // the first unacknowledged byte
		}
		d := since(from, c.call.End)
		worst = max(worst, d)
		line := c.name + ": "
		switch {
		case c.call.ok():
			line += "the call SUCCEEDED"
			pass = false
		case c.call.is("peer_dead"):
			line += "the call failed with ErrPeerDead (heartbeat) " + within(d, detectBound)
		case c.call.is("conn_closed"):
			line += fmt.Sprintf("the call failed with ErrConnClosed (%s: TCP_USER_TIMEOUT) %s", c.call.Err, within(d, detectBound))
		default:
			line += fmt.Sprintf("the call failed with an unexpected error after %s: %s", fmtDur(d), c.call.Err)
			pass = false
		}
		if c.want != "" && !c.call.ok() && !c.call.is(c.want) {
			line += "; want ErrConnClosed from TCP_USER_TIMEOUT: the heartbeat should see a live peer here"
			pass = false
		}
		pass = pass && d <= detectBound
		detail = append(detail, line+fmt.Sprintf("; the call was sent %s after the fault and failed %s after it was sent (%s after the fault); %d bytes unacknowledged 300 ms after the fault",
			fmtDur(since(c.t0, c.call.Start)), fmtDur(c.call.took()), fmtDur(since(c.t0, c.call.End)), unacked[c.peer]))
	}
	r.MeasuredMS = ms(worst)
	r.Pass = pass
	detail = append(detail, fmt.Sprintf("a's time runs from the moment the cut was requested (it took %s to apply), b's from the call's start: the peer's PONGs need no answer, so the call's bytes are the first the client sent after the fault", fmtDur(cutTook)))
	r2 := nsSysctl(cliH, "net.ipv4.tcp_retries2")
	kernel := "retransmission until tcp_retries2"
	if r2 >= 0 {
		kernel = fmt.Sprintf("tcp_retries2=%d: ≈%s of retransmissions", r2, fmtDur(retransmitGiveUp(r2)))
	}
	detail = append(detail, env.baselineText(base, fmt.Sprintf("in case a with %d unacknowledged bytes (%d when read), blocked in Read", unackedBody, unacked[plainAddr]), kernel))
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 3. server-frozen

func serverFrozen(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(detectBound), BaselineMS: -1,
		Metric: "time from SIGSTOP to the failure of a call with ErrPeerDead"}
	_, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	srvAddr := addr(lk.Addr(srvH), servicePort)
	srv, err := env.startServer(ctx, srvH, srvAddr)
	if err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	if _, err := ag.newClient(ctx, "c", []string{srvAddr.String()}); err != nil {
		return r, err
	}
	if err := ag.callOK(ctx, "c"); err != nil {
		return r, err
	}
	lastFrame := mono() // the echo's answer: nothing else comes for a heartbeat interval
	// Raw connections to the same server, opened (HELLO exchanged) just
	// before the freeze (the server would close them after a heartbeat
	// timeout of silence): one on the kernel's defaults, one with
	// aggressive keepalive.
	pc, err := env.rawPeer(ctx, cliH, srvAddr, nil)
	if err != nil {
		return r, err
	}
	kc, err := env.rawPeer(ctx, cliH, srvAddr, &net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3})
	if err != nil {
		pc.Close()
		return r, err
	}
	// The server freezes while the client is idle, frozenAfter after the
	// last frame it received.
	if err := sleepCtx(ctx, frozenAfter-since(lastFrame, mono())); err != nil {
		pc.Close()
		kc.Close()
		return r, err
	}
	env.logf("freezing the server (pid %d)", srv.pid())
	t0 := mono()
	gap := since(lastFrame, t0)
	if err := faultnet.Freeze(srv.pid()); err != nil {
		pc.Close()
		kc.Close()
		return r, err
	}
	var wg sync.WaitGroup
	var call *callResult
	var callErr error
	wg.Go(func() { call, callErr = ag.call(ctx, "c", "echo", "are you there?", 30*time.Second) })
	for _, c := range []net.Conn{pc, kc} {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(requestFrame(1, "echo", "are you there?")); err != nil {
			pc.Close()
			kc.Close()
			return r, fmt.Errorf("plain connection: writing to the frozen server: %w", err)
		}
	}
	pw := env.watchRead(pc)
	kw := env.watchRead(kc)
	// The frozen server's kernel acknowledges what it receives.
	unacked := -1
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return r, err
	}
	if socks, err := tcpTable(cliH); err == nil {
		unacked = 0
		for _, s := range socks {
			if s.Remote == srvAddr && s.State == tcpEstablished {
				unacked += s.TxQueue
			}
		}
	}
	var base, kbase baseline
	var baseErr, kbaseErr error
	wg.Go(func() { base, baseErr = pw.wait(ctx, t0, env.BaselineCap()) })
	wg.Go(func() { kbase, kbaseErr = kw.wait(ctx, t0, env.BaselineCap()) })
	wg.Wait()
	if callErr != nil {
		return r, callErr
	}
	if err := errors.Join(baseErr, kbaseErr); err != nil {
		return r, err
	}
	r.BaselineMS, r.BaselineCapped, r.Baseline = base.ms(), base.capped, base.cell()

	d := since(t0, call.End)
	r.MeasuredMS = ms(d)
	var detail []string
	switch {
	case call.ok():
		detail = append(detail, "the call SUCCEEDED on a frozen server")
	case call.is("peer_dead"):
		detail = append(detail, "the call failed with ErrPeerDead "+within(d, detectBound))
	default:
		detail = append(detail, fmt.Sprintf("the call failed with %q, not ErrPeerDead, after %s", call.Err, fmtDur(d)))
	}
	r.Pass = call.is("peer_dead") && d <= detectBound
	detail = append(detail, fmt.Sprintf("the client was idle: its last frame arrived %s before the freeze", fmtDur(gap)))
	if unacked == 0 {
		detail = append(detail, "the frozen server's kernel acknowledged every byte sent to it (0 unacknowledged): TCP sees nothing wrong")
	} else if unacked > 0 {
		detail = append(detail, fmt.Sprintf("%d bytes unacknowledged by the frozen server's kernel", unacked))
	}
	detail = append(detail, env.baselineText(base, "waiting for the answer to a request", ""))
	if kbase.capped {
		detail = append(detail, fmt.Sprintf("even with keepalive at 1 s idle, 1 s interval, 3 probes a plain connection noticed nothing within %s: the kernel answers the probes", fmtDur(kbase.d)))
	} else {
		detail = append(detail, fmt.Sprintf("a plain connection with keepalive 1 s/1 s/3 failed after %s (%v)", fmtDur(kbase.d), kbase.err))
	}
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}
