package faultnet

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Link is a veth pair joining two hosts, with one address on each end.
//
// Its faults drop packets where they enter the receiving namespace, before
// any socket sees them, so neither side is told anything: the sender's TCP
// keeps retransmitting as on a real lossy path. Faults add up until Restore.
type Link struct {
	lab    *Lab
	index  int
	a, b   *Host
	subnet netip.Prefix
	addrA  netip.Addr
	addrB  netip.Addr
	ifname string
}

// A returns the first host given to Lab.Link.
func (lk *Link) A() *Host { return lk.a }

// B returns the second host given to Lab.Link.
func (lk *Link) B() *Host { return lk.b }

// Prefix returns the link's subnet, a /24 inside 198.18.0.0/15.
func (lk *Link) Prefix() netip.Prefix { return lk.subnet }

// Addr returns h's address on this link, or the zero Addr if h is not on
// it.
func (lk *Link) Addr(h *Host) netip.Addr {
	switch h {
	case lk.a:
		return lk.addrA
	case lk.b:
		return lk.addrB
	}
	return netip.Addr{}
}

// Peer returns the host at the other end of the link from h, or nil if h is
// not on it.
func (lk *Link) Peer(h *Host) *Host {
	switch h {
	case lk.a:
		return lk.b
	case lk.b:
		return lk.a
	}
	return nil
}

// chain is the name of the link's nftables chain in both namespaces.
func (lk *Link) chain() string { return "l" + strconv.Itoa(lk.index) }

// Cut drops every IP packet on the link, both ways, silently (no FIN, no
// RST, no ICMP reach anyone): the peer vanishes as if its power were cut
// behind a router. ARP is not dropped (the lab's table sees only IP), so the
// sender's kernel never concludes "no route to host", only silence. Sockets
// stay open; Restore lets them carry on.
func (lk *Link) Cut() error {
	return lk.add([]*Host{lk.a, lk.b}, "drop")
}

// DropDirection drops only the packets that from sends over the link; the
// other direction still flows (so from still receives data, but its ACKs
// are lost).
func (lk *Link) DropDirection(from *Host) error {
	to := lk.Peer(from)
	if to == nil {
		return fmt.Errorf("faultnet: DropDirection: host is not on link %s", lk.ifname)
	}
	return lk.add([]*Host{to}, "drop")
}

// DropPort drops, both ways, the TCP segments of the link whose source or
// destination port is port. Other ports are not affected.
func (lk *Link) DropPort(port uint16) error {
	if port == 0 {
		return errors.New("faultnet: DropPort: port 0")
	}
	return lk.add([]*Host{lk.a, lk.b}, fmt.Sprintf("tcp dport %d drop", port), fmt.Sprintf("tcp sport %d drop", port))
}

// Restore removes every fault of the link; packets flow again both ways.
func (lk *Link) Restore() error {
	lk.lab.mu.Lock()
	defer lk.lab.mu.Unlock()
	if err := lk.lab.checkOpen(); err != nil {
		return err
	}
	var errs []error
	for _, h := range []*Host{lk.a, lk.b} {
		errs = append(errs, lk.lab.run.nft(h.netns, fmt.Sprintf("flush chain inet %s %s\n", table, lk.chain())))
	}
	return errors.Join(errs...)
}

// add appends rules to the link's chain in the given receiving hosts.
func (lk *Link) add(receivers []*Host, rules ...string) error {
	lk.lab.mu.Lock()
	defer lk.lab.mu.Unlock()
	if err := lk.lab.checkOpen(); err != nil {
		return err
	}
	for _, h := range receivers {
		var script string
		for _, r := range rules {
			script += fmt.Sprintf("add rule inet %s %s %s\n", table, lk.chain(), r)
		}
		if err := lk.lab.run.nft(h.netns, script); err != nil {
			return err
		}
	}
	return nil
}
