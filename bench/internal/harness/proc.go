package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Child processes: the servers and the connection holders run as separate
// processes so that their CPU time and memory are measured alone. A child is
// this same executable re-exec'd with the role in the environment (ChildEnv);
// it talks to the parent through line commands on stdin and line replies on
// stdout, and it exits on its own when its stdin reaches EOF (parent gone) or
// its lifetime runs out, so nothing can outlive the harness.

// ChildEnv names the environment variable that turns this executable into a
// child; its value is the JSON childSpec.
const ChildEnv = "TCPPROBENCH_CHILD"

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is 100
// on every Linux architecture Go supports (it is ABI, unlike CONFIG_HZ).
const clockTicks = 100

type childSpec struct {
	Role     string `json:"role"` // "server" or "holder"
	Kind     string `json:"kind"` // a side: raw, tcppro, tcppro-netconn, grpc, gnet
	Addr     string `json:"addr,omitempty"`
	Conns    int    `json:"conns,omitempty"`
	MaxConns int    `json:"max_conns,omitempty"`
	// InFlight is the most calls the load keeps in flight at once: a
	// tcppro server gets at least that many workers (server.Config.Workers).
	InFlight int    `json:"in_flight,omitempty"`
	BufWrite bool   `json:"buf_write,omitempty"`
	Handler  string `json:"handler,omitempty"` // tcppro server: "" (echo) or "sleep" (sleep and echo)
	TLSDir   string `json:"tls_dir,omitempty"` // server: serve TLS with the certificate there
	// Heartbeat, when set, is the server's heartbeat interval: tcppro's
	// Session.HeartbeatInterval, grpc's keepalive ServerParameters.Time.
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
	Lifetime  time.Duration `json:"lifetime"`
}

type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout lines; closed at EOF
	done  chan struct{}
	once  sync.Once
}

var (
	childrenMu sync.Mutex
	children   = map[*child]struct{}{}
)

// startChild starts this executable as a child with the given spec.
func startChild(ctx context.Context, name string, spec childSpec) (*child, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(b))
	// A -race build (the CI smoke test) sleeps 1 s at exit by default; the
	// children's exits are on the harness's critical path.
	if gr := os.Getenv("GORACE"); !strings.Contains(gr, "atexit_sleep_ms") {
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(gr+" atexit_sleep_ms=0"))
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 64), done: make(chan struct{})}
	childrenMu.Lock()
	defer childrenMu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	children[c] = struct{}{}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) send(line string) error {
	_, err := io.WriteString(c.stdin, line+"\n")
	if err != nil {
		return fmt.Errorf("%s: send %q: %w", c.name, line, err)
	}
	return nil
}

// expect waits for the next reply line starting with prefix (other lines are
// skipped) and returns the rest of it. A line starting with "error " fails.
func (c *child) expect(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s exited while waiting for %q", c.name, prefix)
			}
			if rest, ok := strings.CutPrefix(line, "error "); ok {
				return "", fmt.Errorf("%s: %s", c.name, rest)
			}
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return strings.TrimSpace(rest), nil
			}
		case <-t.C:
			return "", fmt.Errorf("%s: no %q reply within %v", c.name, prefix, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// call sends a command and waits for its reply.
func (c *child) call(ctx context.Context, cmd, prefix string, timeout time.Duration) (string, error) {
	if err := c.send(cmd); err != nil {
		return "", err
	}
	return c.expect(ctx, prefix, timeout)
}

// stop asks the child to quit, then kills it if it has not exited within
// grace, and always reaps it. Safe to call more than once and concurrently.
func (c *child) stop(grace time.Duration) {
	c.once.Do(func() {
		_ = c.send("quit")
		_ = c.stdin.Close()
		waited := make(chan struct{})
		go func() {
			_ = c.cmd.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
			<-waited
		}
		// Drain so the stdout reader goroutine can finish.
		for range c.lines {
		}
		childrenMu.Lock()
		delete(children, c)
		childrenMu.Unlock()
		close(c.done)
	})
	<-c.done
}

// killAll kills and reaps every child still running. Used on every exit path
// of the parent, including signals.
func killAll() {
	childrenMu.Lock()
	list := make([]*child, 0, len(children))
	for c := range children {
		list = append(list, c)
	}
	childrenMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(0)
		}()
	}
	wg.Wait()
}

// liveChildren reports how many children the harness still owns (tests).
func liveChildren() int {
	childrenMu.Lock()
	defer childrenMu.Unlock()
	return len(children)
}

// procCPU returns utime+stime of the whole process (all threads) in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSS returns VmRSS of the process in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// procFDs counts the open file descriptors of the process; the server's count
// rises by one per accepted connection whatever its implementation.
func procFDs(pid int) (int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}

// procSyscalls returns the read and write system calls the process has made
// (syscr, syscw in /proc/PID/io).
func procSyscalls(pid int) (reads, writes uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch k {
		case "syscr":
			reads, err = strconv.ParseUint(v, 10, 64)
		case "syscw":
			writes, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return 0, 0, err
		}
	}
	return reads, writes, nil
}

// hostCPUPressure returns the "some" total of /proc/pressure/cpu: the time,
// in microseconds since boot, during which at least one task of the host was
// runnable but waiting for a CPU; -1 when PSI is not available.
func hostCPUPressure() int64 {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return -1
				}
				return n
			}
		}
	}
	return -1
}

// pressurePct turns two hostCPUPressure readings taken window apart into
// the share of the window under CPU pressure, in percent (-1: unknown).
func pressurePct(a, b int64, window time.Duration) float64 {
	if a < 0 || b < a || window <= 0 {
		return -1
	}
	return float64(b-a) / float64(window.Microseconds()) * 100
}
