package conntest

// Tests of connections with a driver on both sides: echoes, idleness,
// and a connection's end.

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// ConcurrentEcho guards the drivers' buffers: several connections, each
// with several callers, echo bodies of one frame of the default
// MAX_FRAME_SIZE (larger than a 64 KiB write buffer), chunked ones and
// small ones at once, and every byte of every answer is checked. A buffer
// used by two connections at once (as happened when a write buffer grown
// for a frame larger than it went back to the shared pool twice) mixes
// their answers. Small socket buffers make writes wait for the socket
// (EAGAIN) and reads see frames in pieces.
func ConcurrentEcho(t *testing.T, d Driver, others ...Driver) {
	const conns, callers, calls = 4, 4, 24
	for _, p := range pairs(d, others) {
		for _, tr := range over([]transport{tcp, tcpBufs(8 << 10), pipe}, p.srv, p.cli) {
			t.Run(p.String()+"/"+tr.name, func(t *testing.T) {
				begin := time.Now()
				var clis []*Endpoint
				for range conns {
					nc, ns := tr.pair(t)
					Start(t, p.srv, ns, core.Server, session.Config{}, nil)
					clis = append(clis, Start(t, p.cli, nc, core.Client, session.Config{}, nil))
				}
				EchoAll(t, clis, callers, calls)
				t.Logf("TIMING %d connections × %d callers × %d echoes, %v over %s: %v", conns, callers, calls, p, tr.name, time.Since(begin))
			})
		}
	}
}

// HeartbeatsKeepIdleAlive: idle connections with short heartbeats, one
// for each pair of drivers, stay open for ten heartbeat timeouts, and each
// side's PINGs are answered.
func HeartbeatsKeepIdleAlive(t *testing.T, d Driver, others ...Driver) {
	cfg := session.Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 200 * time.Millisecond}
	var eps []*Endpoint
	for _, p := range pairs(d, others) {
		nc, ns := TCPPair(t, 0)
		eps = append(eps, Start(t, p.srv, ns, core.Server, cfg, nil), Start(t, p.cli, nc, core.Client, cfg, nil))
	}
	// An observation window: ten heartbeat timeouts of idleness.
	time.Sleep(10 * cfg.HeartbeatTimeout)
	for i, e := range eps {
		select {
		case <-e.Done():
			t.Errorf("%s (connection %d) closed while idle with heartbeats: %v", e.Name, i/2, e.Err())
		default:
		}
		if n := e.Sink.Heartbeats.Load(); n < 3 {
			t.Errorf("%s (connection %d): %d PINGs answered in %v of a %v interval, want several",
				e.Name, i/2, n, 10*cfg.HeartbeatTimeout, cfg.HeartbeatInterval)
		}
	}
}

// CloseFromAnotherGoroutine: Close while callers have calls in flight and
// handlers answer: every call ends, with the error given to Close (or
// session.ErrConnClosed), the socket closes, the driver is done with it,
// and the peer ends too.
func CloseFromAnotherGoroutine(t *testing.T, d Driver, others ...Driver) {
	for _, p := range pairs(d, others) {
		t.Run(p.String(), func(t *testing.T) {
			nc, ns := TCPPair(t, 0)
			srv := Start(t, p.srv, ns, core.Server, session.Config{}, nil)
			cli := Start(t, p.cli, nc, core.Client, session.Config{}, nil)
			stop := errors.New("stopped by the test")
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := 0; ; i++ {
						if _, err := cli.Echo(t, bodyFor(0, g, i), 10*time.Second); err != nil {
							if !errors.Is(err, stop) && !errors.Is(err, session.ErrConnClosed) {
								t.Errorf("caller %d: %v, want the error given to Close", g, err)
							}
							return
						}
					}
				})
			}
			WaitFor(5*time.Second, func() bool { return srv.Sink.Requests.Load() >= 20 })
			cli.Close(stop)
			wg.Wait()
			WaitClosed(t, cli.Ended, 2*time.Second, "the client's end")
			if err := cli.Err(); !errors.Is(err, stop) {
				t.Errorf("Err() = %v, want the error given to Close", err)
			}
			WaitClosed(t, srv.Done(), 5*time.Second, "the server's end")
		})
	}
}

// GracefulEnd: after the server's GOAWAY (or the client's Drain) with
// nothing in flight, both sides send their FIN (over TCP, which can
// half-close) or close (over a pipe, which cannot), the driver is done
// with both, neither reports an error, and each Sink hears Closed once, with
// nil.
func GracefulEnd(t *testing.T, d Driver, others ...Driver) {
	for _, p := range pairs(d, others) {
		for _, tr := range over([]transport{tcp, pipe}, p.srv, p.cli) {
			for _, how := range []string{"goaway", "drain"} {
				t.Run(p.String()+"/"+tr.name+"/"+how, func(t *testing.T) {
					nc, ns := tr.pair(t)
					srv := Start(t, p.srv, ns, core.Server, session.Config{}, nil)
					cli := Start(t, p.cli, nc, core.Client, session.Config{}, nil)
					if got, err := cli.Echo(t, []byte("before"), 10*time.Second); err != nil || string(got) != "before" {
						t.Fatalf("call: %q, %v", got, err)
					}
					if how == "goaway" {
						srv.GoAway(wire.ReasonShutdown, "test")
						WaitClosed(t, cli.Sink.GoAwayCh, 5*time.Second, "the client's GOAWAY")
					} else {
						cli.Drain()
					}
					WaitClosed(t, srv.Ended, 5*time.Second, "the server's end")
					WaitClosed(t, cli.Ended, 5*time.Second, "the client's end")
					for _, e := range []*Endpoint{srv, cli} {
						if err := e.Err(); err != nil {
							t.Errorf("%s: Err() = %v after a graceful end, want nil", e.Name, err)
						}
						if n := e.Sink.Closes.Load(); n != 1 || e.Sink.CloseErr != nil {
							t.Errorf("%s: Sink.Closed called %d times, with %v; want once, with nil", e.Name, n, e.Sink.CloseErr)
						}
					}
				})
			}
		}
	}
}

// Done: closed once the socket is closed, whether it was obtained before
// Close or after, always the same channel; and a connection closed before
// it started ends as soon as it is started (ended is called), with the
// error given to Close.
func Done(t *testing.T, d Driver) {
	for _, tr := range over([]transport{tcp, pipe}, d) {
		t.Run(tr.name+"/before close", func(t *testing.T) {
			_, ns := tr.pair(t)
			srv := Start(t, d, ns, core.Server, session.Config{}, nil)
			done := srv.Done()
			select {
			case <-done:
				t.Fatal("Done closed while the connection is open")
			default:
			}
			srv.Close(nil)
			WaitClosed(t, done, 2*time.Second, "Done obtained before Close")
			WaitClosed(t, srv.Ended, 2*time.Second, "the driver's end")
		})
		t.Run(tr.name+"/after close", func(t *testing.T) {
			_, ns := tr.pair(t)
			srv := Start(t, d, ns, core.Server, session.Config{}, nil)
			srv.Close(nil)
			select {
			case <-srv.Done():
			default:
				t.Fatal("Done obtained after Close returned is not closed")
			}
			if srv.Done() != srv.Done() {
				t.Error("Done returns a different channel each call")
			}
		})
		t.Run(tr.name+"/closed before start", func(t *testing.T) {
			_, ns := tr.pair(t)
			c, err := d.New(t, ns, core.NewParams(core.Server, session.Config{}, core.Options{}), NewSink())
			if err != nil {
				t.Fatal(err)
			}
			stop := errors.New("never started")
			c.Close(stop)
			ended := make(chan struct{})
			d.Start(c, func() { close(ended) })
			WaitClosed(t, ended, 2*time.Second, "the end of a connection closed before it started")
			WaitClosed(t, c.Done(), time.Second, "Done of a connection closed before it started")
			if err := c.Err(); !errors.Is(err, stop) {
				t.Errorf("Err() = %v, want the error given to Close", err)
			}
		})
	}
}
