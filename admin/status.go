package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/tcppro/tcppro/server"
)

// The status page: one HTML document with its style and script inline (no
// external assets, no build step). It is rendered complete on the server,
// so it is useful without JavaScript, and its script then reloads /statusz
// and /connz every RefreshInterval. The Content-Security-Policy allows only
// that script and style (by hash) and fetches to the plane itself.

const pageCSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .5em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.ok { color: #fff; background: #2a7d2e; padding: .15em .6em; border-radius: 3px; }
.bad { color: #fff; background: #b3261e; padding: .15em .6em; border-radius: 3px; }
table { border-collapse: collapse; }
th, td { padding: .2em .6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
#error { color: #b3261e; }
.muted { color: #777; }
code { background: #f3f3f3; padding: 0 .3em; }
`

const pageJS = `
(function () {
  "use strict";
  var body = document.body;
  var every = Number(body.dataset.refresh) || 2000;
  var limit = Number(body.dataset.limit) || 100;
  function dur(s) {
    if (s === null || s === undefined) return "-";
    if (s < 0.001) return (s * 1e6).toFixed(0) + "\u00b5s";
    if (s < 1) return (s * 1000).toFixed(1) + "ms";
    if (s < 120) return s.toFixed(1) + "s";
    if (s < 7200) return (s / 60).toFixed(1) + "m";
    return (s / 3600).toFixed(1) + "h";
  }
  function set(id, v) {
    var e = document.getElementById(id);
    if (e) e.textContent = v;
  }
  function row(c) {
    var tr = document.createElement("tr");
    var t = c.tcp || {};
    var cells = [
      [c.remote, "l remote"], [c.local, "l"], [dur(c.age_seconds)], [dur(c.since_last_frame_seconds)],
      [c.in_flight], [c.bytes_in], [c.bytes_out], [c.memory_held_bytes], [dur(c.heartbeat_rtt_seconds)],
      [c.tcp ? dur(t.rtt_seconds) : "-"], [c.tcp ? t.total_retrans : "-"], [c.tcp ? t.unacked : "-"],
      [c.tcp ? t.state : "-", "l"], [c.tls ? "yes" : "", "l"], [c.going_away ? "yes" : "", "l"]
    ];
    cells.forEach(function (x) {
      var td = document.createElement("td");
      td.textContent = String(x[0]);
      if (x[1]) td.className = x[1];
      tr.appendChild(td);
    });
    return tr;
  }
  function render(st, cz) {
    var r = document.getElementById("ready");
    r.textContent = st.ready ? "READY" : "NOT READY: " + st.reason;
    r.className = st.ready ? "ok" : "bad";
    Object.keys(st.stats || {}).forEach(function (k) { set("s-" + k, st.stats[k]); });
    set("uptime", dur(st.uptime_seconds));
    var tb = document.getElementById("conns");
    tb.replaceChildren.apply(tb, cz.connections.map(row));
    set("conn-count", cz.connections.length < cz.total
      ? "showing the " + cz.connections.length + " oldest of " + cz.total
      : String(cz.total));
    set("updated", new Date().toLocaleTimeString());
    body.dataset.live = "1";
  }
  function get(url) {
    return fetch(url, { cache: "no-store" }).then(function (res) {
      if (!res.ok) throw new Error(url + ": HTTP " + res.status);
      return res.json();
    });
  }
  function tick() {
    Promise.all([get("statusz"), get("connz?limit=" + limit)]).then(function (v) {
      render(v[0], v[1]);
      set("error", "");
    }).catch(function (e) {
      set("error", "admin plane unreachable: " + e.message);
    }).then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, 0);
})();
`

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tcppro {{.Status.Addr}}</title>
<style>{{.Style}}</style>
</head>
<body data-refresh="{{.RefreshMillis}}" data-limit="{{.Limit}}">
<h1>tcppro <code>{{.Status.Addr}}</code>
{{if .Status.Ready}}<span id="ready" class="ok">READY</span>{{else}}<span id="ready" class="bad">NOT READY: {{.Status.Reason}}</span>{{end}}</h1>
<p class="muted">up <span id="uptime">{{secs .Status.UptimeSeconds}}</span>;
updated <span id="updated">{{.Now}}</span> (every {{.Refresh}});
<a href="metrics">metrics</a> · <a href="connz">connz</a> · <a href="statusz">statusz</a> · <a href="debug/pprof/">pprof</a>
<span id="error"></span></p>
<h2>Counts</h2>
<table>
{{range .Stats}}<tr><th class="l">{{.Label}}</th><td id="s-{{.Key}}">{{.Value}}</td></tr>
{{end}}</table>
<h2>Connections: <span id="conn-count">{{if lt (len .Connz.Connections) .Connz.Total}}showing the {{len .Connz.Connections}} oldest of {{.Connz.Total}}{{else}}{{.Connz.Total}}{{end}}</span></h2>
<table>
<thead><tr><th class="l">remote</th><th class="l">local</th><th>age</th><th>idle</th><th>in flight</th><th>bytes in</th><th>bytes out</th>
<th>memory held</th><th>heartbeat RTT</th><th>TCP RTT</th><th>retransmits</th><th>unacked</th><th class="l">state</th><th class="l">TLS</th><th class="l">going away</th></tr></thead>
<tbody id="conns">
{{range .Connz.Connections}}<tr><td class="l remote">{{.Remote}}</td><td class="l">{{.Local}}</td><td>{{secs .AgeSeconds}}</td><td>{{secs .SinceLastFrameSeconds}}</td>
<td>{{.InFlight}}</td><td>{{.BytesIn}}</td><td>{{.BytesOut}}</td><td>{{.MemoryHeld}}</td><td>{{if .HeartbeatRTTSeconds}}{{secs (deref .HeartbeatRTTSeconds)}}{{else}}-{{end}}</td>
{{with .TCP}}<td>{{secs .RTTSeconds}}</td><td>{{.TotalRetrans}}</td><td>{{.Unacked}}</td><td class="l">{{.State}}</td>{{else}}<td>-</td><td>-</td><td>-</td><td class="l">-</td>{{end}}
<td class="l">{{if .TLS}}yes{{end}}</td><td class="l">{{if .GoingAway}}yes{{end}}</td></tr>
{{end}}</tbody>
</table>
<script>{{.Script}}</script>
</body>
</html>
`

type statRow struct {
	Key, Label string
	Value      any
}

type pageData struct {
	Status        statusJSON
	Stats         []statRow
	Connz         ConnzJSON
	Now           string
	Refresh       time.Duration
	RefreshMillis int64
	Limit         int
	Style         template.CSS
	Script        template.JS
}

type statusPage struct {
	tmpl    *template.Template
	csp     string
	refresh time.Duration
	limit   int
}

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func newStatusPage(refresh time.Duration, limit int) *statusPage {
	funcs := template.FuncMap{
		"secs":  fmtSecs,
		"deref": func(p *float64) float64 { return *p },
	}
	return &statusPage{
		tmpl: template.Must(template.New("status").Funcs(funcs).Parse(pageHTML)),
		csp: "default-src 'none'; script-src " + cspHash(pageJS) + "; style-src " + cspHash(pageCSS) +
			"; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
		refresh: refresh,
		limit:   min(limit, 100),
	}
}

// fmtSecs formats seconds as the page's script does.
func fmtSecs(s float64) string {
	switch {
	case s < 0.001:
		return fmt.Sprintf("%.0fµs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.1fms", s*1000)
	case s < 120:
		return fmt.Sprintf("%.1fs", s)
	case s < 7200:
		return fmt.Sprintf("%.1fm", s/60)
	}
	return fmt.Sprintf("%.1fh", s/3600)
}

func statRows(st *statsJSON) []statRow {
	return []statRow{
		{"connections_open", "connections open", st.Active},
		{"connections_accepted", "connections accepted", st.Accepted},
		{"rejected_busy", "rejected: busy (cap, fd limit)", st.RejectedBusy},
		{"rejected_offline", "rejected: offline", st.RejectedOffline},
		{"accept_errors", "accept errors", st.AcceptErrors},
		{"dead_peers", "dead peers: heartbeat", st.DeadPeers},
		{"write_timeouts", "dead peers: write timeout", st.WriteTimeouts},
		{"control_floods", "dead peers: control flood", st.ControlFloods},
		{"goaways_sent", "GOAWAYs sent", st.GoAways},
		{"requests", "requests answered", st.Requests},
		{"in_flight", "requests in flight", st.InFlight},
		{"overloaded", "refused: workers busy", st.Overloaded},
		{"refused_in_flight", "refused: in-flight limit", st.RefusedInFlight},
		{"refused_memory", "refused: memory bound", st.RefusedMemory},
		{"memory_held_bytes", "memory held (bytes)", st.MemoryHeld},
		{"workers_busy", "workers busy", st.WorkersBusy},
		{"workers", "workers", st.Workers},
		{"frames_in", "frames in", st.FramesIn},
		{"frames_out", "frames out", st.FramesOut},
		{"bytes_in", "bytes in", st.BytesIn},
		{"bytes_out", "bytes out", st.BytesOut},
	}
}

func (a *Server) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	p := a.page
	st := a.status(true)
	d := pageData{
		Status:        st,
		Stats:         statRows(st.Stats),
		Connz:         a.connz(0, p.limit),
		Now:           time.Now().Format("15:04:05"),
		Refresh:       p.refresh,
		RefreshMillis: p.refresh.Milliseconds(),
		Limit:         p.limit,
		Style:         template.CSS(pageCSS),
		Script:        template.JS(pageJS),
	}
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, d); err != nil {
		a.log.Error("admin: status page", "err", err)
		http.Error(w, "admin: status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(buf.Bytes())
}

// ---------------------------------------------------------------------------
// /statusz

// statusJSON is /statusz's answer, and the mutating endpoints'.
type statusJSON struct {
	Action        string     `json:"action,omitempty"`
	Ready         bool       `json:"ready"`
	Reason        string     `json:"reason,omitempty"`
	Addr          string     `json:"addr"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	Stats         *statsJSON `json:"stats,omitempty"`
	GoAwayIn      *float64   `json:"goaway_in_seconds,omitempty"`
	// Registration is the instance's registration in a service registry,
	// when Config.Registration is set.
	Registration *registrationJSON `json:"registration,omitempty"`
}

// statsJSON is server.Stats in /statusz.
type statsJSON struct {
	Active          int64  `json:"connections_open"`
	Accepted        uint64 `json:"connections_accepted"`
	RejectedBusy    uint64 `json:"rejected_busy"`
	RejectedOffline uint64 `json:"rejected_offline"`
	AcceptErrors    uint64 `json:"accept_errors"`
	DeadPeers       uint64 `json:"dead_peers"`
	WriteTimeouts   uint64 `json:"write_timeouts"`
	ControlFloods   uint64 `json:"control_floods"`
	GoAways         uint64 `json:"goaways_sent"`
	Requests        uint64 `json:"requests"`
	InFlight        int64  `json:"in_flight"`
	Overloaded      uint64 `json:"overloaded"` // refused: every worker busy
	RefusedInFlight uint64 `json:"refused_in_flight"`
	RefusedMemory   uint64 `json:"refused_memory"`
	MemoryHeld      int64  `json:"memory_held_bytes"`
	WorkersBusy     int64  `json:"workers_busy"`
	Workers         int    `json:"workers"`
	FramesIn        uint64 `json:"frames_in"`
	FramesOut       uint64 `json:"frames_out"`
	BytesIn         uint64 `json:"bytes_in"`
	BytesOut        uint64 `json:"bytes_out"`
}

func toStatsJSON(st server.Stats) *statsJSON {
	return &statsJSON{
		Active: st.Active, Accepted: st.Accepted, RejectedBusy: st.RejectedBusy,
		RejectedOffline: st.RejectedOffline, AcceptErrors: st.AcceptErrors, DeadPeers: st.DeadPeers,
		WriteTimeouts: st.WriteTimeouts, ControlFloods: st.ControlFloods, GoAways: st.GoAways,
		Requests: st.Requests, InFlight: st.InFlight, Overloaded: st.Overloaded,
		RefusedInFlight: st.RefusedInFlight, RefusedMemory: st.RefusedMemory, MemoryHeld: st.MemoryHeld,
		WorkersBusy: st.WorkersBusy, Workers: st.Workers,
		FramesIn: st.FramesIn, FramesOut: st.FramesOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
	}
}

func (a *Server) status(withStats bool) statusJSON {
	ready, reason := a.ready()
	s := statusJSON{
		Ready: ready, Reason: reason, Addr: a.srv.Config().Addr,
		UptimeSeconds: time.Since(a.started).Seconds(),
	}
	if withStats {
		s.Stats = toStatsJSON(a.srv.Stats())
		s.Registration = toRegistrationJSON(a.registration())
	}
	return s
}

func (a *Server) serveStatusz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.status(true))
}
