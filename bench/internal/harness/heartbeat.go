package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ---- holders spread over processes ----

// holderGroup is the holder children of one measurement: n connections
// spread over ceil(n/cfg.HolderConns) processes (each under the open-file
// limit), connected in turn.
type holderGroup struct {
	kids []*child
	n    int
}

func startHolders(ctx context.Context, cfg *Config, kind, addr string, n int, lifetime time.Duration) (*holderGroup, error) {
	g := &holderGroup{n: n}
	per := max(cfg.HolderConns, 1)
	for i := 0; i < n; i += per {
		k := min(per, n-i)
		name := fmt.Sprintf("%s holder %d", kind, len(g.kids)+1)
		c, err := startChild(ctx, name, childSpec{Role: "holder", Kind: kind, Addr: addr, Conns: k, Lifetime: lifetime})
		if err != nil {
			g.stop()
			return nil, err
		}
		g.kids = append(g.kids, c)
		if _, err := c.expect(ctx, "connected ", 3*time.Minute); err != nil {
			g.stop()
			return nil, err
		}
	}
	return g, nil
}

func (g *holderGroup) stop() {
	var wg sync.WaitGroup
	for _, c := range g.kids {
		wg.Go(func() { c.stop(5 * time.Second) })
	}
	wg.Wait()
}

// requestAll makes one request on every held connection, all holders at
// once, and returns the first error of any.
func (g *holderGroup) requestAll(ctx context.Context) error {
	var (
		mu             sync.Mutex
		ok, failed     int
		first, callErr string
		wg             sync.WaitGroup
	)
	for _, c := range g.kids {
		wg.Go(func() {
			line, err := c.call(ctx, "request", "requested ", 3*time.Minute)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if callErr == "" {
					callErr = err.Error()
				}
				return
			}
			parts := strings.SplitN(line, " ", 3)
			if len(parts) >= 2 {
				a, _ := strconv.Atoi(parts[0])
				b, _ := strconv.Atoi(parts[1])
				ok += a
				failed += b
			}
			if len(parts) == 3 && first == "" {
				first = parts[2]
			}
		})
	}
	wg.Wait()
	if callErr != "" {
		return fmt.Errorf("%s", callErr)
	}
	if ok != g.n {
		return fmt.Errorf("one request per connection: %d ok, %d failed (%s)", ok, failed, first)
	}
	return nil
}

// alive is the number of held connections the server has not closed.
func (g *holderGroup) alive(ctx context.Context) (int, error) {
	n := 0
	for _, c := range g.kids {
		line, err := c.call(ctx, "alive", "alive ", time.Minute)
		if err != nil {
			return 0, err
		}
		k, _ := strconv.Atoi(line)
		n += k
	}
	return n, nil
}

// cpu is the holders' CPU time so far (utime+stime, seconds).
func (g *holderGroup) cpu() (float64, error) {
	var sum float64
	for _, c := range g.kids {
		v, err := procCPU(c.pid())
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// waitAccepted waits (a minute at most) until the server holds n more
// descriptors than base: one per accepted connection, whatever its
// implementation.
func waitAccepted(ctx context.Context, srv *serverProc, base, n int) error {
	for deadline := time.Now().Add(time.Minute); ; {
		fds, err := procFDs(srv.pid())
		if err != nil {
			return err
		}
		if fds >= base+n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server accepted only %d of %d connections", fds-base, n)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// ---- heartbeat CPU at many idle connections (hb-N) ----

// hbSample is one heartbeat-CPU measurement of one side.
type hbSample struct {
	Conns     int     `json:"conns"`
	Heartbeat bool    `json:"heartbeats_on"`
	Interval  float64 `json:"heartbeat_interval_s,omitempty"`
	Window    float64 `json:"window_s"`
	CPU       float64 `json:"server_cpu_s"`
	// Cores is the server's CPU seconds per second over the window.
	Cores float64 `json:"server_cpu_cores"`
	// SysPerConnS is the server's read+write syscalls per connection per
	// second: about 2 (one PING written, one PONG read) when every
	// connection is heartbeated once per second.
	SysPerConnS float64 `json:"server_read_write_syscalls_per_conn_s"`
	HolderCPU   float64 `json:"holder_cpu_s"`
	HolderCores float64 `json:"holder_cpu_cores"`
	Holders     int     `json:"holders"`
	Alive       int     `json:"conns_alive_at_end"`
}

// measureHeartbeat holds cfg.HBConns idle connections to a fresh server
// whose heartbeat runs every cfg.HBInterval (tcppro: the server PINGs, the
// holder answers; grpc: server keepalive, the server PINGs, the client's
// transport acks; raw and gnet have none) and reads the server's CPU over
// cfg.HBWindow, cfg.HBSettle after every connection is up.
func measureHeartbeat(ctx context.Context, cfg *Config, kind string) (hbSample, error) {
	n := cfg.HBConns
	s := hbSample{Conns: n, Heartbeat: hasHeartbeat(kind)}
	if s.Heartbeat {
		s.Interval = cfg.HBInterval.Seconds()
	}
	lifetime := 10*time.Minute + cfg.HBSettle + cfg.HBWindow
	srv, err := startServerChild(ctx, cfg, kind, n+100, lifetime, func(spec *childSpec) {
		spec.Heartbeat = cfg.HBInterval
	})
	if err != nil {
		return s, err
	}
	defer srv.stop(5 * time.Second)
	base, err := procFDs(srv.pid())
	if err != nil {
		return s, err
	}
	h, err := startHolders(ctx, cfg, kind, srv.addr, n, lifetime)
	if err != nil {
		return s, err
	}
	defer h.stop()
	s.Holders = len(h.kids)
	if err := waitAccepted(ctx, srv, base, n); err != nil {
		return s, err
	}
	if err := srv.settle(ctx, cfg.HBSettle); err != nil {
		return s, err
	}
	if cfg.CPUProfileDir != "" {
		prof := filepath.Join(cfg.CPUProfileDir, fmt.Sprintf("hb-%d-%s.pprof", n, kind))
		if _, err := srv.call(ctx, "prof-start "+prof, "ok", 10*time.Second); err != nil {
			return s, err
		}
		defer srv.call(ctx, "prof-stop", "ok", 10*time.Second)
	}
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		return s, err
	}
	r0, w0, err := procSyscalls(srv.pid())
	if err != nil {
		return s, err
	}
	hcpu0, err := h.cpu()
	if err != nil {
		return s, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, cfg.HBWindow); err != nil {
		return s, err
	}
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		return s, err
	}
	r1, w1, err := procSyscalls(srv.pid())
	if err != nil {
		return s, err
	}
	hcpu1, err := h.cpu()
	if err != nil {
		return s, err
	}
	t1 := time.Now()
	if s.Alive, err = h.alive(ctx); err != nil {
		return s, err
	}
	if s.Alive != n {
		return s, fmt.Errorf("only %d of %d held connections still open at the end", s.Alive, n)
	}
	s.Window = t1.Sub(t0).Seconds()
	s.CPU = cpu1 - cpu0
	s.Cores = s.CPU / s.Window
	s.SysPerConnS = float64(r1-r0+w1-w0) / float64(n) / s.Window
	s.HolderCPU = hcpu1 - hcpu0
	s.HolderCores = s.HolderCPU / s.Window
	return s, nil
}
