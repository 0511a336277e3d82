package doctor

import (
	"fmt"
	"time"
)

// Kernel timer constants (include/net/tcp.h). TCP_RTO_MAX became the
// net.ipv4.tcp_rto_max_ms sysctl in Linux 6.15; the callers pass whatever
// the host says, defaulting to this.
const (
	rtoMin      = 200 * time.Millisecond // TCP_RTO_MIN, the base of the tcp_retries2 model
	timeoutInit = 1 * time.Second        // TCP_TIMEOUT_INIT, the first SYN / SYN-ACK timeout
	rtoMaxStd   = 120 * time.Second      // TCP_RTO_MAX
)

// modelTimeout is the kernel's tcp_model_timeout(): how long "boundary"
// retransmissions take when the timeout starts at base and doubles up to
// rtoMax. The kernel gives up on a connection once this much time has
// passed since its first retransmission.
func modelTimeout(boundary int, base, rtoMax time.Duration) time.Duration {
	if boundary < 0 {
		boundary = 0
	}
	thresh := 0 // ilog2(rtoMax / base)
	for q := rtoMax / base; q > 1; q >>= 1 {
		thresh++
	}
	if boundary <= thresh {
		return time.Duration((int64(2)<<uint(boundary))-1) * base
	}
	return time.Duration((int64(2)<<uint(thresh))-1)*base + time.Duration(boundary-thresh)*rtoMax
}

// connectTimeout is how long connect() to a host that never answers blocks
// before failing with ETIMEDOUT, as tcp_write_timeout() and
// tcp_retransmit_timer() decide it: SYNs are retransmitted with a 1 s
// timeout that stays linear for the first tcp_syn_linear_timeouts
// retransmissions (Linux 6.5+; 0 before) and doubles afterwards, capped at
// rtoMax; the kernel gives up at the first timer expiry after
// synRetries+linear retransmissions or after modelTimeout(synRetries, 1 s)
// has passed, whichever comes first. tcp_syn_retries=6 with no linear
// timeouts is the classic 127 s; with the 6.5+ default of 4 linear
// timeouts it is 131 s.
func connectTimeout(synRetries, linear int, rtoMax time.Duration) time.Duration {
	if synRetries < 0 {
		synRetries = 0
	}
	if linear < 0 {
		linear = 0
	}
	model := modelTimeout(synRetries, timeoutInit, rtoMax)
	var t time.Duration
	rto := timeoutInit
	retrans := 0
	for {
		t += rto
		if retrans >= synRetries+linear || (retrans > 0 && t >= model) {
			return t
		}
		retrans++
		if retrans > linear {
			rto = min(2*rto, rtoMax)
		}
	}
}

// halfOpenLifetime is how long a passive connection stays half-open
// (SYN_RECV) when the client never completes the handshake: the SYN-ACK is
// retransmitted synackRetries times, starting at 1 s and doubling up to
// rtoMax. tcp_synack_retries=5 gives 63 s.
func halfOpenLifetime(synackRetries int, rtoMax time.Duration) time.Duration {
	var t time.Duration
	rto := timeoutInit
	for i := 0; i <= synackRetries; i++ {
		t += rto
		rto = min(2*rto, rtoMax)
	}
	return t
}

// deadPeerTimeout is how long unacknowledged data keeps a connection to a
// vanished peer alive before the kernel gives up (tcp_retries2 through
// tcp_model_timeout with the 200 ms base). 15 gives 924.6 s. A socket with
// TCP_USER_TIMEOUT uses that instead.
func deadPeerTimeout(retries2 int, rtoMax time.Duration) time.Duration {
	return modelTimeout(retries2, rtoMin, rtoMax)
}

// keepaliveTimeout is how long an idle connection to a vanished peer lives
// with SO_KEEPALIVE on and the system defaults: the idle time, then probes
// probes intvl apart.
func keepaliveTimeout(idle, intvl, probes int) time.Duration {
	return time.Duration(idle)*time.Second + time.Duration(intvl)*time.Duration(probes)*time.Second
}

// secs formats a duration in seconds, with one decimal when needed and a
// rounded minutes or hours equivalent for long ones: "127 s", "924.6 s
// (≈15.4 min)", "7875 s (≈2.2 h)".
func secs(d time.Duration) string {
	var s string
	if d%time.Second == 0 {
		s = fmt.Sprintf("%d s", d/time.Second)
	} else {
		s = fmt.Sprintf("%.1f s", d.Seconds())
	}
	switch {
	case d >= 2*time.Hour:
		s += fmt.Sprintf(" (≈%.1f h)", d.Hours())
	case d >= 3*time.Minute:
		s += fmt.Sprintf(" (≈%.1f min)", d.Minutes())
	}
	return s
}
