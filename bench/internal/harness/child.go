package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// IsChild reports whether this process was started by the harness as a child.
func IsChild() bool { return os.Getenv(ChildEnv) != "" }

// ChildMain runs the child role described by the environment and returns the
// exit status. Call it first thing from main (or TestMain) when IsChild.
func ChildMain() int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(ChildEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "tcpprobench child: bad spec:", err)
		return 2
	}
	// Ctrl-C reaches the whole process group; the parent handles it and stops
	// us itself, so that it can reap us in order.
	signal.Ignore(os.Interrupt)
	if spec.Lifetime <= 0 {
		spec.Lifetime = 30 * time.Minute
	}
	// Backstop: a child never outlives its lifetime, even if the parent is
	// stuck rather than gone.
	time.AfterFunc(spec.Lifetime, func() {
		fmt.Fprintf(os.Stderr, "tcpprobench %s/%s: lifetime %v exceeded, exiting\n", spec.Role, spec.Kind, spec.Lifetime)
		os.Exit(3)
	})
	out := &replier{w: bufio.NewWriter(os.Stdout)}
	var err error
	switch spec.Role {
	case "server":
		err = serverChild(spec, out)
	case "holder":
		err = holderChild(spec, out)
	default:
		err = fmt.Errorf("unknown role %q", spec.Role)
	}
	if err != nil {
		out.printf("error %v", err)
		fmt.Fprintf(os.Stderr, "tcpprobench %s/%s: %v\n", spec.Role, spec.Kind, err)
		return 1
	}
	return 0
}

type replier struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (r *replier) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, format+"\n", args...)
	r.w.Flush()
}

// commands yields stdin lines until EOF or "quit".
func commands(yield func(cmd string, args []string) bool) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" || !yield(f[0], f[1:]) {
			return
		}
	}
}

// serverStats is what a server child reports about itself.
type serverStats struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	// HeapIdle-HeapReleased: freed heap pages still resident (counted in
	// RSS until the scavenger returns them).
	HeapFreeResident uint64 `json:"heap_free_resident"`
	Goroutines       int    `json:"goroutines"`
	GCs              uint32 `json:"gcs"`
}

// readServerStats reports the runtime's view of this process. mode "gc" runs
// a GC first; "free" runs debug.FreeOSMemory (a GC that also returns every
// free page to the OS).
func readServerStats(mode string) serverStats {
	switch mode {
	case "gc":
		runtime.GC()
	case "free":
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return serverStats{
		HeapInuse:        ms.HeapInuse,
		StackInuse:       ms.StackInuse,
		HeapAlloc:        ms.HeapAlloc,
		HeapFreeResident: ms.HeapIdle - ms.HeapReleased,
		Goroutines:       runtime.NumGoroutine(),
		GCs:              ms.NumGC,
	}
}

// serverChild listens on loopback, serves the given kind, and answers:
//
//	stats [gc|free]   → "stats {json}"   (a GC first; free: FreeOSMemory)
//	prof-start PATH   → "ok"             (CPU profile of this process)
//	prof-stop         → "ok"
//	heap-profile PATH → "ok"             (heap profile after a GC)
//	quit / EOF        → shut down and exit
func serverChild(spec childSpec, out *replier) error {
	addr, stop, err := startServer(spec)
	if err != nil {
		return err
	}
	out.printf("listen %s", addr)
	var prof *os.File
	for cmd, args := range commands {
		switch cmd {
		case "stats":
			mode := ""
			if len(args) > 0 {
				mode = args[0]
			}
			b, _ := json.Marshal(readServerStats(mode))
			out.printf("stats %s", b)
		case "prof-start":
			if prof != nil || len(args) != 1 {
				out.printf("error bad prof-start")
				continue
			}
			f, err := os.Create(args[0])
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				out.printf("error %v", err)
				continue
			}
			prof = f
			out.printf("ok")
		case "heap-profile":
			if len(args) != 1 {
				out.printf("error bad heap-profile")
				continue
			}
			runtime.GC()
			f, err := os.Create(args[0])
			if err == nil {
				err = pprof.WriteHeapProfile(f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				out.printf("error %v", err)
				continue
			}
			out.printf("ok")
		case "prof-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
				prof = nil
			}
			out.printf("ok")
		default:
			out.printf("error unknown command %q", cmd)
		}
	}
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	stop()
	return nil
}

// startServer starts a server of spec.Kind on 127.0.0.1 (an ephemeral
// port) and returns its address.
func startServer(spec childSpec) (addr net.Addr, stop func(), err error) {
	if spec.Kind == kindGnet {
		if spec.TLSDir != "" {
			return nil, nil, fmt.Errorf("gnet: no TLS")
		}
		return startGnetServer()
	}
	var conf *tls.Config
	if spec.TLSDir != "" {
		if conf, err = serverTLSConfig(spec.TLSDir); err != nil {
			return nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	switch spec.Kind {
	case kindRaw:
		if conf != nil {
			ln = tls.NewListener(ln, conf)
		}
		stop = startRawServer(ln, spec.BufWrite)
	case kindTcppro, kindTcpproNetConn:
		stop, err = startTcpproServer(ln, spec.MaxConns, spec.InFlight, spec.Handler, conf, spec.Heartbeat, tcpproTransport(spec.Kind, conf != nil))
	case kindGrpc:
		stop = startGrpcServer(ln, conf, spec.Heartbeat)
	default:
		err = fmt.Errorf("unknown kind %q", spec.Kind)
	}
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln.Addr(), stop, nil
}

// holderChild dials spec.Conns connections to spec.Addr and holds them, then
// answers:
//
//	request  → "requested OK FAILED [first error]"  (one request on every conn)
//	alive    → "alive N"                           (conns not closed by the peer)
//	quit/EOF → exit (the kernel closes the connections)
func holderChild(spec childSpec, out *replier) error {
	var h holder
	switch spec.Kind {
	case kindRaw, kindGnet:
		h = &rawHolder{}
	case kindTcppro, kindTcpproNetConn: // a frame-level peer: no transport of its own
		h = newTcpproHolder()
	case kindGrpc:
		h = &grpcHolder{}
	default:
		return fmt.Errorf("unknown kind %q", spec.Kind)
	}
	if err := dialAll(spec.Addr, spec.Conns, h.add); err != nil {
		return err
	}
	out.printf("connected %d", spec.Conns)
	for cmd := range commands {
		switch cmd {
		case "request":
			ok, failed, first := h.requestAll()
			out.printf("requested %d %d %s", ok, failed, first)
		case "alive":
			out.printf("alive %d", h.alive())
		default:
			out.printf("error unknown command %q", cmd)
		}
	}
	return nil
}

// holder keeps many connections open with as little work as its protocol
// allows.
type holder interface {
	add(c net.Conn, i int) error
	requestAll() (ok, failed int, firstErr string)
	alive() int
}

// dialAll dials n connections with bounded concurrency, each with a timeout,
// retrying transient failures (a full accept queue) a few times.
func dialAll(addr string, n int, add func(net.Conn, int) error) error {
	const workers = 64
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	d := net.Dialer{Timeout: 5 * time.Second}
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var c net.Conn
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					c, err = d.Dial("tcp", addr)
					if err == nil {
						break
					}
					time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
				}
				if err == nil {
					err = add(c, i)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("conn %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return firstErr
}

// forEachLimited runs f(i) for i in [0,n) on at most limit goroutines.
func forEachLimited(n, limit int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(limit, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
