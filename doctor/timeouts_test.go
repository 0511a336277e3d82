package doctor

import (
	"testing"
	"time"
)

func TestConnectTimeout(t *testing.T) {
	for _, c := range []struct {
		retries, linear int
		want            time.Duration
	}{
		{6, 0, 127 * time.Second}, // the classic figure: 1+2+4+8+16+32+64
		{6, 4, 131 * time.Second}, // Linux 6.5+ default: 1,1,1,1,1,2,4,...,64
		{5, 0, 63 * time.Second},
		{3, 0, 15 * time.Second},
		{3, 4, 19 * time.Second},
		{2, 4, 7 * time.Second}, // cut short by the time model
		{0, 0, 1 * time.Second},
		{0, 4, 2 * time.Second},
		{8, 0, 367 * time.Second},  // the timeout caps at 120 s: 127+120+120
		{10, 0, 607 * time.Second}, // 127 + 4×120
	} {
		got := connectTimeout(c.retries, c.linear, rtoMaxStd)
		if got != c.want {
			t.Errorf("connectTimeout(%d, %d) = %v, want %v", c.retries, c.linear, got, c.want)
		}
	}
}

func TestDeadPeerTimeout(t *testing.T) {
	for r, want := range map[int]time.Duration{
		15: 924600 * time.Millisecond,
		8:  102200 * time.Millisecond,
		9:  204600 * time.Millisecond,
		3:  3 * time.Second,
	} {
		if got := deadPeerTimeout(r, rtoMaxStd); got != want {
			t.Errorf("deadPeerTimeout(%d) = %v, want %v", r, got, want)
		}
	}
	// A lower tcp_rto_max_ms shortens it: ilog2(60000/200)=8.
	if got := deadPeerTimeout(15, 60*time.Second); got != 102200*time.Millisecond+7*60*time.Second {
		t.Errorf("with rto_max 60 s: %v", got)
	}
}

func TestOtherTimeouts(t *testing.T) {
	if got := halfOpenLifetime(5, rtoMaxStd); got != 63*time.Second {
		t.Errorf("halfOpenLifetime(5) = %v", got)
	}
	if got := halfOpenLifetime(8, rtoMaxStd); got != 367*time.Second {
		t.Errorf("halfOpenLifetime(8) = %v", got)
	}
	if got := keepaliveTimeout(7200, 75, 9); got != 7875*time.Second {
		t.Errorf("keepaliveTimeout = %v", got)
	}
	for d, want := range map[time.Duration]string{
		127 * time.Second:         "127 s",
		924600 * time.Millisecond: "924.6 s (≈15.4 min)",
		7875 * time.Second:        "7875 s (≈2.2 h)",
	} {
		if got := secs(d); got != want {
			t.Errorf("secs(%v) = %q, want %q", d, got, want)
		}
	}
}
