package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// rolling-restart: each of 4 registered servers under steady load is
// upgraded in place (SIGHUP: a new process inherits its listeners, the old
// one drains and exits), then drained (SIGTERM: it deregisters before its
// GOAWAY) and restarted (a fresh serve that registers again), one after
// the other.
//
// The process an upgrade starts is the old process's child, not ours: it
// is followed through the PID file (--pid-file) and a pidfd, which is
// readable once the process has exited, zombie or not (nobody may reap it
// here), and signals it without the risk of a reused pid.

// rollingBound bounds each drain, after the upgrade and after SIGTERM:
// the servers' --shutdown-timeout. The row passes on 0 failed calls and 0
// refused connects; the drains are its measured times.
const rollingBound = drainShutdownTimeout

// rollingDrainDelay is the servers' --drain-delay: far more than an etcd
// watch takes to tell the client, on this lab's links.
const rollingDrainDelay = 300 * time.Millisecond

// rollStepLimit bounds each wait of a step (a new pid, a process's exit, a
// server back in the client's set, calls reaching it).
const rollStepLimit = drainShutdownTimeout + 5*time.Second

// pidProc is a process followed through a pidfd.
type pidProc struct {
	pid int
	fd  int
}

// openPID opens a pidfd on pid, closed when the scenario ends. Once the
// caller has checked that the process is one of the scenario's, killAtEnd
// has it killed then if it still runs.
func (e *Env) openPID(pid int) (*pidProc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	p := &pidProc{pid: pid, fd: fd}
	e.onClose(func() { unix.Close(p.fd) })
	return p, nil
}

// killAtEnd kills the process when the scenario ends, if it still runs
// (before the pidfd is closed: cleanups run last registered first).
func (p *pidProc) killAtEnd(e *Env) {
	e.onClose(func() {
		if !p.exited() {
			_ = p.signal(unix.SIGKILL)
			_ = p.waitExit(context.Background(), 5*time.Second)
		}
	})
}

// exited reports whether the process has exited (a zombie has).
func (p *pidProc) exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// waitExit waits up to limit for the process to exit.
func (p *pidProc) waitExit(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		switch {
		case err != nil && !errors.Is(err, unix.EINTR):
			return err
		case n > 0:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("pid %d still running after %s", p.pid, fmtDur(limit))
		}
	}
}

func (p *pidProc) signal(sig unix.Signal) error {
	return unix.PidfdSendSignal(p.fd, sig, nil, 0)
}

// rollHost is one server of the rolling restart.
type rollHost struct {
	fh      *fleetHost
	pidFile string
}

// rollStep is what one server's turn measured.
type rollStep struct {
	upgraded   time.Duration // SIGHUP to the new pid in the PID file
	oldDrained time.Duration // the new pid to the old process's exit
	oldErr     error         // the old process's exit status (it is our child)
	drained    time.Duration // SIGTERM to the new process's exit
	back       time.Duration // the fresh server's start to the client having it ready
	flowing    time.Duration // then to calls reaching it
	// refused counts the client's failed connects during the upgrade,
	// the drain and the restart.
	refused [3]uint64
	goaways [3]uint64
}

func (s rollStep) line(name string, pids string) string {
	return fmt.Sprintf("%s: upgraded (%s) in %s, the old process exited %s later (%s); drained (SIGTERM to exit) in %s; restarted: in the client's set %s after its start, calls reaching it %s later; client's failed connects %d/%d/%d, GOAWAYs %d/%d/%d (upgrade/drain/restart)",
		name, pids, fmtDur(s.upgraded), fmtDur(s.oldDrained), exitText(s.oldErr), fmtDur(s.drained), fmtDur(s.back), fmtDur(s.flowing),
		s.refused[0], s.refused[1], s.refused[2], s.goaways[0], s.goaways[1], s.goaways[2])
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func rollingRestart(ctx context.Context, env *Env) (Result, error) {
	r := Result{BoundMS: ms(rollingBound), BaselineMS: -1, Bound: "0 failed, 0 refused",
		Metric: "the longest drain, after an upgrade or a SIGTERM (bounded by --shutdown-timeout); the row passes on 0 failed calls and 0 refused connects"}
	dir, err := env.tempDir("tcppro-verify-pids-")
	if err != nil {
		return r, err
	}
	flags := func(h *fleetHost) []string {
		// The drain delay lets the client see the key's deletion before
		// the GOAWAY: without it, a client could reconnect to the server
		// it is told to leave, and find its listener closed.
		return []string{"--pid-file", filepath.Join(dir, h.host.Name()+".pid"), "--shutdown-timeout", drainShutdownTimeout.String(),
			"--drain-delay", rollingDrainDelay.String()}
	}
	l, err := startEtcdLab(ctx, env, 4, 4, etcdTTL, flags, steadyLoad)
	if err != nil {
		return r, err
	}
	var detail []string
	var worst time.Duration
	for i, fh := range l.f.servers {
		rh := rollHost{fh: fh, pidFile: filepath.Join(dir, fh.host.Name()+".pid")}
		step, pids, err := l.roll(ctx, i, rh, flags)
		if err != nil {
			return r, fmt.Errorf("%s: %w", fh.host.Name(), err)
		}
		worst = max(worst, step.oldDrained, step.drained)
		detail = append(detail, step.line(fh.host.Name(), pids))
	}
	// Calls keep flowing to every server.
	shares, err := l.shareOver(ctx, shareWindow)
	if err != nil {
		return r, err
	}
	s, st, err := l.stopLoad(ctx)
	if err != nil {
		return r, err
	}
	flowing := len(shares) == len(l.f.servers)
	for _, a := range l.f.addrs() {
		flowing = flowing && shares[a] > 0
	}
	detail = append(detail, fmt.Sprintf("afterwards, over %s: %s%s", fmtDur(shareWindow), sharesText(shares),
		map[bool]string{true: "", false: " — NOT every server gets calls"}[flowing]))
	line, loadOK := l.loadJudged(s, st)
	detail = append(detail, line)
	r.MeasuredMS = ms(worst)
	r.Measured = fmt.Sprintf("%d failed/%d, %d refused", s.failed(), s.Calls, st.DialFailures-l.stats.DialFailures)
	r.Pass = loadOK && flowing && worst <= rollingBound
	r.Detail = strings.Join(detail, "\n")
	return r, nil
}

// roll upgrades server i, drains it and starts it again, counting the
// client's failed connects and GOAWAYs in each phase.
func (l *etcdLab) roll(ctx context.Context, i int, rh rollHost, flags func(*fleetHost) []string) (rollStep, string, error) {
	var st rollStep
	var cur *pidProc
	var pids string
	phases := []func() error{
		func() (err error) { cur, pids, err = l.upgrade(ctx, i, rh, &st); return err },
		func() error { return l.drain(ctx, rh, cur, &st) },
		func() error { return l.restart(ctx, i, rh, flags, &st) },
	}
	for k, phase := range phases {
		before, err := l.ag.stats(ctx, etcdClient)
		if err != nil {
			return st, "", err
		}
		if err := phase(); err != nil {
			return st, "", err
		}
		after, err := l.ag.stats(ctx, etcdClient)
		if err != nil {
			return st, "", err
		}
		st.refused[k] = after.DialFailures - before.DialFailures
		st.goaways[k] = after.GoAways - before.GoAways
	}
	return st, pids + fmt.Sprintf(", restarted as pid %d", l.srvs[i].pid()), nil
}

// upgrade sends SIGHUP to server i, follows the new process through the
// PID file and waits for the old one to exit.
func (l *etcdLab) upgrade(ctx context.Context, i int, rh rollHost, st *rollStep) (*pidProc, string, error) {
	old := l.srvs[i]
	oldP, err := l.env.openPID(old.pid())
	if err != nil {
		return nil, "", err
	}
	l.env.logf("SIGHUP to %s (pid %d)", rh.fh.host.Name(), old.pid())
	t0 := mono()
	if err := oldP.signal(unix.SIGHUP); err != nil {
		return nil, "", err
	}
	newPID, err := waitPIDFile(ctx, rh.pidFile, old.pid(), rollStepLimit)
	if err != nil {
		return nil, "", err
	}
	tNew := mono()
	st.upgraded = since(t0, tNew)
	// The pidfd first, then the check that it is the server's successor.
	cur, err := l.env.openPID(newPID)
	if err != nil {
		return nil, "", err
	}
	if err := isServe(newPID, rh.fh.addr().String()); err != nil {
		return nil, "", err
	}
	cur.killAtEnd(l.env)
	if err := oldP.waitExit(ctx, rollStepLimit); err != nil {
		return nil, "", fmt.Errorf("the upgraded process: %w", err)
	}
	st.oldDrained = since(tNew, mono())
	st.oldErr = old.waitExit(5 * time.Second)
	return cur, fmt.Sprintf("pid %d → %d", old.pid(), newPID), nil
}

// drain sends SIGTERM to the process the upgrade started and waits for its
// exit.
func (l *etcdLab) drain(ctx context.Context, rh rollHost, cur *pidProc, st *rollStep) error {
	l.env.logf("SIGTERM to %s (pid %d)", rh.fh.host.Name(), cur.pid)
	t1 := mono()
	if err := cur.signal(unix.SIGTERM); err != nil {
		return err
	}
	if err := cur.waitExit(ctx, rollStepLimit); err != nil {
		return fmt.Errorf("the drained process: %w", err)
	}
	st.drained = since(t1, mono())
	return nil
}

// restart starts a fresh server on the host and waits until the client has
// it ready and calls reach it.
func (l *etcdLab) restart(ctx context.Context, i int, rh rollHost, flags func(*fleetHost) []string, st *rollStep) error {
	t2 := mono()
	if err := l.start(ctx, i, etcdTTL, flags); err != nil {
		return err
	}
	a := rh.fh.addr().String()
	at, eps, err := waitEndpoints(ctx, l.ag, etcdClient, rollStepLimit, func(eps []endpointState) bool {
		e, ok := endpointOf(eps, a)
		return ok && e.State == "ready"
	})
	if err != nil {
		return err
	}
	st.back = since(t2, at)
	e0, _ := endpointOf(eps, a)
	at2, _, err := waitEndpoints(ctx, l.ag, etcdClient, rollStepLimit, func(eps []endpointState) bool {
		e, ok := endpointOf(eps, a)
		return ok && e.Successes > e0.Successes
	})
	st.flowing = since(at, at2)
	return err
}

// waitPIDFile waits until the PID file names a process other than old.
func waitPIDFile(ctx context.Context, path string, old int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != old && pid > 1 {
				return pid, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the PID file %s still names %d after %s (%v)", path, old, fmtDur(limit), err)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// isServe checks that pid is a `serve --listen addr` process.
func isServe(pid int, addr string) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return fmt.Errorf("the new process %d: %w", pid, err)
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) && args[i+1] == addr {
			return nil
		}
	}
	return fmt.Errorf("the PID file names %d, which is not serve --listen %s: %q", pid, addr, args)
}
