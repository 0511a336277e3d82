// Package faultnet builds a small network lab out of Linux network
// namespaces, so that faults loopback can never show — a peer whose power
// was cut, a connect into a black hole, a frozen process — can be produced
// for real and measured.
//
// # What the lab is
//
// A [Lab] is a set of hosts. Each [Host] is its own network namespace (its
// own interfaces, routes, sockets and nftables ruleset). [Lab.Link] joins two
// hosts with a veth pair, an Ethernet cable in software, and gives each end
// an address in 198.18.0.0/15. Code runs "on" a host in two ways:
//
//   - [Host.Do] runs a function on an OS thread that has entered the host's
//     namespace. Sockets created inside it belong to that namespace for the
//     rest of their life, so a [net.Listener] or [net.Conn] made in Do (or by
//     [Host.Listen] and [Host.Dial]) can be used from any goroutine
//     afterwards.
//   - [Host.Command] returns an [os/exec.Cmd] that runs a program inside the
//     namespace (through `ip netns exec`).
//
// Faults:
//
//   - [Link.Cut] makes a link drop every packet both ways, silently: nothing
//     is sent to either side, no FIN, no RST, no ICMP, exactly like a pulled
//     cable. [Link.DropDirection] drops only what one host sends;
//     [Link.DropPort] only one TCP port. [Link.Restore] undoes them all and
//     established connections carry on (TCP retransmits what was lost).
//   - [Host.BlackholeSYN] makes a host ignore connection attempts, so a
//     dialer's connect hangs until its own timeout instead of being refused.
//     [Host.Restore] undoes it.
//   - [Freeze], [Thaw] and [Kill] stop (SIGSTOP), resume (SIGCONT) and kill
//     (SIGKILL) a process, for example one started with [Host.Command].
//
// Drops are made on the receiving side of a link, in the ingress path
// (nftables prerouting hook, before conntrack) of the namespace the packet
// enters, so the sender's kernel sends it and never learns it was lost, as
// on a wire. The alternatives are not faithful: with the link set down, new
// connects fail at once with "network is unreachable"; a drop in the
// sender's output path is a local send failure its kernel sees and counts.
//
// # Safety rules
//
//   - Addresses come from 198.18.0.0/15 only (RFC 2544, set aside for
//     network benchmarks), one /24 per link, and exist only inside the lab's
//     namespaces.
//   - Nothing in the root namespace is touched: veth pairs are created
//     directly inside lab namespaces, and every nftables rule lives in a
//     table the lab owns (inet tcppro_faultnet) inside a lab namespace.
//     The host's interfaces, routes and ruleset are never read or changed.
//   - Every namespace is named "tcpprofl-<pid>-<start>-<rand>-<host>": the
//     pid and start time of the owning process and a random part, so
//     parallel runs never collide. [Lab.Close] kills whatever still runs in
//     the lab's namespaces and deletes them, which also removes their veth
//     links and nftables tables. It is idempotent and safe from any
//     goroutine. [CleanStale] (also run by [New]) removes namespaces whose
//     owning process is gone, the leftovers of a crashed or killed run.
//   - Every wait is bounded: each command has a timeout, polls have
//     deadlines.
//
// The lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` from iproute2
// and `nft` from nftables. Where any of this is missing, [New] returns an
// error for which errors.Is(err, [ErrUnsupported]) holds and whose text says
// why.
//
// # Use from a test
//
//	func TestPeerVanishes(t *testing.T) {
//		lab := faultnet.ForTest(t) // skips with the reason if unsupported; closed by t.Cleanup
//		srv, _ := lab.AddHost("server")
//		cli, _ := lab.AddHost("client")
//		link, _ := lab.Link(cli, srv)
//		ln, err := srv.Listen("tcp", netip.AddrPortFrom(link.Addr(srv), 7000).String())
//		...
//		conn, err := cli.Dial(ctx, "tcp", ln.Addr().String())
//		...
//		link.Cut() // the server vanishes without a word
//		...
//	}
//
// ForTest skips when the lab is unsupported, unless the environment variable
// TCPPRO_FAULTNET_REQUIRE is set to 1, in which case it fails: CI sets it so
// fault tests can never be skipped there by accident.
//
// Cleanups registered with t.Cleanup also run when the test fails or panics
// in its own goroutine. A panic in another goroutine or a SIGKILL ends the
// process without cleanups; the next [New] removes what was left.
//
// # Use from a command
//
// Cancel the context given to [New] to close the lab: combined with
// [os/signal.NotifyContext] this removes everything on Ctrl-C even while the
// program is blocked elsewhere:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	lab, err := faultnet.New(ctx)
//	if err != nil { ... }
//	defer lab.Close()
package faultnet
