package sysinfo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Layouts from include/uapi/linux/inet_diag.h.
const (
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states u32, inet_diag_sockid (48)
	sizeofInetDiagMsg   = 72 // family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode
)

// hostListenBacklogs dumps TCP listeners of both families over
// NETLINK_SOCK_DIAG and returns wqueue (sk_max_ack_backlog) per inode.
func hostListenBacklogs() (map[uint64]int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket(NETLINK_SOCK_DIAG)", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("bind(NETLINK_SOCK_DIAG)", err)
	}
	// A stuck kernel answer must not hang the caller.
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	out := map[uint64]int{}
	for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpListeners(fd, uint32(i+1), family, out); err != nil {
			if family == unix.AF_INET6 && errors.Is(err, unix.ENOENT) {
				continue // IPv6 disabled
			}
			return nil, err
		}
	}
	return out, nil
}

func dumpListeners(fd int, seq uint32, family uint8, out map[uint64]int) error {
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	body := req[unix.NLMSG_HDRLEN:]
	body[0] = family
	body[1] = unix.IPPROTO_TCP
	ne.PutUint32(body[4:], 1<<uint(StateListen))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto(NETLINK_SOCK_DIAG)", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return os.NewSyscallError("recvfrom(NETLINK_SOCK_DIAG)", err)
		}
		msgs, err := splitNetlink(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue
			}
			switch m.typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if errno := int32(ne.Uint32(m.data)); errno != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil
			case unix.SOCK_DIAG_BY_FAMILY:
				d := m.data
				if len(d) < sizeofInetDiagMsg {
					return fmt.Errorf("sock_diag: short message (%d bytes)", len(d))
				}
				wqueue := ne.Uint32(d[60:])
				inode := ne.Uint32(d[68:])
				out[uint64(inode)] = int(wqueue)
			}
		}
	}
}

type nlMsg struct {
	typ  uint16
	seq  uint32
	data []byte
}

// splitNetlink splits a datagram into netlink messages (struct nlmsghdr
// followed by a payload, each aligned to 4 bytes).
func splitNetlink(b []byte) ([]nlMsg, error) {
	var out []nlMsg
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("sock_diag: bad netlink message length %d", l)
		}
		out = append(out, nlMsg{typ: ne.Uint16(b[4:]), seq: ne.Uint32(b[8:]), data: b[unix.NLMSG_HDRLEN:l]})
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next > len(b) {
			break
		}
		b = b[next:]
	}
	return out, nil
}
