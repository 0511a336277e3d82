package sysinfo

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// backlogFixture stands in, inside a fixture tree, for the kernel's
// sock_diag answer, which has no file form: one "INODE BACKLOG" pair per
// line, '#' starting a comment.
const backlogFixture = "sock_diag/tcp_listen"

// ListenBacklogs returns the accept-queue limit (sk_max_ack_backlog: the
// backlog given to listen(2), already capped at net.core.somaxconn) of
// every TCP listener, keyed by socket inode. This is what ss -lnt shows as
// Send-Q; /proc/net/tcp does not carry it.
//
// On the live host it asks the kernel over NETLINK_SOCK_DIAG (IPv4 and
// IPv6). In a fixture tree it reads sock_diag/tcp_listen, lines of
// "INODE BACKLOG".
func (f FS) ListenBacklogs() (map[uint64]int, error) {
	if f.IsHost() {
		return hostListenBacklogs()
	}
	b, err := f.readFile(backlogFixture)
	if err != nil {
		return nil, err
	}
	out := map[uint64]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fld := strings.Fields(line)
		if len(fld) == 0 {
			continue
		}
		if len(fld) != 2 {
			return nil, f.malformed(backlogFixture, sc.Text(), "want INODE BACKLOG")
		}
		ino, err1 := strconv.ParseUint(fld[0], 10, 64)
		bl, err2 := strconv.Atoi(fld[1])
		if err1 != nil || err2 != nil || bl < 0 {
			return nil, f.malformed(backlogFixture, sc.Text(), "want INODE BACKLOG as two non-negative integers")
		}
		out[ino] = bl
	}
	return out, nil
}
