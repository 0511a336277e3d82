package client_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
)

// cpuTime is the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFleet compares what balancing costs: 40 callers with one call
// in flight each over 20 servers (all in this process), either through 20
// clients of one server each (clients=20, endpoints=1: no choice to make)
// or through one client over the 20 (clients=1, endpoints=20: every call
// picked by the balancer). Both have 20 connections carrying the same
// calls; cpu-ns/op is the process's CPU per call, servers included.
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("clients=%d,endpoints=%d", 20/n, n), func(b *testing.B) {
			var addrs []string
			for range 20 {
				ln := listenLoopback(b, "")
				addrs = append(addrs, ln.Addr().String())
				srv, err := server.New(server.Config{Logger: quiet}, echo)
				if err != nil {
					b.Fatal(err)
				}
				done := make(chan struct{})
				go func() { srv.Serve(ln); close(done) }()
				b.Cleanup(func() { srv.Close(); <-done })
			}
			var clients []*client.Client
			for k := 0; k < 20; k += n {
				c, err := client.New(client.Config{Addrs: addrs[k : k+n], Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				clients = append(clients, c)
			}
			body := make([]byte, 64)
			for _, c := range clients {
				for i := 0; readyCount(c) < n; i++ {
					if _, err := c.Call(context.Background(), "echo", body); err != nil || i > 1e5 {
						b.Fatal("servers not ready", err)
					}
				}
			}
			const callers = 40
			b.ResetTimer()
			cpu0 := cpuTime(b)
			var wg sync.WaitGroup
			per := b.N/callers + 1
			for k := range callers {
				c := clients[k%len(clients)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					var resp []byte
					for range per {
						var err error
						if resp, err = c.CallAppend(context.Background(), "echo", body, resp[:0]); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(per*callers), "cpu-ns/op")
		})
	}
}
