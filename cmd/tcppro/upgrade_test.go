//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcppro/tcppro/client"
)

// The zero-downtime restart is tested on real processes: `tcppro serve`
// (this test binary playing tcppro) upgrades itself on SIGHUP, so its
// processes are a chain of parent and child, each child outliving its
// parent. The test process makes itself a child subreaper so that every
// process of the chain becomes its child when its parent exits: it can
// wait for each one, and kill any that remain when a test fails.

// upgradable is a `tcppro serve --pid-file` and the processes that
// replaced it, all writing their logs to one pipe.
type upgradable struct {
	t       *testing.T
	addr    string
	admin   string
	pidFile string
	logs    *logWatch

	mu    sync.Mutex
	procs map[int]*upProc
	last  *upProc
}

// upProc is one process of the chain; done is closed once it has exited
// and been reaped.
type upProc struct {
	p    *os.Process
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// subreaper makes the test process the reaper of its orphaned
// descendants for the rest of the test.
func subreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// startUpgradable starts exe (this test binary, or a copy) as `tcppro
// serve` on free loopback ports, with a PID file, and waits until it is
// ready: the PID file names it and /readyz answers 200.
func startUpgradable(t *testing.T, exe string, args ...string) *upgradable {
	t.Helper()
	subreaper(t)
	u := &upgradable{
		t:       t,
		addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		admin:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		pidFile: filepath.Join(t.TempDir(), "tcppro.pid"),
		procs:   map[int]*upProc{},
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	u.logs = newLogWatch(r)
	cmd := exec.Command(exe, append([]string{"serve", "--listen", u.addr, "--admin", u.admin,
		"--allow-ephemeral-port", "--pid-file", u.pidFile}, args...)...)
	cmd.Env = append(os.Environ(), "TCPPRO_TEST_MAIN=1")
	cmd.Stderr = w // an *os.File: no copying goroutine, so Wait returns at the exit
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	first := &upProc{p: cmd.Process, done: make(chan struct{})}
	go func() {
		first.err = cmd.Wait()
		close(first.done)
	}()
	u.procs[cmd.Process.Pid] = first
	u.last = first
	t.Cleanup(u.cleanup)
	if pid := u.waitPID(0); pid != cmd.Process.Pid {
		t.Fatalf("the PID file names %d, want %d", pid, cmd.Process.Pid)
	}
	u.waitReady()
	return u
}

// cleanup kills every process of the chain still running and waits for
// all of them and for the end of their logs.
func (u *upgradable) cleanup() {
	u.mu.Lock()
	procs := make([]*upProc, 0, len(u.procs))
	for _, p := range u.procs {
		procs = append(procs, p)
	}
	u.mu.Unlock()
	for _, p := range procs {
		p.p.Kill() // a pidfd underneath: never another process
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			u.t.Errorf("process %d did not end after SIGKILL", p.p.Pid)
		}
	}
	select {
	case <-u.logs.eof:
	case <-time.After(10 * time.Second):
		u.t.Errorf("the log pipe is still open: a process of the chain is still running")
	}
	if u.t.Failed() {
		u.t.Logf("logs:\n%s", u.logs.String())
	}
}

// waitPID waits until the PID file names a process other than old, and
// returns its id.
func (u *upgradable) waitPID(old int) int {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(u.pidFile)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != old {
				return pid
			}
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("the PID file %s still names %d (%v)\n%s", u.pidFile, old, err, u.logs)
		}
		<-tick.C
	}
}

// waitReady waits until the admin plane's /readyz answers 200.
func (u *upgradable) waitReady() {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	for {
		resp, err := hc.Get("http://" + u.admin + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("/readyz never answered 200 (%v)\n%s", err, u.logs)
		}
		<-tick.C
	}
}

// upgrade sends SIGHUP to the serving process and waits for the upgrade to
// complete: a new process is named by the PID file, the old one has
// exited (status 0) and /readyz answers 200 again. It returns the new
// process's id.
func (u *upgradable) upgrade() int {
	u.t.Helper()
	old, pid, mark := u.handOver()
	select {
	case <-old.done:
		if old.err != nil {
			u.t.Fatalf("the replaced process %d exited with %v\n%s", old.p.Pid, old.err, u.logs)
		}
	case <-time.After(30 * time.Second):
		u.t.Fatalf("the replaced process %d did not exit\n%s", old.p.Pid, u.logs)
	}
	u.logs.wait(u.t, mark, fmt.Sprintf(`upgrade: the replaced process has exited.* pid=%d`, pid))
	u.waitReady()
	return pid
}

// handOver sends SIGHUP to the serving process and waits until the new
// process is ready and the old one told so (it drains from then on). It
// returns the old process, the new one's id, and the logs' length before.
func (u *upgradable) handOver() (old *upProc, pid, mark int) {
	u.t.Helper()
	old = u.last
	mark = u.logs.Len()
	if err := old.p.Signal(syscall.SIGHUP); err != nil {
		u.t.Fatal(err)
	}
	pid = u.waitPID(old.p.Pid)
	p, err := os.FindProcess(pid) // a pidfd, taken while the process runs
	if err != nil {
		u.t.Fatal(err)
	}
	np := &upProc{p: p, done: make(chan struct{})}
	u.mu.Lock()
	u.procs[pid] = np
	u.last = np
	u.mu.Unlock()
	go func() {
		// The new process becomes this process's child (we are its
		// subreaper) only when its parent has exited.
		<-old.done
		_, np.err = p.Wait()
		close(np.done)
	}()
	u.logs.wait(u.t, mark, fmt.Sprintf(`pid=%d .*upgrade: the new process is ready|upgrade: the new process is ready.* pid=%d`, old.p.Pid, old.p.Pid))
	return old, pid, mark
}

// stop ends the serving process with SIGTERM and checks it exits 0.
func (u *upgradable) stop() {
	u.t.Helper()
	if err := u.last.p.Signal(syscall.SIGTERM); err != nil {
		u.t.Fatal(err)
	}
	select {
	case <-u.last.done:
		if u.last.err != nil {
			u.t.Fatalf("serve exited with %v after SIGTERM\n%s", u.last.err, u.logs)
		}
	case <-time.After(30 * time.Second):
		u.t.Fatalf("serve did not exit after SIGTERM\n%s", u.logs)
	}
}

// logWatch collects the lines of a pipe and wakes those waiting for one.
type logWatch struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{} // closed and replaced on every line
	eof     chan struct{}
}

func newLogWatch(r *os.File) *logWatch {
	l := &logWatch{changed: make(chan struct{}), eof: make(chan struct{})}
	go func() {
		defer close(l.eof)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.b.WriteString(sc.Text())
			l.b.WriteByte('\n')
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *logWatch) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Len is a mark: wait looks at the lines written after it.
func (l *logWatch) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// wait waits until a line written after mark matches the regular
// expression pattern, and returns it.
func (l *logWatch) wait(t *testing.T, mark int, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		s, changed := l.b.String()[mark:], l.changed
		l.mu.Unlock()
		for line := range strings.Lines(s) {
			if re.MatchString(line) {
				return line
			}
		}
		select {
		case <-changed:
		case <-l.eof:
			t.Fatalf("the logs ended without a line matching %q:\n%s", pattern, l)
		case <-timeout.C:
			t.Fatalf("no log line matching %q:\n%s", pattern, l)
		}
	}
}

// load is a steady load of echo calls from a few goroutines, bounded in
// count and in time.
type load struct {
	ok, failed atomic.Int64
	stopc      chan struct{}
	stopOnce   sync.Once
	wg         sync.WaitGroup
	mu         sync.Mutex
	errs       []error
}

func startLoad(c *client.Client, workers, maxCalls int, maxTime time.Duration) *load {
	l := &load{stopc: make(chan struct{})}
	end := time.Now().Add(maxTime)
	for w := range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond) // pacing, ~500 calls/s per worker
			defer tick.Stop()
			body := []byte(fmt.Sprintf("worker %d", w))
			for range maxCalls / workers {
				select {
				case <-l.stopc:
					return
				case <-tick.C:
				}
				if time.Now().After(end) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := c.Call(ctx, "echo", body)
				cancel()
				if err == nil && string(resp) != string(body) {
					err = fmt.Errorf("echo answered %q to %q", resp, body)
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, err)
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

// waitCalls waits until n more calls have succeeded than at from.
func (l *load) waitCalls(t *testing.T, from, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for l.ok.Load() < from+n {
		if time.Now().After(deadline) {
			t.Fatalf("the load made %d calls, want %d more than %d (failed %d: %v)", l.ok.Load(), n, from, l.failed.Load(), l.errs)
		}
		<-tick.C
	}
}

func (l *load) stop() {
	l.stopOnce.Do(func() { close(l.stopc) })
	l.wg.Wait()
}

// TestServeUpgrade restarts `tcppro serve` three times in a row with
// SIGHUP under a steady load of calls: no call fails, no connect is
// refused, each upgrade hands over to a new process and the old ones exit.
func TestServeUpgrade(t *testing.T) {
	u := startUpgradable(t, os.Args[0], "--shutdown-timeout", "10s")
	c, err := client.New(client.Config{Addrs: []string{u.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := startLoad(c, 4, 40000, 60*time.Second)
	defer l.stop()
	l.waitCalls(t, 0, 200)

	pids := map[int]bool{u.last.p.Pid: true}
	for i := range 3 {
		pid := u.upgrade()
		if pids[pid] {
			t.Fatalf("upgrade %d: PID %d again", i+1, pid)
		}
		pids[pid] = true
		// Calls go on, served by the new process.
		l.waitCalls(t, l.ok.Load(), 200)
	}
	l.stop()
	st := c.Stats()
	t.Logf("%d calls ok, %d failed; client stats %+v", l.ok.Load(), l.failed.Load(), st)
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d calls failed across the upgrades, e.g. %v", n, l.errs)
	}
	if st.DialFailures != 0 {
		t.Errorf("client.Stats().DialFailures = %d, want 0: a connect was refused during an upgrade", st.DialFailures)
	}
	if st.GoAways < 3 {
		t.Errorf("client.Stats().GoAways = %d, want at least 3 (one per drained process)", st.GoAways)
	}
	u.stop()
}

// TestServeUpgradeFails replaces the executable with one that fails fast,
// then with one that never becomes ready: each upgrade fails, the old
// process logs why and keeps serving; a SIGHUP during an upgrade is
// refused. With the executable back, the upgrade succeeds.
func TestServeUpgradeFails(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "tcppro")
	install := func(write func(f *os.File) error) {
		t.Helper()
		tmp := exe + ".new"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(write(f), f.Close(), os.Rename(tmp, exe)); err != nil {
			t.Fatal(err)
		}
	}
	self := func(f *os.File) error {
		src, err := os.Open(os.Args[0])
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(f, src)
		return err
	}
	script := func(s string) func(*os.File) error {
		return func(f *os.File) error { _, err := f.WriteString("#!/bin/sh\n" + s + "\n"); return err }
	}
	install(self)
	u := startUpgradable(t, exe, "--upgrade-timeout", "2s", "--shutdown-timeout", "10s")
	first := u.last.p.Pid
	call := func() {
		t.Helper()
		if out, err := tcppro("call", "--addr", u.addr, "--timeout", "5s", "--quiet", "x").CombinedOutput(); err != nil {
			t.Fatalf("call after a failed upgrade: %v\n%s\n%s", err, out, u.logs)
		}
		u.waitReady()
	}

	// A new executable that exits at once.
	install(script("exit 3"))
	mark := u.logs.Len()
	u.last.p.Signal(syscall.SIGHUP)
	u.logs.wait(t, mark, `upgrade failed; this process keeps serving.*exit status 3`)
	call()

	// One that never becomes ready: killed after --upgrade-timeout. A
	// second SIGHUP meanwhile is refused.
	install(script("exec sleep 60"))
	mark = u.logs.Len()
	u.last.p.Signal(syscall.SIGHUP)
	u.logs.wait(t, mark, `upgrade: starting a new process`)
	u.last.p.Signal(syscall.SIGHUP)
	u.logs.wait(t, mark, `upgrade refused.*already in progress`)
	u.logs.wait(t, mark, `upgrade failed; this process keeps serving.*timed out`)
	call()
	if b, _ := os.ReadFile(u.pidFile); strings.TrimSpace(string(b)) != strconv.Itoa(first) {
		t.Fatalf("the PID file names %q after failed upgrades, want %d", b, first)
	}

	// The executable restored: the upgrade goes through.
	install(self)
	if pid := u.upgrade(); pid == first {
		t.Fatalf("the upgrade kept PID %d", pid)
	}
	call()
	u.stop()
}

// probes sends GET /readyz to an admin address from a few goroutines, on
// a new connection each time, until stopped (at most max each), and keeps
// the answers that are not 200.
type probes struct {
	stopc    chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	n        int
	replaced int // answered by a replaced process (for the new one)
	bad      []string
}

func startProbes(addr string, workers, max int) *probes {
	p := &probes{stopc: make(chan struct{})}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range workers {
		p.wg.Go(func() {
			for range max {
				select {
				case <-p.stopc:
					return
				default:
				}
				var code int
				var body string
				resp, err := hc.Get("http://" + addr + "/readyz")
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					code, body, err = resp.StatusCode, string(b), rerr
				}
				p.mu.Lock()
				p.n++
				switch {
				case err != nil:
					p.bad = append(p.bad, err.Error())
				case code != http.StatusOK:
					p.bad = append(p.bad, fmt.Sprintf("%d %q", code, body))
				case strings.Contains(body, "replaced"):
					p.replaced++
				}
				p.mu.Unlock()
			}
		})
	}
	return p
}

func (p *probes) stop() {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	p.wg.Wait()
}

// TestServeUpgradeAdminIsTheNewProcess: /readyz answers 200 throughout an
// upgrade — probes sent from before the SIGHUP until the replaced process
// has stopped accepting on the admin listener they share are all
// answered, and ready: by the old process while it serves, by the new one
// once it is ready, and by the old one, for the new one, on the
// connections it had accepted when it was replaced. From then on, while
// the replaced process drains (a call of 6 s holds it), every admin
// request reaches the new process: the old one's server is offline.
func TestServeUpgradeAdminIsTheNewProcess(t *testing.T) {
	u := startUpgradable(t, os.Args[0], "--shutdown-timeout", "10s")
	c, err := client.New(client.Config{Addrs: []string{u.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	callErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "sleep", []byte("6s"))
		callErr <- err
	}()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("http://" + u.admin + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The call holds a worker of the first process.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, m := get("/metrics"); strings.Contains(m, "\ntcppro_workers_busy 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sleep call never reached a worker")
		}
		time.Sleep(10 * time.Millisecond) // polling the metric
	}
	p := startProbes(u.admin, 2, 5000)
	defer p.stop()
	old, _, mark := u.handOver()
	// Logged once the old process has stopped accepting on the admin
	// listener.
	u.logs.wait(t, mark, `replaced by a new process \(upgrade\)`)
	p.stop()
	t.Logf("%d probes during the upgrade, %d answered by the replaced process", p.n, p.replaced)
	if len(p.bad) > 0 {
		t.Fatalf("%d of %d probes of /readyz during the upgrade were not answered 200, e.g. %q", len(p.bad), p.n, p.bad[:min(len(p.bad), 5)])
	}
	for i := range 50 {
		if code, body := get("/readyz"); code != http.StatusOK || body != "ready\n" {
			t.Fatalf("/readyz request %d during the old process's drain: %d %q, want 200 ready from the new process", i, code, body)
		}
	}
	select {
	case <-old.done:
		t.Fatal("the old process exited before the requests ended: the test saw no drain")
	default:
	}
	if err := <-callErr; err != nil {
		t.Fatalf("the call on the draining process: %v", err)
	}
	select {
	case <-old.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the replaced process did not exit after its last call")
	}
	u.stop()
}
