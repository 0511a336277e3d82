package verify

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcppro/tcppro/faultnet"
)

// serverSample is one reading of the soak's server process: from /proc
// (descriptors, memory, threads, CPU), from its admin plane (connections,
// goroutines, heap) and from its namespace's socket counters.
type serverSample struct {
	At int64 `json:"at"` // mono

	FDs     int     `json:"fds"`     // open descriptors (/proc/PID/fd)
	RSS     int64   `json:"rss"`     // VmRSS, bytes
	Threads int     `json:"threads"` // OS threads
	CPU     float64 `json:"cpu_s"`   // utime+stime so far, seconds
	// Waited is the time its threads have spent runnable but not running
	// so far (run_delay in /proc/PID/task/*/schedstat), seconds: how much
	// the machine kept it waiting for a CPU.
	Waited float64 `json:"waited_s"`

	Goroutines int   `json:"goroutines"` // go_goroutines
	HeapGoal   int64 `json:"heap_goal"`  // go_memstats_next_gc_bytes: twice the heap live after the last GC
	HeapInuse  int64 `json:"heap_inuse"` // go_memstats_heap_inuse_bytes
	// GCs is the collections so far (go_gc_duration_seconds_count).
	GCs uint64 `json:"gcs"`

	Conns     int64  `json:"conns"` // the server's open connections (/statusz)
	Accepted  uint64 `json:"accepted"`
	DeadPeers uint64 `json:"dead_peers"`
	Requests  uint64 `json:"requests"`
	Busy      uint64 `json:"rejected_busy"`
	InFlight  int64  `json:"in_flight"` // requests being processed

	// The TCP sockets of the server's namespace (/proc/net/sockstat):
	// in use, orphaned (closed by the process, still sending their FIN or
	// data), in TIME_WAIT.
	SockInuse int `json:"sock_inuse"`
	Orphans   int `json:"orphans"`
	TimeWait  int `json:"time_wait"`

	// Err says what could not be read (the other fields are then partly
	// zero).
	Err string `json:"err,omitempty"`
}

// sampler reads the server.
type sampler struct {
	pid   int
	host  *faultnet.Host
	admin string // the admin plane's address inside host
	hc    *http.Client
}

func newSampler(pid int, h *faultnet.Host, admin string) *sampler {
	return &sampler{pid: pid, host: h, admin: admin, hc: &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				return h.Dial(ctx, network, a)
			},
			MaxIdleConnsPerHost: 1,
		},
	}}
}

func (s *sampler) close() { s.hc.CloseIdleConnections() }

// sample reads everything; a part that cannot be read is named in Err.
func (s *sampler) sample(ctx context.Context) serverSample {
	p := serverSample{At: mono()}
	var errs []string
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, what+": "+err.Error())
		}
	}
	var err error
	p.FDs, err = countFDs(s.pid)
	note("fds", err)
	p.RSS, p.Threads, err = procStatus(s.pid)
	note("status", err)
	p.CPU, err = procCPUSeconds(s.pid)
	note("stat", err)
	p.Waited, err = procWaited(s.pid)
	note("schedstat", err)
	note("statusz", s.statusz(ctx, &p))
	note("metrics", s.metrics(ctx, &p))
	note("sockstat", s.sockstat(&p))
	p.Err = strings.Join(errs, "; ")
	return p
}

func (s *sampler) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", path, resp.Status)
	}
	return b, err
}

func (s *sampler) statusz(ctx context.Context, p *serverSample) error {
	b, err := s.get(ctx, "/statusz")
	if err != nil {
		return err
	}
	var st struct {
		Stats *struct {
			Open      int64  `json:"connections_open"`
			Accepted  uint64 `json:"connections_accepted"`
			DeadPeers uint64 `json:"dead_peers"`
			Requests  uint64 `json:"requests"`
			Busy      uint64 `json:"rejected_busy"`
			InFlight  int64  `json:"in_flight"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	if st.Stats == nil {
		return fmt.Errorf("no stats in /statusz")
	}
	p.Conns, p.Accepted, p.DeadPeers, p.Requests, p.Busy, p.InFlight = st.Stats.Open, st.Stats.Accepted, st.Stats.DeadPeers, st.Stats.Requests, st.Stats.Busy, st.Stats.InFlight
	return nil
}

func (s *sampler) metrics(ctx context.Context, p *serverSample) error {
	b, err := s.get(ctx, "/metrics")
	if err != nil {
		return err
	}
	m := parseMetrics(b, "go_goroutines", "go_memstats_next_gc_bytes", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds_count")
	g, ok := m["go_goroutines"]
	if !ok {
		return fmt.Errorf("no go_goroutines in /metrics")
	}
	p.Goroutines = int(g)
	p.HeapGoal = int64(m["go_memstats_next_gc_bytes"])
	p.HeapInuse = int64(m["go_memstats_heap_inuse_bytes"])
	p.GCs = uint64(m["go_gc_duration_seconds_count"])
	return nil
}

// parseMetrics returns the values of the named unlabelled metrics in a
// Prometheus text exposition.
func parseMetrics(b []byte, names ...string) map[string]float64 {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func (s *sampler) sockstat(p *serverSample) error {
	var b []byte
	if err := s.host.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/sockstat")
		return err
	}); err != nil {
		return err
	}
	p.SockInuse, p.Orphans, p.TimeWait = parseSockstat(b)
	return nil
}

// parseSockstat reads the TCP line of /proc/net/sockstat: "TCP: inuse N
// orphan N tw N alloc N mem N".
func parseSockstat(b []byte) (inuse, orphans, tw int) {
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			v, _ := strconv.Atoi(f[i+1])
			switch f[i] {
			case "inuse":
				inuse = v
			case "orphan":
				orphans = v
			case "tw":
				tw = v
			}
		}
	}
	return inuse, orphans, tw
}

// countFDs counts the open descriptors of process pid.
func countFDs(pid int) (int, error) {
	d, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(4096)
		n += len(names)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// procStatus reads VmRSS (bytes) and Threads from /proc/PID/status.
func procStatus(pid int) (rss int64, threads int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				rss = kb << 10
			}
		}
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return rss, threads, nil
}

// procCPUSeconds reads utime+stime of process pid, in seconds (at the
// USER_HZ of 100 that Linux exports on every architecture).
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(ut+st) / 100, nil
}

// procWaited sums the run_delay of process pid's threads (the second field
// of /proc/PID/task/TID/schedstat, nanoseconds), in seconds. Threads that
// have exited are not counted.
func procWaited(pid int) (float64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var ns uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // exited meanwhile
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9, nil
}
