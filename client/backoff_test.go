package client

import (
	"testing"
	"time"
)

// TestBackoffFullJitter checks the formula and the distribution: delay n is
// uniform in [0, min(Max, Base·2^n)), the first retry included.
func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	wantCeil := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for n, wc := range wantCeil {
		ceil := b.Ceiling(n)
		if ceil != wc*time.Millisecond {
			t.Fatalf("Ceiling(%d) = %v, want %v", n, ceil, wc*time.Millisecond)
		}
		const samples = 20000
		var sum float64
		var buckets [4]int
		for i := 0; i < samples; i++ {
			d := b.Delay(n)
			if d < 0 || d >= ceil {
				t.Fatalf("Delay(%d) = %v outside [0, %v)", n, d, ceil)
			}
			sum += float64(d)
			buckets[int(4*float64(d)/float64(ceil))]++
		}
		mean := sum / samples / float64(ceil)
		if mean < 0.48 || mean > 0.52 {
			t.Errorf("Delay(%d): mean %.3f of the ceiling, want 0.5 (uniform)", n, mean)
		}
		for q, c := range buckets {
			if c < samples/4*9/10 || c > samples/4*11/10 {
				t.Errorf("Delay(%d): quartile %d holds %d of %d samples, want about a quarter", n, q, c, samples)
			}
		}
	}
	if d := (Backoff{}).Ceiling(0); d != DefaultBackoffBase {
		t.Fatalf("default first ceiling %v", d)
	}
}
