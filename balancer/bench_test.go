package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPick is the balancer's cost per call (Pick, Start, Done) over 1,
// 20 and 1000 endpoints: it does not grow with the endpoints.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{1, 20, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			bal := New[int](Config{Logger: quiet}, nil)
			for i := range n {
				bal.SetReady(bal.Add(fmt.Sprintf("10.0.%d.%d:7420", i/250, i%250), i), true)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e := bal.Pick(nil, always)
					bal.Done(e, bal.Start(e), Answered)
				}
			})
		})
	}
}
