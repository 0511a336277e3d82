// Package session is one live tcppro connection, the same engine for the
// server and the client side.
//
// It is split in two. Protocol is the connection logic with no I/O: bytes
// and clock ticks go in; decoded frames (to a Handler) and frames to send
// come out. It owns liveness (heartbeats), in-flight accounting, GOAWAY
// state and frame limits, and is tested without sockets. Conn is today's
// transport: one goroutine per connection reading a TCP socket, a write
// queue coalesced into single write calls without a writer goroutine, and
// pooled buffers so that an idle connection holds none. Monitor drives the
// timers of every connection from one goroutine.
//
// Who reads: a server connection's reader stays inside one RawRead and runs
// the last request of each read in its read callback, so a request costs
// one read and one write system call (it waits for the poller's next edge
// after a short read instead of reading again for EAGAIN). On a client
// connection the reader role passes between goroutines: a caller that finds
// nobody reading sends its request from inside its own read call and reads
// its answer (TryLead, SendAndLead), so one call at a time involves no
// goroutine hand-off and costs one write and one read system call; a
// background reader serves the others, and the monitor starts one on a
// connection left unread for a whole tick.
//
// Liveness: any frame received proves the peer alive. After
// HeartbeatInterval with nothing received a side sends PING; if nothing at
// all arrives within HeartbeatTimeout the connection is closed with
// ErrPeerDead and every request on it fails at once. PINGs are answered on
// the reading goroutine, never behind business work. A frame that starts
// arriving must complete within FrameReadTimeout; queued output that makes
// no progress for WriteTimeout cuts the connection (ErrWriteTimeout). No
// read deadline ever kills an idle, live connection.
//
// Closing: a peer's FIN is answered by finishing what is in flight, writing
// it, and sending our FIN at once, so no socket lingers in CLOSE_WAIT.
// GOAWAY stops new requests (those above its last id are dropped unseen, for
// the peer to retry), finishes the rest and closes the same way.
package session
