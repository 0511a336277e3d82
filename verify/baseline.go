package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/wire"
)

// The baselines are the same situations met by a plain net.Conn on the
// kernel's defaults: no application heartbeat, no TCP_USER_TIMEOUT, no
// connect timeout of its own, and Go's own keepalive override turned off
// (net.Dialer.KeepAlive: -1; Go would otherwise turn keepalive on with 15 s
// idle, 15 s interval, 9 probes), so SO_KEEPALIVE is off as the kernel
// leaves a new socket. Each is watched until the baseline cap.

// plainDial connects from h to addr with a plain net.Dialer on the kernel's
// defaults; ka, when not nil, turns keepalive on with those settings.
func plainDial(ctx context.Context, h *faultnet.Host, addr netip.AddrPort, ka *net.KeepAliveConfig) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		d := net.Dialer{KeepAlive: -1}
		if ka != nil {
			d.KeepAliveConfig = *ka
		}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	return c, err
}

// readWatch is a goroutine blocked in Read on a plain connection, with no
// deadline, until the connection fails: when that happens is when the
// plain connection noticed.
type readWatch struct {
	c    net.Conn
	done chan struct{}
	at   int64 // mono, once done is closed
	err  error
}

// watchRead starts reading c (discarding data) until it fails. The
// connection is closed when the scenario ends.
func (e *Env) watchRead(c net.Conn) *readWatch {
	w := &readWatch{c: c, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				w.at, w.err = mono(), err
				return
			}
		}
	}()
	e.onClose(func() {
		c.Close()
		<-w.done
	})
	return w
}

// baseline is a plain connection's measurement.
type baseline struct {
	d      time.Duration // when it noticed, from the fault
	capped bool          // it noticed nothing before the cap
	err    error         // what it saw
}

func (b baseline) ms() float64 { return ms(b.d) }

// cell is the table's text for it.
func (b baseline) cell() string {
	if b.capped {
		return "> " + fmtDur(b.d)
	}
	return fmtDur(b.d)
}

// wait waits until the watched read fails or cap has passed since t0.
func (w *readWatch) wait(ctx context.Context, t0 int64, cap time.Duration) (baseline, error) {
	left := cap - since(t0, mono())
	t := time.NewTimer(max(left, 0))
	defer t.Stop()
	select {
	case <-w.done:
		return baseline{d: since(t0, w.at), err: w.err}, nil
	case <-t.C:
		return baseline{d: cap, capped: true}, nil
	case <-ctx.Done():
		return baseline{}, ctx.Err()
	}
}

// roundTrip writes msg on a plain echo connection and reads it back.
func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: got %q, want %q", buf, msg)
	}
	return nil
}

// plainDialBaseline connects from h to addr with a plain net.Dialer (no
// timeout of its own: the kernel's SYN retries decide) and reports when it
// gave up, or the cap.
func plainDialBaseline(ctx context.Context, h *faultnet.Host, addr netip.AddrPort, cap time.Duration) (baseline, error) {
	dctx, cancel := context.WithTimeout(ctx, cap)
	defer cancel()
	start := mono()
	c, err := plainDial(dctx, h, addr, nil)
	took := since(start, mono())
	if err == nil {
		c.Close()
		return baseline{}, fmt.Errorf("plain connect into the black hole succeeded after %v", took)
	}
	if ctx.Err() != nil {
		return baseline{}, ctx.Err()
	}
	// The connect's own deadline is dctx's: a timeout at the cap is ours
	// (dctx.Err may not be set yet when the dial reports it).
	var ne net.Error
	if took >= cap-50*time.Millisecond && (errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)) {
		return baseline{d: cap, capped: true, err: err}, nil
	}
	return baseline{d: took, err: err}, nil
}

// requestFrame is a tcppro REQUEST, as a plain client would write it.
func requestFrame(id uint64, method, body string) []byte {
	return wire.AppendRequest(nil, id, false, 0, method, nil, []byte(body))
}

// readResponse reads frames off a plain connection until the answer to
// request id (skipping anything else, such as a PING).
func readResponse(c net.Conn, id uint64, limit time.Duration) (wire.Frame, error) {
	fr := wire.NewFramer(nil, c)
	_ = c.SetReadDeadline(time.Now().Add(limit))
	defer c.SetReadDeadline(time.Time{})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return wire.Frame{}, err
		}
		if f.ID == id && (f.Type == wire.TypeResponse || f.Type == wire.TypeError) {
			return f, nil
		}
	}
}

// keepaliveText describes the kernel's keepalive defaults in h's
// namespace, for the baseline's explanation.
func keepaliveText(h *faultnet.Host) string {
	t := nsSysctl(h, "net.ipv4.tcp_keepalive_time")
	i := nsSysctl(h, "net.ipv4.tcp_keepalive_intvl")
	p := nsSysctl(h, "net.ipv4.tcp_keepalive_probes")
	if t < 0 || i < 0 || p < 0 {
		return "never (SO_KEEPALIVE off); with it on, the kernel's keepalive timers"
	}
	return fmt.Sprintf("never (SO_KEEPALIVE off); with it on, tcp_keepalive_time=%d s + %d×%d s = %s", t, p, i, fmtDur(time.Duration(t+p*i)*time.Second))
}
