// Package verify runs tcppro's fault scenarios on this machine and measures
// them: each scenario builds a small lab of network namespaces with package
// faultnet, puts tcppro's server and client on separate hosts of it,
// produces a real fault (a cut link, a frozen or killed process, a SYN black
// hole, a full server, a peer that closes) and checks that tcppro reacts
// within its documented bound. Rows 1–4 also measure the same situation with
// a plain net.Conn on the kernel's defaults, so the report shows what the
// practice buys.
//
// The scenarios, with heartbeat interval 1 s and timeout 2 s (protocol v2:
// the timeout runs from the last bytes received, and must exceed the
// interval):
//
//  1. link-cut-idle: the link to an idle peer is cut; the client and the
//     server each detect the dead peer within the timeout + 20 % (2.4 s),
//     and a live idle peer is not declared dead over 30 s.
//  2. link-cut-unacked: the client has unacknowledged data in flight when
//     the link is cut (the heartbeat and TCP_USER_TIMEOUT race), and when
//     only what the client sends is lost while the peer keeps sending
//     (only TCP_USER_TIMEOUT, set to the heartbeat timeout, can see it);
//     both are detected within the same bound, not tcp_retries2's ~15
//     minutes.
//  3. server-frozen: the server process is stopped (SIGSTOP); its kernel
//     still ACKs, so TCP sees nothing wrong, but the client's heartbeat
//     declares it dead within the bound and fails the call in flight with
//     ErrPeerDead.
//  4. connect-blackhole: a connect into a SYN black hole fails at the dial
//     timeout (±10 %). It is about TCP's connect: over TLS it runs the
//     same, and the handshake never starts.
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
// # The fleet
//
// Rows 9–15 run a fleet: server hosts s1, s2, ... each linked to one client
// host, and where the row needs a registry, a registry host running etcd,
// linked to every other host (so that cutting a server's client link leaves
// its registration alone). The servers registered in etcd are `tcppro serve
// --register` processes; the others run in this process. A row that needs
// etcd or dnsmasq and does not find it is skipped, saying how to install it
// (Scenario.Needs, Result.Skipped).
//
//  9. rolling-restart: four `tcppro serve --register` processes under
//     steady load, found by the client through an etcd:// target; each in
//     turn is upgraded in place (SIGHUP; the new process is followed
//     through --pid-file and a pidfd), then drained (SIGTERM, with a
//     --drain-delay of 300 ms between the key's deletion and GOAWAY) and started
//     again: 0 failed calls, 0 refused connects, calls reaching every
//     server afterwards.
//  10. slow-instance: four in-process servers, three answering in 20 ms and
//     one in 200 ms; a P2C client and a round-robin client under the same
//     load at the same time: P2C sends the slow server < 10 % of its calls
//     (round-robin 25 %) and its p99 is ≥ 3× lower.
//  11. black-holed: four servers under steady load, one's link cut
//     silently: the calls on it fail within the heartbeat bound (2.4 s),
//     none started after the client declared it dead fails, it is ejected
//     (5 transport failures in a row: the dead connection and connects that
//     time out, DialTimeout 1 s); restored, it comes back after its 30 s
//     ejection and 10 s warm-up and carries 25 % ± 6 points within a minute.
//  12. scale-out: four registered servers under calls of 20 ms (about two
//     in flight per server); a fifth registers and carries 20 % ± 5 points of
//     the calls within the servers' --max-conn-age (12 s, +10 % jitter) +
//     --max-conn-age-grace (3 s), and over the last 5 s of that bound.
//  13. registry-loss: etcd stopped for 30 s under steady load: no call
//     fails, the client's set does not change, every server keeps retrying
//     (its registration metrics and /readyz's "not registered" line) and is
//     registered again within 10 s of etcd's return; then a SIGKILLed server
//     (--register-ttl 5 s) leaves the client's set within TTL + 2 s.
//  14. dns-change: the client finds two of four servers through dnsmasq
//     (on its own host, refresh 3 s, TTL 60 s); the records are replaced by
//     the other two under steady load and the client's servers are exactly
//     the new ones within the refresh interval + 0.5 s; dnsmasq is then
//     stopped for 9 s and the client keeps its set; no call fails.
//  15. subsetting: 100 clients with subset ids 1..100 and subset 5 over 20
//     servers: connections per server max/min ≤ 1.25 (deterministic
//     subsetting gives every server exactly 25).
//
// # The soak
//
// RunSoak (`tcppro verify --soak`) is not a row of the report but rows of
// its own: one `tcppro serve` holding up to 19 000 connections from
// client agents on four or more hosts (one connection per client, at most
// 4 750 per agent process, each well under the open-file limit),
// heartbeats every second, a light call rate, and faults from a seeded
// schedule, one host at a time: its link cut, its agent frozen, its agent
// killed and replaced. The server's descriptors, goroutines and RSS are
// read every second and compared between a fault-free window after the
// ramp and one at the end; every call must end, typed, within its
// deadline; clients no fault touched must not fail a call or lose their
// connection. Each agent and the monitor run a watchdog that notes when
// their process was not run (frozen, or not scheduled by a busy machine):
// lateness and failures such a stall explains are reported apart.
//
// # Transports
//
// A run is over plain TCP or, with Options.TLS (`tcppro verify --tls`),
// over TLS: the servers serve a certificate from a throwaway CA made for the
// run (NewTLSFiles), the agents' clients trust that CA, and the raw peers
// that stand in for other implementations speak TLS too (tls.Client or
// tls.Server over their connection) before the protocol's HELLO exchange.
// The plain-TCP baselines are then TLS over a plain net.Conn: TLS adds no
// liveness check of its own.
//
// # Processes
//
// The client side of each scenario runs in an agent process started inside
// the client's namespace (the tcppro program re-executed as
// `tcppro verify __agent`, with --tls-ca in a TLS run), driven over its
// standard input and output: its sockets, timers and CPU are those of a
// host of its own, as in production, and in tests it is a -race build whose
// reports fail the row. (client.Config.Dial could now dial from a namespace
// in this process; the agents stay for that separation.)
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
