// Package evloop drives protocol cores (internal/core) over plain TCP
// sockets from a few event loops, so that a server holding many mostly
// idle connections pays an event loop's cost for each: an idle connection
// holds no goroutine, no read or write buffer and no timer of its own.
//
// # Who owns what
//
// Loops is a group of loops, about one per core. Each loop owns an epoll
// set, an eventfd that wakes it, a timer heap of (deadline, connection), a
// read buffer and a write buffer, and one goroutine. The goroutine takes
// the epoll set's events with non-blocking epoll_waits and, when there are
// none, parks in Go's own poller, which watches the epoll descriptor (an
// epoll set is readable while it has events), with the earliest deadline
// of the heap (rounded up to the millisecond, so that the timers due in one
// millisecond fire in one wake-up) as the descriptor's read deadline. No
// thread blocks in epoll_wait: the scheduler resumes a loop as it resumes
// any goroutine waiting for a socket.
//
// Adopt takes a connected *net.TCPConn out of Go's poller (it duplicates
// the descriptor, makes it non-blocking and closes the net.Conn) and puts
// it on the least-loaded loop. A Conn then owns that descriptor, the core
// and a mutex that serialises every call into the core, as in
// internal/netconn. The Sink is called with the mutex held; functions given
// to Post run once it is released, on the goroutine that released it — on
// a loop's goroutine, so they must not block.
//
// # Which goroutine does what
//
//   - The loop reads: level-triggered EPOLLIN, one read into the loop's
//     buffer per readiness, the bytes handed to core.Receive, and only the
//     start of a frame that has not fully arrived kept on the connection
//     (in a pooled buffer, none once the frame is complete). While the core
//     does not want to read (a server whose peer does not read its answers,
//     a connection past the peer's FIN) the descriptor leaves the epoll set
//     (an EPOLLHUP would otherwise wake the loop for ever) and is put back
//     when the core wants to read again.
//   - The loop fires the timers: when a connection's deadline (core.Next)
//     comes, it ticks the core and re-arms the connection at its next one.
//     A tick that would find the peer silent (core.Conn.Silent) reads the
//     socket first: after a stall of the process the peer's bytes wait
//     there, unread, while every deadline has passed.
//     A goroutine that makes a deadline earlier than the one the loop sleeps
//     for (a call with a short deadline) writes the loop's eventfd.
//   - Any goroutine writes. Sockets are non-blocking, so whichever goroutine
//     finds output pending and nobody writing takes the writer role and
//     writes at once: a handler writes its answer, a caller its request, the
//     loop the PONGs, PINGs, GOAWAYs and refusals the core produced while it
//     read or ticked. The mutex is released during a write, so that the
//     output queued meanwhile leaves in the writer's next write. When the
//     socket takes no more (EAGAIN) the rest of the write is kept on the
//     connection, the connection is parked (EPOLLOUT), and the loop, which
//     holds the writer role from then on, finishes the write when the socket
//     drains and goes on with what the core has to send. A parked
//     connection blocks nobody; its core's WriteTimeout ends it if the peer
//     never reads.
//   - The connection is closed as soon as its core is done, by the goroutine
//     that finds it done: it leaves the epoll set and the timer heap at
//     once, and its descriptor is closed then (or, if a write is in progress
//     on another goroutine, by that writer as soon as the write returns,
//     which is at once: the socket is non-blocking). Done's channel is
//     closed with the descriptor, and the function given to Start runs on a
//     goroutine of its own.
//
// Times are those of netconn.Now, so that the cores' times are on the same
// scale as those of the goroutine-per-connection transport.
//
// The package works on Linux only; elsewhere NewLoops returns an error.
package evloop

import (
	"errors"
	"fmt"

	"github.com/tcppro/tcppro/session"
)

// ErrLoopsClosed ends the connections still open when their Loops is
// closed. It matches session.ErrConnClosed.
var ErrLoopsClosed = fmt.Errorf("%w: the event loops were closed", session.ErrConnClosed)

// ErrUnsupported is returned by NewLoops on systems without epoll.
var ErrUnsupported = errors.New("evloop: event loops need Linux")
