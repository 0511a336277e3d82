// Package verify runs tcppro's fault scenarios on this machine and measures
// them: each scenario builds a small lab of network namespaces with package
// faultnet, puts tcppro's server and client on separate hosts of it,
// produces a real fault (a cut link, a frozen or killed process, a SYN black
// hole, a full server, a peer that closes) and checks that tcppro reacts
// within its documented bound. Rows 1–4 also measure the same situation with
// a plain net.Conn on the kernel's defaults, so the report shows what the
// practice buys.
//
// The scenarios, with heartbeat interval 1 s and timeout 1 s:
//
//  1. link-cut-idle: the link to an idle peer is cut; the client and the
//     server each detect the dead peer within (interval+timeout)×1.2, and a
//     live idle peer is not declared dead over 30 s.
//  2. link-cut-unacked: the client has unacknowledged data in flight when
//     the link is cut (the heartbeat and TCP_USER_TIMEOUT race), and when
//     only what the client sends is lost while the peer keeps sending PINGs
//     (only TCP_USER_TIMEOUT can see it); both are detected within the same
//     bound, not tcp_retries2's ~15 minutes.
//  3. server-frozen: the server process is stopped (SIGSTOP); its kernel
//     still ACKs, so TCP sees nothing wrong, but the client's heartbeat
//     declares it dead within the bound and fails the call in flight with
//     ErrPeerDead.
//  4. connect-blackhole: a connect into a SYN black hole fails at the dial
//     timeout (±10 %).
//  5. server-killed: the server is SIGKILLed under steady load; every call
//     ends with a success or a typed error (none hangs), the restarted
//     server binds at once and traffic resumes through the client's backoff.
//  6. server-drain: one of two servers gets SIGTERM under steady load; no
//     call fails: calls it did not process (some wait unread in its socket)
//     are retried on the other through GOAWAY.
//  7. conn-cap: clients beyond the server's connection cap get the BUSY error
//     within 100 ms.
//  8. peer-close: when the peer closes, no socket of ours stays in
//     CLOSE_WAIT for more than 1 s, on the server side or the client side.
//
// # Processes
//
// The client library dials from its own goroutines and has no way to take a
// dial function, so its sockets cannot be created inside a namespace from
// this process (faultnet's Host.Do only holds the goroutine it runs). The
// client side of each scenario therefore runs in an agent process started
// inside the client's namespace (the tcppro program re-executed as
// `tcppro verify __agent`), driven over its standard input and output.
// Servers that must receive a signal run as `tcppro serve` processes inside
// the server's namespace; the others run in this process on a listener made
// inside the namespace. Options.Command says how to start the program: the
// command re-executes its own binary, tests their test binary.
//
// Times are compared across processes on CLOCK_MONOTONIC.
//
// # Cleanup
//
// Each scenario has its own lab, closed when it ends, when it fails, and when
// the context given to Run is cancelled (Ctrl-C): the lab kills whatever
// still runs in its namespaces and deletes them with their links and
// nftables tables. A run killed outright leaves namespaces that the next
// faultnet.New removes (faultnet.CleanStale).
package verify
