package netx

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCPInfo is the kernel's view of a connection (TCP_INFO), the fields an
// operator reads when a connection misbehaves.
type TCPInfo struct {
	State        string        `json:"state"`         // ESTABLISHED, CLOSE_WAIT, ...
	RTT          time.Duration `json:"rtt"`           // smoothed round-trip time
	RTTVar       time.Duration `json:"rttvar"`        // its variance
	RTO          time.Duration `json:"rto"`           // current retransmission timeout
	Retransmits  uint8         `json:"retransmits"`   // retransmissions of the current unacked segment
	TotalRetrans uint32        `json:"total_retrans"` // retransmitted segments over the connection's life
	Unacked      uint32        `json:"unacked"`       // segments sent and not yet acknowledged
	Lost         uint32        `json:"lost"`          // segments considered lost
	NotSent      uint32        `json:"notsent_bytes"` // bytes queued and not yet sent
	SndCwnd      uint32        `json:"snd_cwnd"`      // congestion window, segments
}

var tcpStates = [...]string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

// GetTCPInfo reads TCP_INFO from a TCP connection.
func GetTCPInfo(c net.Conn) (TCPInfo, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return TCPInfo{}, errors.New("netx: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return TCPInfo{}, err
	}
	var info TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) { info, serr = TCPInfoFD(int(fd)) }); err != nil {
		return TCPInfo{}, err
	}
	return info, serr
}

// TCPInfoFD reads TCP_INFO from the socket descriptor fd.
func TCPInfoFD(fd int) (TCPInfo, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return TCPInfo{}, err
	}
	state := "UNKNOWN"
	if int(ti.State) < len(tcpStates) && tcpStates[ti.State] != "" {
		state = tcpStates[ti.State]
	}
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	return TCPInfo{
		State:        state,
		RTT:          us(ti.Rtt),
		RTTVar:       us(ti.Rttvar),
		RTO:          us(ti.Rto),
		Retransmits:  ti.Retransmits,
		TotalRetrans: ti.Total_retrans,
		Unacked:      ti.Unacked,
		Lost:         ti.Lost,
		NotSent:      ti.Notsent_bytes,
		SndCwnd:      ti.Snd_cwnd,
	}, nil
}
