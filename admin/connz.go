package admin

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/tcppro/tcppro/server"
)

// ---------------------------------------------------------------------------
// Connection table

// ConnJSON is one row of /connz.
type ConnJSON struct {
	Remote                string   `json:"remote"`
	Local                 string   `json:"local"`
	AgeSeconds            float64  `json:"age_seconds"`
	SinceLastFrameSeconds float64  `json:"since_last_frame_seconds"`
	InFlight              int      `json:"in_flight"`
	BytesIn               uint64   `json:"bytes_in"`
	BytesOut              uint64   `json:"bytes_out"`
	FramesIn              uint64   `json:"frames_in"`
	FramesOut             uint64   `json:"frames_out"`
	HeartbeatRTTSeconds   *float64 `json:"heartbeat_rtt_seconds"` // null until a PING was answered
	GoingAway             bool     `json:"going_away"`
	MemoryHeld            int      `json:"memory_held_bytes"` // bytes held for the peer: requests being received or handled, answers not yet written
	TLS                   bool     `json:"tls"`               // served over TLS
	TCP                   *TCPJSON `json:"tcp"`               // null when TCP_INFO could not be read
}

// TCPJSON is the kernel's view of a connection (TCP_INFO).
type TCPJSON struct {
	State        string  `json:"state"`
	RTTSeconds   float64 `json:"rtt_seconds"`
	RTTVarSecs   float64 `json:"rttvar_seconds"`
	RTOSeconds   float64 `json:"rto_seconds"`
	Retransmits  uint8   `json:"retransmits"`
	TotalRetrans uint32  `json:"total_retrans"`
	Unacked      uint32  `json:"unacked"`
	Lost         uint32  `json:"lost"`
	NotSentBytes uint32  `json:"notsent_bytes"`
	SndCwnd      uint32  `json:"snd_cwnd"`
}

// ConnzJSON is /connz's answer: one page of the live connections, oldest
// first.
type ConnzJSON struct {
	Total       int        `json:"total"`
	Offset      int        `json:"offset"`
	Limit       int        `json:"limit"`
	NextOffset  *int       `json:"next_offset"` // null on the last page
	Connections []ConnJSON `json:"connections"`
}

func toConnJSON(ci server.ConnInfo) ConnJSON {
	c := ConnJSON{
		Remote: ci.Remote, Local: ci.Local,
		AgeSeconds: ci.Age.Seconds(), SinceLastFrameSeconds: ci.SinceLastFrame.Seconds(),
		InFlight: ci.InFlight, BytesIn: ci.BytesIn, BytesOut: ci.BytesOut,
		FramesIn: ci.FramesIn, FramesOut: ci.FramesOut, GoingAway: ci.GoingAway,
		MemoryHeld: ci.MemoryHeld, TLS: ci.TLS,
	}
	if ci.HeartbeatRTT > 0 {
		v := ci.HeartbeatRTT.Seconds()
		c.HeartbeatRTTSeconds = &v
	}
	if t := ci.TCP; t != nil {
		c.TCP = &TCPJSON{
			State: t.State, RTTSeconds: t.RTT.Seconds(), RTTVarSecs: t.RTTVar.Seconds(), RTOSeconds: t.RTO.Seconds(),
			Retransmits: t.Retransmits, TotalRetrans: t.TotalRetrans, Unacked: t.Unacked, Lost: t.Lost,
			NotSentBytes: t.NotSent, SndCwnd: t.SndCwnd,
		}
	}
	return c
}

// connz returns one page of the connection table.
func (a *Server) connz(offset, limit int) ConnzJSON {
	limit = min(limit, a.cfg.ConnzMaxLimit)
	infos, total := a.srv.Conns(offset, limit)
	out := ConnzJSON{Total: total, Offset: offset, Limit: limit, Connections: make([]ConnJSON, 0, len(infos))}
	for _, ci := range infos {
		out.Connections = append(out.Connections, toConnJSON(ci))
	}
	if next := offset + len(infos); next < total && len(infos) > 0 {
		out.NextOffset = &next
	}
	return out
}

func (a *Server) serveConnz(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	intParam := func(name string, def int) (int, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("admin: parameter %s=%q: want a non-negative integer", name, v), http.StatusBadRequest)
			return 0, false
		}
		return n, true
	}
	limit, ok := intParam("limit", a.cfg.ConnzLimit)
	if !ok {
		return
	}
	offset, ok := intParam("offset", 0)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, a.connz(offset, limit))
}
