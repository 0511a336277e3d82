package bufpool

import "testing"

func TestGetPut(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 64 << 10, 1<<24 + 1} {
		p := Get(n)
		if len(*p) != n {
			t.Fatalf("Get(%d): length %d", n, len(*p))
		}
		if n <= 1<<24 {
			if c := cap(*p); c&(c-1) != 0 || c < 512 || c < n {
				t.Fatalf("Get(%d): capacity %d, want a power of two ≥ max(512, n)", n, c)
			}
		}
		Put(p)
	}
	Put(nil)
	odd := make([]byte, 100, 1000)
	Put(&odd) // not a size class: dropped, no panic
}
