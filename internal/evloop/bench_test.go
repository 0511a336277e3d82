//go:build linux

package evloop

import (
	"sync/atomic"
	"testing"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
)

// BenchmarkEcho is request/response throughput over loopback: 4
// connections, callers in parallel (b.RunParallel: GOMAXPROCS×4), 128-byte
// echoes, server and client both on evloop or both on netconn.
func BenchmarkEcho(b *testing.B) {
	for _, kind := range []string{"netconn", "evloop"} {
		b.Run(kind, func(b *testing.B) {
			var l *Loops
			if kind == "evloop" {
				var err error
				if l, err = NewLoops(0); err != nil {
					b.Fatal(err)
				}
				defer l.Close()
			}
			var clis []*conntest.Endpoint
			for range 4 {
				nc, ns := conntest.TCPPair(b, 0)
				if kind == "evloop" {
					startEv(b, l, ns, core.Server, session.Config{}, nil)
					clis = append(clis, startEv(b, l, nc, core.Client, session.Config{}, nil))
				} else {
					startNet(b, ns, core.Server, session.Config{}, nil)
					clis = append(clis, startNet(b, nc, core.Client, session.Config{}, nil))
				}
			}
			for _, c := range clis {
				<-c.Sink.ReadyCh
			}
			body := make([]byte, 128)
			var next atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := clis[next.Add(1)%int64(len(clis))]
				done := make(chan conntest.Result, 1)
				for pb.Next() {
					cl := &core.Call{Method: "echo", Body: body, Owner: done}
					if err := c.Call(cl); err != nil {
						b.Error(err)
						return
					}
					if r := <-done; r.Err != nil {
						b.Error(r.Err)
						return
					}
				}
			})
			b.StopTimer()
		})
	}
}
