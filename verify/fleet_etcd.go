package verify

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
)

// The fleet rows whose servers register in etcd (serve --register) and
// whose client follows them through an etcd:// target: rolling-restart
// (fleet_restart.go), scale-out and registry-loss.

const (
	// scaleAge, scaleAgeJitter and scaleAgeGrace are the servers'
	// shortened --max-conn-age, --max-conn-age-jitter and
	// --max-conn-age-grace in scale-out. The age is longer than the
	// client's warm-up of a joining server (balancer's 10 s): a client
	// connected to every server moves its calls onto the joiner as the
	// warm-up ends; connection ageing is what moves clients that are not
	// (held connections, subsets), and the row's bound holds both.
	scaleAge       = 12 * time.Second
	scaleAgeJitter = 0.1 // scaleOutBound's scaleAge/10
	scaleAgeGrace  = 3 * time.Second
	// scaleOutBound is the age at its longest (jitter) + grace.
	scaleOutBound = scaleAge + scaleAge/10 + scaleAgeGrace
	// scaleShare and scaleSlack: the joiner's share of the calls, 1 of
	// 5 servers, ± 5 points.
	scaleShare = 0.20
	scaleSlack = 0.05
	// shareWindow is the window a share is measured over; sharePoll how
	// often the window slides.
	shareWindow = 3 * time.Second
	sharePoll   = 500 * time.Millisecond
	// judgeWindow is the window the joiner's share is judged over: the
	// last one of the bound.
	judgeWindow = 5 * time.Second
	// clientWarmUp is the client's warm-up of a joining server (balancer's
	// default WarmUp).
	clientWarmUp = 10 * time.Second

	// lossTTL is the servers' --register-ttl in registry-loss; lossOutage
	// how long etcd is stopped.
	lossTTL    = 5 * time.Second
	lossOutage = 30 * time.Second
	// registryLossBound: a SIGKILLed server leaves the client's set
	// within its lease TTL + 2 s.
	registryLossBound = lossTTL + 2*time.Second
	// reregisterBound: once etcd is healthy again, every server has
	// registered again within gRPC's next reconnect to it (at most 5 s +
	// 20 % jitter: the registration's backoff ceiling) + the keepalive's
	// retry interval while it fails (TTL/3) + one request's timeout
	// (TTL/3): 9.3 s with a TTL of 5 s (4.1–4.8 s measured).
	reregisterBound = 10 * time.Second
)

// etcdClient is the name of the client under load in these rows.
const etcdClient = "c"

// etcdLab is a fleet registered in etcd and a client on the etcd:// target
// under steady load.
type etcdLab struct {
	env   *Env
	f     *fleet
	etcd  *etcdProc
	srvs  []*serverProc // by host, nil for a host not started
	ag    *agent
	stats client.Stats // the client's, when the load started
}

// steadyLoad is the rows' load: 4 workers, one echo every 10 ms each.
var steadyLoad = agentReq{Op: "load_start", Client: etcdClient, Method: "echo", Body: "fleet",
	Timeout: 5 * time.Second, Workers: 4, Pace: 10 * time.Millisecond}

// busyLoad is scale-out's load: calls that take 20 ms (the reference
// service's sleep), 10 workers each starting one every 20 ms, so that about
// two calls are in flight per server. Shares are a question of load and of
// the service time against the host's noise: with sub-millisecond echoes
// and nothing in flight, a latency-based pick ranks identical servers by
// their recent worst answer, which on a busy host is scheduling noise
// (four of them got between 2 % and 50 % of the calls in 3 s windows); with
// 5 ms calls a 10 ms stall still triples a server's latency for seconds
// (a joiner's share over the judged window ranged over 13–22 % under CI's
// load). README, "The fleet".
var busyLoad = agentReq{Op: "load_start", Client: etcdClient, Method: "sleep", Body: "20ms",
	Timeout: 5 * time.Second, Workers: 10, Pace: 20 * time.Millisecond}

// startEtcdLab builds a fleet of hosts server hosts with a registry,
// starts etcd and registered servers on the first servers hosts (with the
// flags extra gives each), a client agent whose client follows the
// registry, waits until it is connected to every server, and starts the
// load (steadyLoad or busyLoad).
func startEtcdLab(ctx context.Context, env *Env, hosts, servers int, ttl time.Duration, extra func(h *fleetHost) []string, load agentReq) (*etcdLab, error) {
	f, err := env.newFleet(hosts, true)
	if err != nil {
		return nil, err
	}
	l := &etcdLab{env: env, f: f, srvs: make([]*serverProc, hosts)}
	if l.etcd, err = f.startEtcd(ctx); err != nil {
		return nil, err
	}
	for i := range servers {
		if err := l.start(ctx, i, ttl, extra); err != nil {
			return nil, err
		}
	}
	if l.ag, err = env.startAgent(f.client); err != nil {
		return nil, err
	}
	if _, err := l.ag.newClientSpec(ctx, etcdClient, clientSpec{Target: f.etcdTarget(nil)}); err != nil {
		return nil, err
	}
	want := f.addrs(f.servers[:servers]...)
	if _, _, err := waitEndpoints(ctx, l.ag, etcdClient, 15*time.Second, func(eps []endpointState) bool {
		return sameAddrs(eps, want) && allReady(eps)
	}); err != nil {
		return nil, err
	}
	if err := l.ag.callOK(ctx, etcdClient); err != nil {
		return nil, err
	}
	if l.stats, err = l.ag.stats(ctx, etcdClient); err != nil {
		return nil, err
	}
	_, err = l.ag.do(ctx, load)
	return l, err
}

// start starts a registered server on host i.
func (l *etcdLab) start(ctx context.Context, i int, ttl time.Duration, extra func(h *fleetHost) []string) error {
	h := l.f.servers[i]
	var args []string
	if extra != nil {
		args = extra(h)
	}
	s, err := l.f.startRegistered(ctx, h, ttl, args...)
	l.srvs[i] = s
	return err
}

// stopLoad stops the load and returns its summary and the client's stats.
func (l *etcdLab) stopLoad(ctx context.Context) (*loadSummary, client.Stats, error) {
	resp, err := l.ag.do(ctx, agentReq{Op: "load_stop", Client: etcdClient})
	if err != nil {
		return nil, client.Stats{}, err
	}
	st, err := l.ag.stats(ctx, etcdClient)
	return resp.Load, st, err
}

// loadJudged describes the load and the client's refused connects since
// it started, and reports whether every call succeeded and no connect
// failed.
func (l *etcdLab) loadJudged(s *loadSummary, after client.Stats) (string, bool) {
	refused := after.DialFailures - l.stats.DialFailures
	line := fmt.Sprintf("load: %d calls, %d ok, errors: %s; %d hung; p50 %s, p99 %s; client: %d failed connects, %d GOAWAYs, %d retries, %d reconnects",
		s.Calls, s.OK, s.errorText(), s.Hung, fmtMS(s.P50MS), fmtMS(s.P99MS), refused,
		after.GoAways-l.stats.GoAways, after.Retries-l.stats.Retries, after.Reconnects-l.stats.Reconnects)
	if len(s.Untyped) > 0 {
		line += fmt.Sprintf("; untyped errors: %q", s.Untyped)
	}
	return line, s.Calls > 0 && s.failed() == 0 && s.Hung == 0 && refused == 0
}

// ---------------------------------------------------------------------------
// scale-out

func scaleOut(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(scaleOutBound), BaselineMS: -1,
		Bound: fmt.Sprintf("%.0f %% ± %.0f within %s", 100*scaleShare, 100*scaleSlack, fmtDur(scaleOutBound)),
		Metric: fmt.Sprintf("time from starting a 5th registered server to the end of the first %s window in which it carried %.0f %% ± %.0f points of the calls; the row passes when it also does over the last %s of the bound (the servers' --max-conn-age %s +%.0f %% jitter + --max-conn-age-grace %s)",
			fmtDur(shareWindow), 100*scaleShare, 100*scaleSlack, fmtDur(judgeWindow), fmtDur(scaleAge), 100*scaleAgeJitter, fmtDur(scaleAgeGrace))}
	ageFlags := func(*fleetHost) []string {
		return []string{"--max-conn-age", scaleAge.String(), "--max-conn-age-jitter", strconv.FormatFloat(scaleAgeJitter, 'f', -1, 64),
			"--max-conn-age-grace", scaleAgeGrace.String()}
	}
	l, err := startEtcdLab(ctx, env, 5, 4, etcdTTL, ageFlags, busyLoad)
	if err != nil {
		return r, err
	}
	joiner := l.f.servers[4].addr().String()
	// The fleet's shares before, over one window.
	before, err := l.shareOver(ctx, shareWindow)
	if err != nil {
		return r, err
	}
	env.logf("starting a 5th server, %s", joiner)
	t0 := mono()
	if err := l.start(ctx, 4, etcdTTL, ageFlags); err != nil {
		return r, err
	}
	tUp := mono()
	joinAt, _, err := waitEndpoints(ctx, l.ag, etcdClient, scaleOutBound, func(eps []endpointState) bool {
		e, ok := endpointOf(eps, joiner)
		return ok && e.State == "ready"
	})
	if err != nil {
		return r, err
	}
	reached, share, trail, err := l.waitShare(ctx, joiner, t0, scaleOutBound)
	if err != nil {
		return r, err
	}
	// The judged window: the last judgeWindow of the bound, once the
	// client's warm-up of the joiner (10 s from its connection) has ended;
	// a joiner connected so late that the window would end past the bound
	// fails the row.
	judgeFrom := max(scaleOutBound-judgeWindow, since(t0, joinAt)+clientWarmUp)
	if err := sleepCtx(ctx, judgeFrom-since(t0, mono())); err != nil {
		return r, err
	}
	tJudge := since(t0, mono())
	after, err := l.shareOver(ctx, judgeWindow)
	if err != nil {
		return r, err
	}
	s, st, err := l.stopLoad(ctx)
	if err != nil {
		return r, err
	}
	var detail []string
	detail = append(detail, fmt.Sprintf("before: 4 servers, %s", sharesText(before)))
	detail = append(detail, fmt.Sprintf("the 5th server accepted %s after its start; the client had it (from the etcd watch) and connected %s after its start",
		fmtDur(since(t0, tUp)), fmtDur(since(t0, joinAt))))
	detail = append(detail, "its share over the trailing "+fmtDur(shareWindow)+" window, every "+fmtDur(sharePoll)+" (the client warms a joiner in over 10 s): "+trail)
	ok := reached > 0
	if ok {
		r.MeasuredMS = ms(reached)
		detail = append(detail, fmt.Sprintf("its share reached %.1f %% %s after its start: %s", 100*share, fmtDur(reached), within(reached, scaleOutBound)))
	} else {
		r.MeasuredMS = ms(scaleOutBound)
		detail = append(detail, fmt.Sprintf("its share did NOT reach %.0f %% ± %.0f within %s", 100*scaleShare, 100*scaleSlack, fmtDur(scaleOutBound)))
	}
	held := inShare(after[joiner])
	detail = append(detail, fmt.Sprintf("judged over %s to %s after its start: %s (the joiner %s)", fmtDur(tJudge), fmtDur(tJudge+judgeWindow), sharesText(after), map[bool]string{true: "within 20 % ± 5", false: "OUT of 20 % ± 5"}[held]))
	if tJudge+judgeWindow > scaleOutBound+sharePoll {
		detail = append(detail, fmt.Sprintf("the judged window ended PAST the bound: the client connected to the joiner %s after its start, and warms it in for %s", fmtDur(since(t0, joinAt)), fmtDur(clientWarmUp)))
	}
	line, loadOK := l.loadJudged(s, st)
	detail = append(detail, line)
	r.Measured = fmt.Sprintf("%.1f %% at %s; %.1f %% at the bound", 100*share, fmtDur(reached), 100*after[joiner])
	if !ok {
		r.Measured = fmt.Sprintf("not reached (%.1f %% after)", 100*after[joiner])
	}
	r.Pass = ok && reached <= scaleOutBound && held && loadOK && tJudge+judgeWindow <= scaleOutBound+sharePoll
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// etcdTTL is the lease TTL of the rows that do not measure it.
const etcdTTL = 5 * time.Second

// inShare reports whether a share is 20 % ± 5 points.
func inShare(s float64) bool { return s >= scaleShare-scaleSlack && s <= scaleShare+scaleSlack }

// shareOver returns each server's share of the client's calls over the
// next d.
func (l *etcdLab) shareOver(ctx context.Context, d time.Duration) (map[string]float64, error) {
	before, _, err := l.ag.endpoints(ctx, etcdClient)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, d); err != nil {
		return nil, err
	}
	after, _, err := l.ag.endpoints(ctx, etcdClient)
	if err != nil {
		return nil, err
	}
	shares, _ := callShares(before, after)
	return shares, nil
}

// waitShare slides a window over the client's calls until server a's
// share of it is 20 % ± 5, and returns when (from t0) and the share, or 0
// after limit; trail lists the shares seen.
func (l *etcdLab) waitShare(ctx context.Context, a string, t0 int64, limit time.Duration) (time.Duration, float64, string, error) {
	type snap struct {
		at  int64
		eps []endpointState
	}
	var snaps []snap
	var trail []string
	last := 0.0
	for {
		eps, at, err := l.ag.endpoints(ctx, etcdClient)
		if err != nil {
			return 0, 0, "", err
		}
		snaps = append(snaps, snap{at, eps})
		// The oldest snapshot at least a window old.
		i := len(snaps) - 1
		for i > 0 && since(snaps[i].at, at) < shareWindow {
			i--
		}
		if since(snaps[i].at, at) >= shareWindow {
			shares, _ := callShares(snaps[i].eps, eps)
			last = shares[a]
			trail = append(trail, fmt.Sprintf("%.1f", 100*last))
			if inShare(last) {
				return since(t0, at), last, strings.Join(trail, ", ") + " %", nil
			}
		}
		if since(t0, at) > limit {
			return 0, last, strings.Join(trail, ", ") + " %", nil
		}
		if err := sleepCtx(ctx, sharePoll); err != nil {
			return 0, 0, "", err
		}
	}
}

// ---------------------------------------------------------------------------
// registry-loss

func registryLoss(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(registryLossBound), BaselineMS: -1,
		Metric: fmt.Sprintf("time from SIGKILL to a server (--register-ttl %s) to the client no longer listing it, after a %s etcd outage; the row also needs 0 failed calls through the outage and etcd's return (up to the kill)", fmtDur(lossTTL), fmtDur(lossOutage))}
	l, err := startEtcdLab(ctx, env, 4, 4, lossTTL, nil, steadyLoad)
	if err != nil {
		return r, err
	}
	var detail []string
	pass := true
	note := func(ok bool, line string) {
		pass = pass && ok
		detail = append(detail, line)
	}
	want := l.f.addrs()
	m0, err := l.registrations(ctx)
	if err != nil {
		return r, err
	}
	env.logf("stopping etcd for %s", fmtDur(lossOutage))
	tStop := mono()
	if err := l.etcd.stop(); err != nil {
		return r, err
	}
	changes, err := l.watchSet(ctx, want, lossOutage-since(tStop, mono()))
	if err != nil {
		return r, err
	}
	note(len(changes) == 0, setLine(changes, lossOutage))
	m1, err := l.registrations(ctx)
	if err != nil {
		return r, err
	}
	for i, h := range l.f.servers {
		note(m1[i].retrying(m0[i]), fmt.Sprintf("%s during the outage: %s", h.host.Name(), m1[i].since(m0[i])))
	}
	env.logf("restarting etcd")
	tStart := mono()
	if err := l.etcd.start(ctx); err != nil {
		return r, err
	}
	tHealthy := mono()
	back, err := l.waitRegistered(ctx, 4*lossTTL)
	note(err == nil && since(tHealthy, back) <= reregisterBound, fmt.Sprintf("etcd restarted (healthy %s after its start); every server registered again: %s",
		fmtDur(since(tStart, tHealthy)), errOr(err, within(since(tHealthy, back), reregisterBound)+" after etcd was healthy")))
	// The load up to the kill: through the outage and etcd's return.
	resp, err := l.ag.do(ctx, agentReq{Op: "load_peek", Client: etcdClient})
	if err != nil {
		return r, err
	}
	st, err := l.ag.stats(ctx, etcdClient)
	if err != nil {
		return r, err
	}
	s := resp.Load
	line, loadOK := l.loadJudged(s, st)
	note(loadOK, "up to the kill, "+line)
	gone, line, err := l.killOne(ctx)
	if err != nil {
		return r, err
	}
	r.MeasuredMS = ms(gone)
	note(gone > 0 && gone <= registryLossBound, line)
	s2, st2, err := l.stopLoad(ctx)
	if err != nil {
		return r, err
	}
	// Calls in flight on the killed server fail (typed), and connects to
	// it are refused until it leaves the set: reported, none may hang.
	note(s2.Hung == 0 && s2.Errors["untyped"] == 0, fmt.Sprintf("after the kill: %d more calls, %d failed (%s: calls in flight on the killed server), %d hung; %d failed connects to it before it left the set",
		s2.Calls-s.Calls, s2.failed()-s.failed(), s2.errorText(), s2.Hung, st2.DialFailures-st.DialFailures))
	r.Measured = fmt.Sprintf("%s; %d failed/%d", fmtDur(gone), s.failed(), s.Calls)
	if gone <= 0 {
		r.Measured = fmt.Sprintf("still listed; %d failed/%d", s.failed(), s.Calls)
	}
	r.Bound = fmt.Sprintf("<= %s; 0 failed", fmtDur(registryLossBound))
	r.Pass = pass
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// errOr is "FAILED: err" when err is set, else ok.
func errOr(err error, ok string) string {
	if err != nil {
		return "FAILED: " + err.Error()
	}
	return ok
}

// setChange is a client's set seen to differ from the one it should keep.
type setChange struct {
	at  time.Duration
	eps string
}

// watchSet polls the client's set every 500 ms for d and returns the
// times it was not want.
func (l *etcdLab) watchSet(ctx context.Context, want []string, d time.Duration) ([]setChange, error) {
	start := mono()
	var changes []setChange
	for {
		eps, at, err := l.ag.endpoints(ctx, etcdClient)
		if err != nil {
			return nil, err
		}
		if !sameAddrs(eps, want) {
			changes = append(changes, setChange{since(start, at), endpointsText(eps)})
		}
		if since(start, at) >= d {
			return changes, nil
		}
		if err := sleepCtx(ctx, min(500*time.Millisecond, d-since(start, at))); err != nil {
			return nil, err
		}
	}
}

func setLine(changes []setChange, d time.Duration) string {
	if len(changes) == 0 {
		return fmt.Sprintf("the client kept its set of 4 servers throughout the %s outage (polled every 500 ms)", fmtDur(d))
	}
	c := changes[0]
	return fmt.Sprintf("the client's set CHANGED during the outage, %d of the polls; first %s in: %s", len(changes), fmtDur(c.at), c.eps)
}

// killOne SIGKILLs the last server and measures until the client no
// longer lists it.
func (l *etcdLab) killOne(ctx context.Context) (time.Duration, string, error) {
	h := l.f.servers[len(l.f.servers)-1]
	a := h.addr().String()
	p := l.srvs[len(l.srvs)-1]
	l.env.logf("SIGKILL to %s (%s, pid %d)", h.host.Name(), a, p.pid())
	tKill := mono()
	if err := faultnet.Kill(p.pid()); err != nil {
		return 0, "", err
	}
	limit := registryLossBound + 5*time.Second // watched a little past the bound, to say by how much it missed
	at, eps, err := waitEndpoints(ctx, l.ag, etcdClient, limit, func(eps []endpointState) bool {
		_, ok := endpointOf(eps, a)
		return !ok
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, "", err
		}
		return 0, fmt.Sprintf("the SIGKILLed %s was STILL in the client's set %s after the kill: %s", a, fmtDur(limit), endpointsText(eps)), nil
	}
	d := since(tKill, at)
	return d, fmt.Sprintf("the SIGKILLed %s left the client's set %s (lease TTL %s + 2 s)", a, within(d, registryLossBound), fmtDur(lossTTL)), nil
}

// regMetrics is a server's registration as its admin plane shows it.
type regMetrics struct {
	attempts, failures, registered float64
	readyz                         string // /readyz's status and lines
	err                            error
}

func (m regMetrics) retrying(prev regMetrics) bool {
	return m.err == nil && prev.err == nil && m.failures > prev.failures &&
		m.registered == 0 && strings.HasPrefix(m.readyz, "200 ") && strings.Contains(m.readyz, "not registered")
}

func (m regMetrics) since(prev regMetrics) string {
	if m.err != nil || prev.err != nil {
		return fmt.Sprintf("admin plane: FAILED: %v", errOr(m.err, fmt.Sprint(prev.err)))
	}
	return fmt.Sprintf("tcppro_registration_attempts_total %.0f → %.0f, _failures_total %.0f → %.0f, tcppro_registered %.0f; /readyz: %s",
		prev.attempts, m.attempts, prev.failures, m.failures, m.registered, m.readyz)
}

// registrations reads every server's registration metrics and /readyz.
func (l *etcdLab) registrations(ctx context.Context) ([]regMetrics, error) {
	out := make([]regMetrics, len(l.f.servers))
	for i, h := range l.f.servers {
		out[i] = readRegistration(ctx, h.host)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// waitRegistered waits until every server's registration is confirmed
// and returns when.
func (l *etcdLab) waitRegistered(ctx context.Context, limit time.Duration) (int64, error) {
	deadline := time.Now().Add(limit)
	for {
		ms, err := l.registrations(ctx)
		if err != nil {
			return 0, err
		}
		at := mono()
		var not []string
		for i, m := range ms {
			if m.err != nil || m.registered != 1 {
				not = append(not, fmt.Sprintf("%s (%s)", l.f.servers[i].host.Name(), m.readyz))
			}
		}
		if len(not) == 0 {
			return at, nil
		}
		if time.Now().After(deadline) {
			return at, fmt.Errorf("not registered again after %s: %s", fmtDur(limit), strings.Join(not, "; "))
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// readRegistration asks a server's admin plane (on its loopback) for its
// registration metrics and readiness.
func readRegistration(ctx context.Context, h *faultnet.Host) regMetrics {
	var m regMetrics
	code, body, err := adminGet(ctx, h, "/metrics")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("/metrics answered %d", code)
	}
	if err != nil {
		m.err = err
		return m
	}
	vals := map[string]*float64{"tcppro_registration_attempts_total": &m.attempts,
		"tcppro_registration_failures_total": &m.failures, "tcppro_registered": &m.registered}
	for line := range strings.Lines(body) {
		f := strings.Fields(line)
		if len(f) == 2 && vals[f[0]] != nil {
			*vals[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	code, body, err = adminGet(ctx, h, "/readyz")
	if err != nil {
		m.err = err
		return m
	}
	m.readyz = strconv.Itoa(code) + " " + strings.Join(strings.Fields(strings.ReplaceAll(body, "\n", " | ")), " ")
	return m
}

// adminGet GETs path from the admin plane of the server on h.
func adminGet(ctx context.Context, h *faultnet.Host, path string) (int, string, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return h.Dial(ctx, network, a)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin.DefaultAddr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}
