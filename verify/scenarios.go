package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// The test configuration of every scenario.
const (
	hbInterval = time.Second // heartbeat interval, client and server
	hbTimeout  = time.Second // heartbeat timeout, client and server

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

// detectBound is the dead-peer bound: (interval + timeout) + 20 %.
const detectBound = (hbInterval + hbTimeout) * 12 / 10

// dialTimeout is the client's connect timeout: its default. A connect into
// a black hole must fail within ±10 % of it.
const (
	dialTimeout = client.DefaultDialTimeout
	dialLo      = dialTimeout * 9 / 10
	dialHi      = dialTimeout * 11 / 10
)

// Scenarios returns the scenarios in report order.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "link-cut-idle", Bound: detectBound, Run: linkCutIdle,
			Description: "the link to an idle peer is cut: client and server detect the dead peer within (interval+timeout)×1.2; a live idle peer is not declared dead over 30 s"},
		{Name: "link-cut-unacked", Bound: detectBound, Run: linkCutUnacked,
			Description: "the link is cut (or only the client's data is lost) while the client has unacknowledged data in flight: detected within the same bound (heartbeat, TCP_USER_TIMEOUT), not tcp_retries2's ~15 min"},
		{Name: "server-frozen", Bound: detectBound, Run: serverFrozen,
			Description: "the server process is frozen (SIGSTOP): its kernel still ACKs, but the client's heartbeat declares it dead and fails the call with ErrPeerDead"},
		{Name: "connect-blackhole", Bound: dialHi, Run: connectBlackhole,
			Description: "a connect into a SYN black hole fails at the dial timeout (±10 %)"},
		{Name: "server-killed", Bound: client.DefaultBackoffMax + resumeSlack, Run: serverKilled,
			Description: "the server is killed (SIGKILL) under steady load: every call succeeds or fails typed, none hangs; the restarted server binds at once; traffic resumes through backoff"},
		{Name: "server-drain", Bound: drainShutdownTimeout, Run: serverDrain,
			Description: "one of two servers gets SIGTERM under steady load: graceful drain, zero failed calls (unprocessed calls retried on the other through GOAWAY)"},
		{Name: "conn-cap", Bound: busyBound, Run: connCap,
			Description: "clients over the server's connection cap get the BUSY error within 100 ms"},
		{Name: "peer-close", Bound: closeWaitBound, Run: peerClose,
			Description: "the peer closes: no socket of ours (server side or client side) stays in CLOSE_WAIT beyond 1 s"},
	}
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
	pc, err := plainDial(ctx, cliH, addr(lk.Addr(srvH), plainPort), nil)
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
	detail = append(detail, baselineText(base, "blocked in Read on an idle connection", keepaliveText(cliH)))
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
func baselineText(b baseline, what, kernel string) string {
	s := "plain net.Conn (kernel defaults; Go's keepalive override off, so SO_KEEPALIVE stays off as the kernel leaves it) " + what + ": "
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
//     PINGs, so the heartbeat sees a live peer: only TCP_USER_TIMEOUT can
//     detect that the call's data is never acknowledged.
func linkCutUnacked(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(detectBound), BaselineMS: -1,
		Metric: "time from the fault to the failure of the call whose data is never acknowledged, worst of the two cases"}
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
	talker, err := env.startPlainServer(srvH, talkerAddr, plainMode{pingEvery: 250 * time.Millisecond})
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
	pc, err := plainDial(ctx, cliH, plainAddr, nil)
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
		{"b, only the client's data lost, the peer still sending PINGs", callB, tB, talkerAddr, "conn_closed"},
	} {
		d := since(c.t0, c.call.End)
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
		detail = append(detail, line+fmt.Sprintf("; the call was sent %s after the fault and failed %s after it was sent; %d bytes unacknowledged 300 ms after the fault",
			fmtDur(since(c.t0, c.call.Start)), fmtDur(c.call.took()), unacked[c.peer]))
	}
	r.MeasuredMS = ms(worst)
	r.Pass = pass
	detail = append(detail, fmt.Sprintf("times run from the moment each fault was requested (the cut took %s to apply); the calls were sent after", fmtDur(cutTook)))
	r2 := nsSysctl(cliH, "net.ipv4.tcp_retries2")
	kernel := "retransmission until tcp_retries2"
	if r2 >= 0 {
		kernel = fmt.Sprintf("tcp_retries2=%d: ≈%s of retransmissions", r2, fmtDur(retransmitGiveUp(r2)))
	}
	detail = append(detail, baselineText(base, fmt.Sprintf("in case a with %d unacknowledged bytes (%d when read), blocked in Read", unackedBody, unacked[plainAddr]), kernel))
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
	// Plain connections to the same server, made just before the freeze
	// (the server would close them after a heartbeat bound of silence):
	// one on the kernel's defaults, one with aggressive keepalive.
	pc, err := plainDial(ctx, cliH, srvAddr, nil)
	if err != nil {
		return r, err
	}
	kc, err := plainDial(ctx, cliH, srvAddr, &net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3})
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
	detail = append(detail, baselineText(base, "waiting for the answer to a request", ""))
	if kbase.capped {
		detail = append(detail, fmt.Sprintf("even with keepalive at 1 s idle, 1 s interval, 3 probes a plain connection noticed nothing within %s: the kernel answers the probes", fmtDur(kbase.d)))
	} else {
		detail = append(detail, fmt.Sprintf("a plain connection with keepalive 1 s/1 s/3 failed after %s (%v)", fmtDur(kbase.d), kbase.err))
	}
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 4. connect-blackhole

func connectBlackhole(ctx context.Context, env *Env) (Result, error) {
	lo, hi := dialLo, dialHi
	r := Result{BoundMS: ms(hi), BaselineMS: -1,
		Bound:  fmt.Sprintf("%s ± 10 %%", fmtDur(dialTimeout)),
		Metric: "time from the client's start to the failure of its first call (its connect ran into the black hole)"}
	_, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	srvAddr := addr(lk.Addr(srvH), servicePort)
	if _, _, err := env.startInProcServer(srvH, srvAddr, nil); err != nil {
		return r, err
	}
	if err := srvH.BlackholeSYN(servicePort); err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	env.logf("connecting into the black hole")
	var wg sync.WaitGroup
	var base baseline
	var baseErr error
	wg.Go(func() { base, baseErr = plainDialBaseline(ctx, cliH, srvAddr, env.BaselineCap()) })
	resp, err := ag.do(ctx, agentReq{Op: "probe", Addrs: []string{srvAddr.String()},
		HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout, DialTimeout: dialTimeout,
		Method: "echo", Body: "hello?", Timeout: 4 * dialTimeout})
	wg.Wait()
	if err != nil {
		return r, err
	}
	if baseErr != nil {
		return r, baseErr
	}
	r.BaselineMS, r.BaselineCapped, r.Baseline = base.ms(), base.capped, base.cell()
	call := resp.Call
	d := call.took()
	r.MeasuredMS = ms(d)
	r.Measured = fmtDur(d)
	var detail []string
	switch {
	case call.ok():
		detail = append(detail, "the call SUCCEEDED through a black hole")
	case call.is("dial_timeout"):
		detail = append(detail, fmt.Sprintf("the call failed after %s with the connect's timeout (%s); want %s to %s", fmtDur(d), call.Err, fmtDur(lo), fmtDur(hi)))
	default:
		detail = append(detail, fmt.Sprintf("the call failed after %s with %q, not a dial timeout", fmtDur(d), call.Err))
	}
	r.Pass = call.is("dial_timeout") && call.is("unavailable") && d >= lo && d <= hi
	sr := nsSysctl(cliH, "net.ipv4.tcp_syn_retries")
	kernel := "the SYN retries (tcp_syn_retries)"
	if sr >= 0 {
		kernel = fmt.Sprintf("tcp_syn_retries=%d: ≈%s", sr, fmtDur(synGiveUp(sr)))
	}
	s := "plain net.Dialer with no timeout of its own: "
	if base.capped {
		s += "still connecting after " + fmtDur(base.d)
	} else {
		s += fmt.Sprintf("gave up after %s (%v)", fmtDur(base.d), base.err)
	}
	detail = append(detail, s+"; the kernel's own bound: "+kernel)
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 5. server-killed

func serverKilled(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(client.DefaultBackoffMax + resumeSlack), BaselineMS: -1,
		Metric: "time from the restarted server accepting to the first successful call of the slower client"}
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
	names := []string{"c1", "c2"}
	for _, n := range names {
		if _, err := ag.newClient(ctx, n, []string{srvAddr.String()}); err != nil {
			return r, err
		}
		if err := ag.callOK(ctx, n); err != nil {
			return r, err
		}
	}
	// Steady load: calls that hold the server a little, so some are in
	// flight when it dies.
	load := agentReq{Op: "load_start", Method: "sleep", Body: "5ms", Timeout: 2 * time.Second, Workers: 4, Pace: 20 * time.Millisecond}
	for _, n := range names {
		load.Client = n
		if _, err := ag.do(ctx, load); err != nil {
			return r, err
		}
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	before := map[string]client.Stats{}
	for _, n := range names {
		if before[n], err = ag.stats(ctx, n); err != nil {
			return r, err
		}
	}
	env.logf("killing the server (pid %d) under load", srv.pid())
	tKill := mono()
	if err := faultnet.Kill(srv.pid()); err != nil {
		return r, err
	}
	_ = srv.waitExit(5 * time.Second)
	if err := sleepCtx(ctx, outage); err != nil {
		return r, err
	}
	// What the killed server left on its port.
	timeWait := 0
	if socks, err := tcpTable(srvH); err == nil {
		for _, s := range socks {
			if s.Local.Port() == servicePort && s.State == tcpTimeWait {
				timeWait++
			}
		}
	}
	env.logf("restarting the server")
	tRestart := mono()
	_, restartErr := env.startServer(ctx, srvH, srvAddr)
	tReady := mono()
	if restartErr == nil {
		// Until every client has had a success on the new server (the
		// backoff can delay a reconnect by up to its maximum), then a
		// little more steady traffic.
		deadline := time.Now().Add(client.DefaultBackoffMax + time.Second)
		for {
			resumed := 0
			for _, n := range names {
				resp, err := ag.do(ctx, agentReq{Op: "load_peek", Client: n, Marks: []int64{tKill}})
				if err != nil {
					return r, err
				}
				if resp.Load.FirstOK[0] != 0 {
					resumed++
				}
			}
			if resumed == len(names) || time.Now().After(deadline) {
				break
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return r, err
			}
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return r, err
		}
	}
	summaries := map[string]*loadSummary{}
	after := map[string]client.Stats{}
	for _, n := range names {
		resp, err := ag.do(ctx, agentReq{Op: "load_stop", Client: n, Marks: []int64{tKill}})
		if err != nil {
			return r, err
		}
		summaries[n] = resp.Load
		if after[n], err = ag.stats(ctx, n); err != nil {
			return r, err
		}
	}
	var detail []string
	pass := true
	if restartErr != nil {
		pass = false
		detail = append(detail, fmt.Sprintf("the restarted server did not come up: %v", restartErr))
	} else {
		detail = append(detail, fmt.Sprintf("the restarted server bound its port at once and accepted %s after it started (%d TIME_WAIT sockets of the killed one on :%d)",
			fmtDur(since(tRestart, tReady)), timeWait, servicePort))
	}
	total, hung, late, untyped := 0, 0, 0, 0
	var worstResume, worstBound time.Duration
	for _, n := range names {
		s := summaries[n]
		total += s.Calls
		hung += s.Hung
		late += s.Late
		untyped += s.Errors["untyped"]
		fails := after[n].DialFailures - before[n].DialFailures
		bound := client.Backoff{}.Ceiling(int(fails)) + resumeSlack
		worstBound = max(worstBound, bound)
		line := fmt.Sprintf("%s: %d calls, %d ok, errors: %s; %d hung, %d late; max %s; %d failed dials during the outage",
			n, s.Calls, s.OK, s.errorText(), s.Hung, s.Late, fmtDur(time.Duration(s.MaxMS*float64(time.Millisecond))), fails)
		if len(s.Untyped) > 0 {
			line += fmt.Sprintf("; untyped errors: %q", s.Untyped)
		}
		if restartErr == nil {
			if s.FirstOK[0] == 0 {
				pass = false
				line += fmt.Sprintf("; traffic NEVER resumed (watched for %s after the restart)", fmtDur(client.DefaultBackoffMax+time.Second))
				worstResume = max(worstResume, client.DefaultBackoffMax+time.Second)
			} else {
				resume := max(since(tReady, s.FirstOK[0]), 0)
				worstResume = max(worstResume, resume)
				line += fmt.Sprintf("; first success %s after the restart (backoff ceiling then %s)", fmtDur(resume), fmtDur(bound-resumeSlack))
				pass = pass && resume <= bound
			}
		}
		detail = append(detail, line)
	}
	pass = pass && hung == 0 && late == 0 && untyped == 0 && total > 0
	r.Pass = pass
	r.BoundMS = ms(worstBound)
	r.MeasuredMS = ms(worstResume)
	r.Bound = fmt.Sprintf("0 hung; resume <= %s", fmtDur(worstBound))
	r.Measured = fmt.Sprintf("%d hung/%d; resumed in %s", hung, total, fmtDur(worstResume))
	detail = append(detail, fmt.Sprintf("calls that neither succeeded nor returned an error: %d; untyped errors: %d", hung, untyped))
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 6. server-drain

func serverDrain(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(drainShutdownTimeout), BaselineMS: -1, Bound: "0 failed calls",
		Metric: "time from SIGTERM to the draining server's exit (the row passes on zero failed calls)"}
	lab, err := env.newLab()
	if err != nil {
		return r, err
	}
	cliH, err := lab.AddHost("client")
	if err != nil {
		return r, err
	}
	var srvs []*serverProc
	var addrs []string
	for i, name := range []string{"server_a", "server_b"} {
		h, err := lab.AddHost(name)
		if err != nil {
			return r, err
		}
		lk, err := lab.Link(cliH, h)
		if err != nil {
			return r, err
		}
		a := addr(lk.Addr(h), servicePort)
		extra := []string{"--shutdown-timeout", drainShutdownTimeout.String()}
		if i == 0 {
			// The server that drains processes one request per
			// connection at a time: the others wait unread in its
			// socket, so some are above the last id of its GOAWAY and
			// must be retried on the other server.
			extra = append(extra, "--max-in-flight", "1")
		}
		s, err := env.startServer(ctx, h, a, extra...)
		if err != nil {
			return r, err
		}
		srvs = append(srvs, s)
		addrs = append(addrs, a.String())
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	if _, err := ag.newClient(ctx, "c", addrs); err != nil {
		return r, err
	}
	// Both connections up: calls alternate between the servers.
	for range 4 {
		if err := ag.callOK(ctx, "c"); err != nil {
			return r, err
		}
	}
	if _, err := ag.do(ctx, agentReq{Op: "load_start", Client: "c", Method: "sleep", Body: "20ms",
		Timeout: 5 * time.Second, Workers: 8, Pace: 20 * time.Millisecond}); err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	before, err := ag.stats(ctx, "c")
	if err != nil {
		return r, err
	}
	a := srvs[0]
	env.logf("SIGTERM to server A (pid %d) under load", a.pid())
	tTerm := mono()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return r, err
	}
	exitErr := a.waitExit(drainShutdownTimeout + 5*time.Second)
	tExit := mono()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return r, err
	}
	resp, err := ag.do(ctx, agentReq{Op: "load_stop", Client: "c"})
	if err != nil {
		return r, err
	}
	after, err := ag.stats(ctx, "c")
	if err != nil {
		return r, err
	}
	s := resp.Load
	drain := since(tTerm, tExit)
	r.MeasuredMS = ms(drain)
	r.Measured = fmt.Sprintf("%d failed/%d", s.failed(), s.Calls)
	var detail []string
	exited := a.hasExited()
	detail = append(detail, fmt.Sprintf("%d calls, %d ok, errors: %s; %d hung, %d late", s.Calls, s.OK, s.errorText(), s.Hung, s.Late))
	detail = append(detail, fmt.Sprintf("client: %d GOAWAY received, %d calls retried elsewhere, %d reconnects during the drain",
		after.GoAways-before.GoAways, after.Retries-before.Retries, after.Reconnects-before.Reconnects))
	switch {
	case !exited:
		detail = append(detail, fmt.Sprintf("the server did NOT exit within %s of SIGTERM", fmtDur(drainShutdownTimeout+5*time.Second)))
	case exitErr != nil:
		detail = append(detail, fmt.Sprintf("the server drained in %s but exited with %v%s", fmtDur(drain), exitErr, a.stderr.suffix()))
	default:
		detail = append(detail, fmt.Sprintf("the server drained and exited cleanly %s after SIGTERM", fmtDur(drain)))
	}
	retried := after.Retries - before.Retries
	r.Pass = exited && exitErr == nil && s.Calls > 0 && s.failed() == 0 && s.Hung == 0 && s.Late == 0 &&
		after.GoAways > before.GoAways && retried > 0
	if after.GoAways == before.GoAways {
		detail = append(detail, "the client received no GOAWAY")
	}
	if retried == 0 {
		detail = append(detail, "no call was retried: the requests queued unread at the draining server should have been above its GOAWAY's last id")
	}
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 7. conn-cap

const (
	capConns   = 2 // the server's connection cap
	capRejects = 5 // clients over it
)

func connCap(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(busyBound), BaselineMS: -1,
		Metric: "time from a client's start to the BUSY error of its first call, slowest of the rejected clients"}
	_, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	srvAddr := addr(lk.Addr(srvH), servicePort)
	srv, obs, err := env.startInProcServer(srvH, srvAddr, func(c *server.Config) { c.MaxConns = capConns })
	if err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	// Fill the cap: one client with one connection per address given.
	fill := make([]string, capConns)
	for i := range fill {
		fill[i] = srvAddr.String()
	}
	if _, err := ag.newClient(ctx, "fill", fill); err != nil {
		return r, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Active < capConns {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the server has %d connections, want %d", srv.Stats().Active, capConns)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return r, err
		}
	}
	if err := ag.callOK(ctx, "fill"); err != nil {
		return r, err
	}
	env.logf("%d clients connecting over the cap of %d", capRejects, capConns)
	results := make([]*callResult, capRejects)
	errs := make([]error, capRejects)
	var wg sync.WaitGroup
	for i := range capRejects {
		wg.Go(func() {
			resp, err := ag.do(ctx, agentReq{Op: "probe", Addrs: []string{srvAddr.String()},
				HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout,
				Method: "echo", Body: "let me in", Timeout: 5 * time.Second})
			results[i], errs[i] = resp.Call, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	var worst time.Duration
	busy := 0
	var other []string
	for _, c := range results {
		worst = max(worst, c.took())
		if c.is("busy") {
			busy++
		} else if c.ok() {
			other = append(other, "success")
		} else {
			other = append(other, c.Err)
		}
	}
	fillErr := ag.callOK(ctx, "fill")
	obs.mu.Lock()
	rejected := obs.rejects["busy"]
	obs.mu.Unlock()
	r.MeasuredMS = ms(worst)
	var detail []string
	detail = append(detail, fmt.Sprintf("%d of %d clients over the cap of %d got ErrServerBusy, the slowest %s", busy, capRejects, capConns, within(worst, busyBound)))
	if len(other) > 0 {
		detail = append(detail, fmt.Sprintf("others got: %q", other))
	}
	detail = append(detail, fmt.Sprintf("the server refused %d connections with BUSY", rejected))
	if fillErr != nil {
		detail = append(detail, fmt.Sprintf("a client within the cap FAILED afterwards: %v", fillErr))
	} else {
		detail = append(detail, "the clients within the cap kept working")
	}
	r.Pass = busy == capRejects && worst <= busyBound && fillErr == nil && rejected >= capRejects
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// ---------------------------------------------------------------------------
// 8. peer-close

func peerClose(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(closeWaitBound), BaselineMS: -1,
		Metric: "time from the peer's FIN until our socket has left CLOSE_WAIT, worst of three cases"}
	_, srvH, cliH, lk, err := env.pair()
	if err != nil {
		return r, err
	}
	srvAddr := addr(lk.Addr(srvH), servicePort)
	closerAddr := addr(lk.Addr(srvH), plainPort)
	if _, _, err := env.startInProcServer(srvH, srvAddr, nil); err != nil {
		return r, err
	}
	closer, err := env.startPlainServer(srvH, closerAddr, plainMode{closeAfter: 300 * time.Millisecond})
	if err != nil {
		return r, err
	}
	ag, err := env.startAgent(cliH)
	if err != nil {
		return r, err
	}
	// notClosed matches our side of conn to peer while it has not closed:
	// ESTABLISHED before the FIN arrives, CLOSE_WAIT after.
	notClosed := func(local, remote netip.AddrPort) func(tcpSocket) bool {
		return func(s tcpSocket) bool {
			return s.Local == local && s.Remote == remote && (s.State == tcpEstablished || s.State == tcpCloseWait)
		}
	}
	var detail []string
	pass := true
	var worst time.Duration
	record := func(what string, d time.Duration, err error) {
		if err != nil {
			pass = false
			worst = max(worst, closeWaitBound*3)
			detail = append(detail, fmt.Sprintf("%s: %v", what, err))
			return
		}
		worst = max(worst, d)
		pass = pass && d <= closeWaitBound
		detail = append(detail, fmt.Sprintf("%s: our socket left CLOSE_WAIT %s", what, within(d, closeWaitBound)))
	}

	// a. The server side, idle peer: a plain client makes a call and
	// closes.
	pc, err := plainDial(ctx, cliH, srvAddr, nil)
	if err != nil {
		return r, err
	}
	defer pc.Close()
	if _, err := pc.Write(requestFrame(1, "echo", "bye")); err != nil {
		return r, err
	}
	if _, err := readResponse(pc, 1, 5*time.Second); err != nil {
		return r, fmt.Errorf("plain client: %w", err)
	}
	peer := addrPort(pc.LocalAddr())
	t0 := mono()
	pc.Close()
	at, _, err := waitNone(ctx, srvH, 3*closeWaitBound, notClosed(srvAddr, peer))
	record("server, idle peer closes", since(t0, at), err)

	// b. The server side, the peer half-closes with a request in flight:
	// the server finishes it, answers, and closes.
	pc2, err := plainDial(ctx, cliH, srvAddr, nil)
	if err != nil {
		return r, err
	}
	defer pc2.Close()
	const work = 200 * time.Millisecond
	if _, err := pc2.Write(requestFrame(1, "sleep", work.String())); err != nil {
		return r, err
	}
	peer2 := addrPort(pc2.LocalAddr())
	t1 := mono()
	if err := pc2.(*net.TCPConn).CloseWrite(); err != nil {
		return r, err
	}
	answered := make(chan error, 1)
	go func() {
		f, err := readResponse(pc2, 1, 5*time.Second)
		if err == nil && f.Type != wire.TypeResponse {
			err = fmt.Errorf("answered with %v", f.Header)
		}
		answered <- err
	}()
	at, _, err = waitNone(ctx, srvH, 3*closeWaitBound, notClosed(srvAddr, peer2))
	record(fmt.Sprintf("server, peer half-closes with a %s request in flight", fmtDur(work)), since(t1, at), err)
	if aerr := <-answered; aerr != nil {
		pass = false
		detail = append(detail, fmt.Sprintf("the request in flight at the peer's FIN was NOT answered: %v", aerr))
	} else {
		detail = append(detail, "the request in flight at the peer's FIN was answered before our FIN")
	}

	// c. The client side: a plain server closes the tcppro client's
	// connection.
	if _, err := ag.newClient(ctx, "c", []string{closerAddr.String()}); err != nil {
		return r, err
	}
	select {
	case cl := <-closer.closed:
		at, _, err := waitNone(ctx, cliH, 3*closeWaitBound, notClosed(cl.remote, closerAddr))
		record("client, the server closes", since(cl.at, at), err)
	case <-time.After(5 * time.Second):
		pass = false
		detail = append(detail, "client: the plain server never got a connection to close")
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.MeasuredMS = ms(worst)
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}
