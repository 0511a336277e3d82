package verify

import (
	"context"
	"errors"
	"fmt"
	"github.com/tcppro/tcppro/balancer"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/wire"
)

// Scenarios 4 to 8: connecting, losing and draining servers, the
// connection cap, closing.

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
	if env.opts.TLS != nil {
		detail = append(detail, "the client is a TLS client; the black hole stops its connect, so its handshake never starts")
	}
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
	// Round-robin, so that the draining server keeps its half of the
	// calls queued: the default balancer would steer them away from a
	// server that takes one at a time, and leave none to retry.
	if _, err := ag.newClientSpec(ctx, "c", clientSpec{Addrs: addrs, Policy: balancer.RoundRobin}); err != nil {
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
	// Fill the cap: one client per connection (a client holds one
	// connection per server of its set).
	for i := range capConns {
		if _, err := ag.newClient(ctx, fmt.Sprintf("fill%d", i), []string{srvAddr.String()}); err != nil {
			return r, err
		}
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
	for i := range capConns {
		if err := ag.callOK(ctx, fmt.Sprintf("fill%d", i)); err != nil {
			return r, err
		}
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
	var fillErr error
	for i := range capConns {
		fillErr = errors.Join(fillErr, ag.callOK(ctx, fmt.Sprintf("fill%d", i)))
	}
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
	pc, err := env.rawPeer(ctx, cliH, srvAddr, nil)
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
	pc2, err := env.rawPeer(ctx, cliH, srvAddr, nil)
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
	// Half-close: a TCP FIN (in a TLS run, after TLS's close_notify).
	if err := pc2.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
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
