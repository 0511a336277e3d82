package verify

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tcppro/tcppro/balancer"
	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/faultnet"
)

// proc is a process started inside a lab host.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *tailBuffer
	exited chan struct{} // closed when Wait has returned
	err    error         // Wait's result, once exited is closed
	copied chan struct{} // closed when stderr is copied to its end (nil: copied by exec)
}

// pid is the process's id: `ip netns exec` execs the program, so it is the
// program's.
func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitExit waits for the process to exit, up to limit.
func (p *proc) waitExit(limit time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running after %v", p.name, p.pid(), limit)
	}
}

// kill kills the process if it still runs and waits for it, and for the
// end of its standard error (where the last race report would be).
func (p *proc) kill() {
	if !p.hasExited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	_ = p.waitExit(5 * time.Second)
	if p.copied != nil {
		select {
		case <-p.copied:
		case <-time.After(2 * time.Second): // a descendant still holds the pipe
		}
	}
}

// startProc starts the tcppro program with args inside h (through
// Options.Command), its standard error kept for diagnostics. The process is
// killed when the scenario ends, and when the run's context is cancelled.
func (e *Env) startProc(h *faultnet.Host, name string, stdin bool, args ...string) (*proc, io.WriteCloser, io.ReadCloser, error) {
	cmd := e.opts.Command(e.ctx, h, args...)
	cmd.WaitDelay = 2 * time.Second
	p := &proc{name: name, cmd: cmd, stderr: &tailBuffer{max: 8 << 10}, exited: make(chan struct{}), copied: make(chan struct{})}
	// Standard error through a pipe of our own, copied by a goroutine of
	// our own: a server's upgrade (SIGHUP) leaves a new process holding
	// the pipe, and Wait must return at this process's exit, not wait
	// WaitDelay for the pipe to close and then close it under the new
	// process (whose next write to it would kill it with SIGPIPE).
	er, ew, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd.Stderr = ew
	go func() {
		defer close(p.copied)
		defer er.Close()
		_, _ = io.Copy(p.stderr, er)
	}()
	var in io.WriteCloser
	var out, pw *os.File
	if stdin {
		if in, err = cmd.StdinPipe(); err != nil {
			ew.Close()
			return nil, nil, nil, err
		}
		// A pipe of our own rather than StdoutPipe: Wait does not close
		// it under the reader, which reads to the end.
		if out, pw, err = os.Pipe(); err != nil {
			ew.Close()
			return nil, nil, nil, err
		}
		cmd.Stdout = pw
	}
	err = cmd.Start()
	ew.Close()
	if pw != nil {
		pw.Close()
	}
	if err != nil {
		if out != nil {
			out.Close()
		}
		return nil, nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		p.err = err
		close(p.exited)
	}()
	e.onClose(p.kill)
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	if out == nil {
		return p, in, nil, nil
	}
	return p, in, out, nil
}

// startAgent starts a client agent inside h.
func (e *Env) startAgent(h *faultnet.Host) (*agent, error) {
	args := AgentArgs
	if f := e.opts.TLS; f != nil {
		args = append(append([]string{}, AgentArgs...), "--tls-ca", f.CA, "--tls-server-name", TLSServerName)
	}
	p, in, out, err := e.startProc(h, "agent on "+h.Name(), true, args...)
	if err != nil {
		return nil, err
	}
	a := &agent{
		name:    h.Name(),
		proc:    p,
		stdin:   in,
		stderr:  p.stderr,
		enc:     json.NewEncoder(in),
		pending: make(map[int64]chan agentResp),
		done:    make(chan struct{}),
	}
	go func() {
		a.read(out)
		out.Close()
	}()
	// Registered after startProc's kill, so it runs first: the agent gets
	// the end of its input and closes its clients before anything is
	// killed.
	e.onClose(func() {
		a.encMu.Lock()
		_ = in.Close()
		a.encMu.Unlock()
		if err := p.waitExit(5 * time.Second); err != nil && !p.hasExited() {
			e.logf("agent on %s did not exit on the end of its input: %v", h.Name(), err)
			p.kill()
		}
		<-a.done
	})
	return a, nil
}

// serverProc is a tcppro server process inside a lab host.
type serverProc struct {
	*proc
	host *faultnet.Host
	addr netip.AddrPort
	args []string
}

// serverArgs are the flags every server process gets: the scenarios'
// heartbeat configuration, quiet logs, and in a TLS run the certificate.
func (e *Env) serverArgs(addr netip.AddrPort, extra ...string) []string {
	args := []string{"serve",
		"--listen", addr.String(),
		"--heartbeat-interval", hbInterval.String(),
		"--heartbeat-timeout", hbTimeout.String(),
		"--log-level", "warn",
	}
	if f := e.opts.TLS; f != nil {
		args = append(args, "--tls-cert", f.Cert, "--tls-key", f.Key)
	}
	return append(args, extra...)
}

// startServer starts a tcppro server process listening on addr inside h,
// and waits until it accepts connections.
func (e *Env) startServer(ctx context.Context, h *faultnet.Host, addr netip.AddrPort, extra ...string) (*serverProc, error) {
	args := e.serverArgs(addr, extra...)
	p, _, _, err := e.startProc(h, "server on "+h.Name(), false, args...)
	if err != nil {
		return nil, err
	}
	s := &serverProc{proc: p, host: h, addr: addr, args: args}
	if err := s.waitReady(ctx, 10*time.Second); err != nil {
		s.kill()
		return nil, err
	}
	return s, nil
}

// waitReady polls a connect to the server, from its own host, until one
// succeeds, the process exits, or limit passes.
func (s *serverProc) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		c, err := s.host.Dial(dctx, "tcp", s.addr.String())
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if s.hasExited() {
			return fmt.Errorf("%s exited before accepting connections (%v)%s", s.name, s.err, s.stderr.suffix())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections on %v after %v: %v%s", s.name, s.addr, limit, err, s.stderr.suffix())
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// tailBuffer keeps the last max bytes written to it, and remembers the
// first report of a data race (from a -race build) or a panic.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	b       []byte
	scanned int    // bytes of b already scanned for reports
	report  string // the first report seen, from its start
}

// reportMarkers start the reports a child must never print.
var reportMarkers = []string{"WARNING: DATA RACE", "panic: ", "fatal error: "}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if t.report == "" {
		// Rescan a little before the new bytes: a marker may straddle
		// two writes.
		from := max(t.scanned-32, 0)
		for _, m := range reportMarkers {
			if i := strings.Index(string(t.b[from:]), m); i >= 0 {
				t.report = string(t.b[from+i:])
				break
			}
		}
	} else if len(t.report) < t.max {
		t.report += string(p[:min(len(p), t.max-len(t.report))])
	}
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	t.scanned = len(t.b)
	return len(p), nil
}

// problem returns the first data race or panic report, or "".
func (t *tailBuffer) problem() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.report
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// suffix is ": <stderr>" for an error message, or "".
func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(t.String())
	if s == "" {
		return ""
	}
	return "; its stderr: " + s
}

// agent is the parent's handle on an agent process.
type agent struct {
	name   string
	proc   *proc
	stdin  io.WriteCloser
	stderr *tailBuffer

	encMu sync.Mutex
	enc   *json.Encoder

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan agentResp
	dead    error         // set when the agent's output ended
	done    chan struct{} // closed then
}

// do sends a request and waits for its answer, ctx's end, or the agent's.
func (a *agent) do(ctx context.Context, req agentReq) (agentResp, error) {
	ch := make(chan agentResp, 1)
	a.mu.Lock()
	if a.dead != nil {
		a.mu.Unlock()
		return agentResp{}, a.dead
	}
	a.nextID++
	req.ID = a.nextID
	a.pending[req.ID] = ch
	a.mu.Unlock()
	a.encMu.Lock()
	err := a.enc.Encode(req)
	a.encMu.Unlock()
	if err != nil {
		return agentResp{}, fmt.Errorf("agent %s: sending %s: %w%s", a.name, req.Op, err, a.stderr.suffix())
	}
	select {
	case r := <-ch:
		if r.Err != "" {
			return r, fmt.Errorf("agent %s: %s: %s", a.name, req.Op, r.Err)
		}
		return r, nil
	case <-a.done:
		return agentResp{}, fmt.Errorf("agent %s: %s: %w", a.name, req.Op, a.dead)
	case <-ctx.Done():
		a.mu.Lock()
		delete(a.pending, req.ID)
		a.mu.Unlock()
		return agentResp{}, ctx.Err()
	}
}

func (a *agent) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var resp agentResp
		if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
			continue
		}
		a.mu.Lock()
		ch := a.pending[resp.ID]
		delete(a.pending, resp.ID)
		a.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
	a.mu.Lock()
	a.dead = fmt.Errorf("agent ended%s", a.stderr.suffix())
	a.mu.Unlock()
	close(a.done)
}

// newClient creates a client with the scenarios' heartbeat settings (the
// rest are the client's defaults) that connects to addrs.
func (a *agent) newClient(ctx context.Context, name string, addrs []string) (int64, error) {
	return a.newClientSpec(ctx, name, clientSpec{Addrs: addrs})
}

// clientSpec is what a scenario sets of a client's configuration beyond
// the heartbeat settings; zero fields are the client's defaults.
type clientSpec struct {
	Addrs       []string
	Target      string        // instead of Addrs
	Refresh     time.Duration // the Target's refresh interval
	Policy      balancer.Policy
	Subset      int
	SubsetID    int
	DialTimeout time.Duration
}

// newClientSpec creates a client with the scenarios' heartbeat settings
// and spec, and returns when it was created.
func (a *agent) newClientSpec(ctx context.Context, name string, spec clientSpec) (int64, error) {
	r, err := a.do(ctx, agentReq{Op: "new", Client: name, Addrs: spec.Addrs, Target: spec.Target, Refresh: spec.Refresh,
		Balancer: string(spec.Policy), Subset: spec.Subset, SubsetID: spec.SubsetID, DialTimeout: spec.DialTimeout,
		HeartbeatInterval: hbInterval, HeartbeatTimeout: hbTimeout})
	return r.Mono, err
}

// endpoints returns the client's servers and when they were read.
func (a *agent) endpoints(ctx context.Context, name string) ([]endpointState, int64, error) {
	r, err := a.do(ctx, agentReq{Op: "endpoints", Client: name})
	return r.Endpoints, r.Mono, err
}

func (a *agent) call(ctx context.Context, name, method, body string, timeout time.Duration) (*callResult, error) {
	r, err := a.do(ctx, agentReq{Op: "call", Client: name, Method: method, Body: body, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	return r.Call, nil
}

// callOK makes an echo call that must succeed (the connection is up).
func (a *agent) callOK(ctx context.Context, name string) error {
	r, err := a.call(ctx, name, "echo", "ping", 5*time.Second)
	if err != nil {
		return err
	}
	if !r.ok() {
		return fmt.Errorf("client %s: echo failed: %s", name, r.Err)
	}
	return nil
}

func (a *agent) stats(ctx context.Context, name string) (client.Stats, error) {
	r, err := a.do(ctx, agentReq{Op: "stats", Client: name})
	if err != nil {
		return client.Stats{}, err
	}
	return *r.Stats, nil
}
