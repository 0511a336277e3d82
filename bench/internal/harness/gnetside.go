package harness

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The gnet side: a gnet v2 event-loop server (multicore: one event loop per
// CPU, gnet's defaults otherwise — round-robin load balancing, TCP_NODELAY
// on, level-triggered epoll, 64 KiB read buffer per event loop) speaking the
// raw side's line protocol: on every readable event it takes what is
// buffered, writes back every complete line (all of them in one Write) and
// leaves a partial line in the connection's inbound buffer. No deadlines, no
// heartbeats, no limits: the footprint reference. Its load generator and
// holder are the raw side's.

type gnetEcho struct {
	gnet.BuiltinEventEngine
	booted chan gnet.Engine
}

func (e *gnetEcho) OnBoot(eng gnet.Engine) gnet.Action {
	e.booted <- eng
	return gnet.None
}

func (e *gnetEcho) OnTraffic(c gnet.Conn) gnet.Action {
	buf, err := c.Peek(-1)
	if err != nil {
		return gnet.Close
	}
	n := bytes.LastIndexByte(buf, '\n') + 1
	if n == 0 {
		return gnet.None // a partial line: wait for the rest
	}
	if _, err := c.Write(buf[:n]); err != nil {
		return gnet.Close
	}
	_, _ = c.Discard(n)
	return gnet.None
}

// gnetLogger sends gnet's warnings and errors to stderr (its default logger
// writes to stdout, the child's reply channel).
type gnetLogger struct{ l *log.Logger }

func (g gnetLogger) Debugf(string, ...any)     {}
func (g gnetLogger) Infof(string, ...any)      {}
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Printf("gnet warn: "+f, a...) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Printf("gnet error: "+f, a...) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Fatalf("gnet fatal: "+f, a...) }

// startGnetServer runs a gnet engine on 127.0.0.1 (a port of its own: gnet
// makes its listener itself) and returns its address.
func startGnetServer() (addr net.Addr, stop func(), err error) {
	e := &gnetEcho{booted: make(chan gnet.Engine, 1)}
	ran := make(chan error, 1)
	go func() {
		ran <- gnet.Run(e, "tcp://127.0.0.1:0",
			gnet.WithMulticore(true),
			gnet.WithLogger(gnetLogger{log.New(os.Stderr, "", log.LstdFlags)}))
	}()
	var eng gnet.Engine
	select {
	case eng = <-e.booted:
	case err := <-ran:
		return nil, nil, fmt.Errorf("gnet: %v", err)
	case <-time.After(10 * time.Second):
		return nil, nil, fmt.Errorf("gnet: not booted within 10s")
	}
	// gnet's Engine.Stop polls for the event loops' end every 500 ms; the
	// child exits right after stop, and the kernel closes what is left, so
	// stop waits for at most 50 ms.
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		go func() {
			defer cancel()
			_ = eng.Stop(ctx)
		}()
		select {
		case <-ran:
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The port gnet's listener got: from a duplicate of its descriptor.
	fd, err := eng.Dup()
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("gnet: listener: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gnet-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("gnet: listener: %w", err)
	}
	addr = ln.Addr()
	ln.Close()
	return addr, stop, nil
}
