package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/tcppro/tcppro/netx"
)

// lifecycle is the plane's listeners and connections: what Shutdown stops
// and waits for.
//
// http.Server.Shutdown alone would lose requests: a connection it has
// accepted but whose request it reads only after Shutdown began is closed
// without an answer (the client reads EOF, and does not retry on a new
// connection). That happens whenever a connect and the stop cross, and
// after an upgrade it happens to connections the old process accepted on
// the socket it shares with the new one. So the plane stops by itself:
// it stops accepting, turns keep-alives off (each connection's next answer
// closes it; idle ones are closed at once, as HTTP/1.1 lets a server do),
// waits for its accept loops to end, so that every connection they
// accepted is counted, and then for the count to reach zero. Only then is
// http.Server.Shutdown called, with nothing left to drop.
type lifecycle struct {
	mu        sync.Mutex
	stopping  bool                      // Shutdown, Close or Replaced began
	listeners map[net.Listener]struct{} // being served
	loops     sync.WaitGroup            // the Serve calls running
	conns     int                       // accepted connections not yet closed
	noConns   chan struct{}             // closed when conns reaches 0; nil until a Shutdown waits
}

// connState is the http.Server's ConnState hook. It runs on the accept
// loop for StateNew, before the loop accepts again.
func (l *lifecycle) connState(_ net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew:
		l.conns++
	case http.StateClosed, http.StateHijacked:
		l.conns--
		if l.conns == 0 && l.noConns != nil {
			close(l.noConns)
			l.noConns = nil
		}
	}
}

// serving registers ln, unless the plane is stopping.
func (l *lifecycle) serving(ln net.Listener) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return false
	}
	l.listeners[ln] = struct{}{}
	l.loops.Add(1)
	return true
}

// served unregisters ln, whose Serve has returned err, and returns the
// error Serve returns: http.ErrServerClosed if the plane closed ln.
func (l *lifecycle) served(ln net.Listener, err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.listeners, ln)
	l.loops.Done()
	if l.stopping && errors.Is(err, net.ErrClosed) {
		return http.ErrServerClosed
	}
	return err
}

// stop marks the plane stopping and returns the listeners to close.
func (l *lifecycle) stop() []net.Listener {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopping = true
	lns := make([]net.Listener, 0, len(l.listeners))
	for ln := range l.listeners {
		lns = append(lns, ln)
	}
	return lns
}

// waitConns waits until every accepted connection is closed, or ctx ends.
func (l *lifecycle) waitConns(ctx context.Context) error {
	l.mu.Lock()
	if l.conns == 0 {
		l.mu.Unlock()
		return nil
	}
	if l.noConns == nil {
		l.noConns = make(chan struct{})
	}
	ch := l.noConns
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Listen opens the admin listener on Config.Addr, applying the port policy
// and SO_REUSEADDR (see netx). Serve it with Serve.
func (a *Server) Listen() (net.Listener, error) {
	return netx.ListenConfig{AllowEphemeralPort: a.cfg.AllowEphemeralPort}.Listen(context.Background(), a.cfg.Addr)
}

// ListenAndServe listens on Config.Addr and serves until Shutdown or
// Close, then returns http.ErrServerClosed.
func (a *Server) ListenAndServe() error {
	ln, err := a.Listen()
	if err != nil {
		return err
	}
	return a.Serve(ln)
}

// Serve serves the plane on ln until Shutdown, Close or Replaced, then
// returns http.ErrServerClosed. A listener that is not on a loopback
// address is refused (and closed) unless a token is configured.
func (a *Server) Serve(ln net.Listener) error {
	if a.cfg.Token == "" && !loopbackAddr(ln.Addr()) {
		ln.Close()
		return fmt.Errorf("%w: listener on %s", ErrTokenRequired, ln.Addr())
	}
	if !a.life.serving(ln) {
		ln.Close()
		return http.ErrServerClosed
	}
	return a.life.served(ln, a.hs.Serve(ln))
}

// stopAccepting closes the plane's listeners and turns keep-alives off:
// from then on every answer closes its connection, and idle connections
// are closed at once.
func (a *Server) stopAccepting() {
	lns := a.life.stop()
	a.hs.SetKeepAlivesEnabled(false)
	for _, ln := range lns {
		ln.Close()
	}
}

// Shutdown stops the plane gracefully and cancels a pending drain's
// GOAWAY. It stops accepting at once, then answers every connection it has
// accepted — the request in progress or, if none, the next one (a
// connection that sends none is closed by ReadHeaderTimeout), each answer
// closing its connection; idle keep-alive connections are closed at once —
// and returns when they are all closed. If ctx ends first, it returns
// ctx.Err() and the remaining connections stay open: Close closes them.
func (a *Server) Shutdown(ctx context.Context) error {
	a.stopDrainTimer()
	a.stopAccepting()
	a.life.loops.Wait() // closed listeners end their loops at once
	if err := a.life.waitConns(ctx); err != nil {
		return err
	}
	return a.hs.Shutdown(ctx)
}

// Close closes the plane at once: its listeners and every connection.
func (a *Server) Close() error {
	a.stopDrainTimer()
	a.life.stop()
	return a.hs.Close()
}

// Replaced tells the plane that another process now serves its address on
// the listening socket the two share, and that this one is going away
// (tcppro serve's upgrade). Call it before taking the server offline.
//
// The plane stops accepting: when Replaced returns, its accept loops
// have ended. It closes only this process's descriptor of the socket,
// which stays open in the other process: new connects wait in its queue
// for the other process. The connections this
// plane has already accepted are still answered, each answer closing its
// connection, so that a client's next request reaches the process that
// serves: /readyz answers ready whatever this server's state (the address
// is served, by the other process, which reported ready before this one
// was replaced), and the mutating endpoints answer 503 with Retry-After:
// 0 without acting (their effect belongs to the process that serves).
// Shutdown then waits for those connections.
func (a *Server) Replaced() {
	a.replaced.Store(true)
	a.stopAccepting()
	a.life.loops.Wait()
}

// ready is the server's readiness, or true on a replaced plane.
func (a *Server) ready() (bool, string) {
	ready, reason := a.srv.Ready()
	// Read after the server's state: Replaced comes before the server
	// goes offline, so a server that is not ready because it was replaced
	// is seen replaced.
	if !ready && a.replaced.Load() {
		return true, ""
	}
	return ready, reason
}

func (a *Server) stopDrainTimer() {
	a.mu.Lock()
	a.closed = true
	a.drainGen++
	if a.drainT != nil {
		a.drainT.Stop()
		a.drainT = nil
	}
	a.mu.Unlock()
}
