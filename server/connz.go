package server

import (
	"crypto/tls"
	"errors"
	"sort"
	"time"

	"github.com/tcppro/tcppro/internal/evloop"
	"github.com/tcppro/tcppro/internal/netconn"
	"github.com/tcppro/tcppro/netx"
)

// ConnInfo describes one live connection, for the admin plane's
// connection table.
type ConnInfo struct {
	Remote         string        `json:"remote"`
	Local          string        `json:"local"`
	Age            time.Duration `json:"age"`
	SinceLastFrame time.Duration `json:"since_last_frame"` // since bytes last arrived
	InFlight       int           `json:"in_flight"`
	BytesIn        uint64        `json:"bytes_in"`
	BytesOut       uint64        `json:"bytes_out"`
	FramesIn       uint64        `json:"frames_in"`
	FramesOut      uint64        `json:"frames_out"`
	HeartbeatRTT   time.Duration `json:"heartbeat_rtt"` // 0 until a PING was answered
	GoingAway      bool          `json:"going_away"`
	MemoryHeld     int           `json:"memory_held"`   // bytes held for the peer (requests, answers)
	TLS            bool          `json:"tls"`           // served over TLS
	TCP            *netx.TCPInfo `json:"tcp,omitempty"` // nil if TCP_INFO could not be read
}

// Conns returns at most limit live connections, oldest first, starting at
// offset, and the number of live connections. TCP_INFO is read only for the
// connections returned, so a page of a large table stays cheap.
func (s *Server) Conns(offset, limit int) ([]ConnInfo, int) {
	all := s.snapshot()
	sort.Slice(all, func(i, j int) bool { return all[i].tc.Created().Before(all[j].tc.Created()) })
	total := len(all)
	offset = min(max(offset, 0), total)
	all = all[offset:]
	if limit >= 0 && limit < len(all) {
		all = all[:limit]
	}
	now, mono := time.Now(), netconn.Now()
	out := make([]ConnInfo, 0, len(all))
	for _, c := range all {
		st := c.tc.Stats()
		ci := ConnInfo{
			Remote:         c.tc.NetConn().RemoteAddr().String(),
			Local:          c.tc.NetConn().LocalAddr().String(),
			Age:            now.Sub(c.tc.Created()),
			SinceLastFrame: time.Duration(mono - st.LastReceived),
			InFlight:       st.InFlight,
			BytesIn:        st.BytesIn,
			BytesOut:       st.BytesOut,
			FramesIn:       st.FramesIn,
			FramesOut:      st.FramesOut,
			HeartbeatRTT:   st.RTT,
			GoingAway:      st.GoingAway,
			MemoryHeld:     st.Held + st.Queued,
			TLS:            s.cfg.TLS != nil,
		}
		if ti, err := c.tcpInfo(); err == nil {
			ci.TCP = &ti
		}
		out = append(out, ci)
	}
	return out, total
}

// tcpInfo reads the connection's TCP_INFO: from the event loop's
// descriptor, or from the TCP connection under it.
func (c *conn) tcpInfo() (netx.TCPInfo, error) {
	lc, ok := c.tc.(*evloop.Conn)
	if !ok {
		nc := c.tc.NetConn()
		if t, ok := nc.(*tls.Conn); ok {
			nc = t.NetConn()
		}
		return netx.GetTCPInfo(nc)
	}
	var ti netx.TCPInfo
	err := errors.New("server: connection closed")
	lc.Control(func(fd int) { ti, err = netx.TCPInfoFD(fd) })
	return ti, err
}
