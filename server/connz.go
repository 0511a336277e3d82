package server

import (
	"sort"
	"time"

	"github.com/tcppro/tcppro/netx"
)

// ConnInfo describes one live connection, for the admin plane's
// connection table.
type ConnInfo struct {
	Remote         string        `json:"remote"`
	Local          string        `json:"local"`
	Age            time.Duration `json:"age"`
	SinceLastFrame time.Duration `json:"since_last_frame"` // to the monitor's tick
	InFlight       int           `json:"in_flight"`
	BytesIn        uint64        `json:"bytes_in"`
	BytesOut       uint64        `json:"bytes_out"`
	FramesIn       uint64        `json:"frames_in"`
	FramesOut      uint64        `json:"frames_out"`
	HeartbeatRTT   time.Duration `json:"heartbeat_rtt"` // 0 until a PING was answered
	GoingAway      bool          `json:"going_away"`
	TCP            *netx.TCPInfo `json:"tcp,omitempty"` // nil if TCP_INFO could not be read
}

// Conns returns at most limit live connections, oldest first, starting at
// offset, and the number of live connections. TCP_INFO is read only for the
// connections returned, so a page of a large table stays cheap.
func (s *Server) Conns(offset, limit int) ([]ConnInfo, int) {
	s.mu.Lock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].sc.Created().Before(all[j].sc.Created()) })
	total := len(all)
	if offset < 0 {
		offset = 0
	}
	if offset > total {
		offset = total
	}
	all = all[offset:]
	if limit >= 0 && limit < len(all) {
		all = all[:limit]
	}
	now := time.Now()
	out := make([]ConnInfo, 0, len(all))
	for _, c := range all {
		p := c.sc.Protocol()
		goingAway, _ := p.GoingAway()
		ci := ConnInfo{
			Remote:         c.remote.String(),
			Local:          c.sc.NetConn().LocalAddr().String(),
			Age:            now.Sub(c.sc.Created()),
			SinceLastFrame: p.SinceReceived(),
			InFlight:       p.InFlight(),
			BytesIn:        p.BytesIn(),
			BytesOut:       c.sc.BytesOut(),
			FramesIn:       p.FramesIn(),
			FramesOut:      c.sc.FramesOut(),
			HeartbeatRTT:   p.RTT(),
			GoingAway:      goingAway,
		}
		if ti, err := netx.GetTCPInfo(c.sc.NetConn()); err == nil {
			ci.TCP = &ti
		}
		out = append(out, ci)
	}
	return out, total
}
