package sysinfo

import (
	"net"
	"os"
	"runtime"
	"testing"
)

// TestLiveOwnListener checks the whole chain on this machine: a listener we
// open shows up in the socket table, its backlog in sock_diag, and this
// process as its owner.
func TestLiveOwnListener(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux /proc")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	h := Host()
	socks, err := h.TCPSockets()
	if err != nil {
		t.Fatal(err)
	}
	var me *Socket
	for i := range socks {
		if socks[i].State == StateListen && int(socks[i].Local.Port()) == port && socks[i].Local.Addr().String() == "127.0.0.1" {
			me = &socks[i]
		}
	}
	if me == nil || me.Inode == 0 {
		t.Fatalf("listener on port %d not found in the socket table", port)
	}
	r, err := h.LocalPortRange()
	if err != nil {
		t.Fatal(err)
	}
	if res, err := h.ReservedPorts(); err != nil || !r.Contains(port) && !res.Contains(port) {
		// Port 0 binds pick from the ephemeral range.
		t.Errorf("port %d outside ephemeral range %v (reserved %v, %v)", port, r, res, err)
	}

	backlogs, err := h.ListenBacklogs()
	if err != nil {
		t.Fatal(err)
	}
	if backlogs[me.Inode] <= 0 {
		t.Errorf("backlog of inode %d = %d, want > 0", me.Inode, backlogs[me.Inode])
	}

	self, err := h.Process(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ino := range self.Sockets {
		found = found || ino == me.Inode
	}
	if !found {
		t.Errorf("own process does not hold inode %d: %v", me.Inode, self.Sockets)
	}
	if self.OpenFiles <= 0 || self.MaxOpenFiles.Soft == 0 {
		t.Errorf("own process: %+v", self)
	}

	if _, err := h.NetStat(); err != nil {
		t.Error(err)
	}
	if _, err := h.Processes(); err != nil {
		t.Error(err)
	}
}
