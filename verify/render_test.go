package verify

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWriteTableAndJSON(t *testing.T) {
	results := []Result{
		{Scenario: "link-cut-idle", BoundMS: 2400, MeasuredMS: 2083.4, BaselineMS: 60000, BaselineCapped: true, Baseline: "> 60 s", Pass: true, Detail: "client 2.05 s; server 2.08 s\nsecond line"},
		{Scenario: "conn-cap", BoundMS: 100, MeasuredMS: 3.2, BaselineMS: -1, Pass: false, Detail: "too slow"},
		{Scenario: "server-drain", BoundMS: 10000, MeasuredMS: 31, BaselineMS: -1, Bound: "0 failed calls", Measured: "0 failed/3000", Pass: true},
		{Scenario: "peer-close", BoundMS: 1000, BaselineMS: -1, Error: "lab: boom"},
		{Scenario: "scale-out", BoundMS: 15000, BaselineMS: -1, Skipped: "needs etcd"},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"SCENARIO", "PLAIN TCP",
		"link-cut-idle  <= 2.40 s", "2.08 s", "> 60 s", "pass",
		"conn-cap", "3.2 ms", "n/a", "FAIL",
		"0 failed calls", "0 failed/3000",
		"ERROR", "error: lab: boom",
		"2 of 5 scenarios pass (1 skipped: a program they need is missing)",
		"skipped: needs etcd",
		"  - client 2.05 s; server 2.08 s\n  - second line",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	b.Reset()
	if err := WriteJSON(&b, results); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(b.Bytes(), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(results) {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		for _, k := range []string{"scenario", "bound_ms", "measured_ms", "baseline_ms", "pass"} {
			if _, ok := row[k]; !ok {
				t.Errorf("row %v lacks %q", row["scenario"], k)
			}
		}
	}
	if rows[0]["baseline_ms"] != 60000.0 || rows[0]["baseline_capped"] != true || rows[1]["baseline_ms"] != -1.0 || rows[0]["pass"] != true {
		t.Errorf("values: %v", rows[:2])
	}
	if _, ok := rows[0]["tls"]; ok {
		t.Errorf("a plain row carries tls: %v", rows[0])
	}

	// A TLS run says so, in the summary line and in each JSON row.
	tlsRows := []Result{{Scenario: "conn-cap", BoundMS: 100, MeasuredMS: 3, BaselineMS: -1, Pass: true, TLS: true}}
	b.Reset()
	if err := WriteTable(&b, tlsRows); err != nil || !strings.Contains(b.String(), "1 of 1 scenarios pass over TLS.") {
		t.Errorf("TLS table: %v\n%s", err, b.String())
	}
	b.Reset()
	if err := WriteJSON(&b, tlsRows); err != nil || !strings.Contains(b.String(), `"tls": true`) {
		t.Errorf("TLS JSON: %v\n%s", err, b.String())
	}

	b.Reset()
	if err := WriteJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no results: %q, %v", b.String(), err)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3200 * time.Microsecond:   "3.2 ms",
		45 * time.Millisecond:     "45 ms",
		2083 * time.Millisecond:   "2.08 s",
		60 * time.Second:          "60 s",
		924600 * time.Millisecond: "925 s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestScenarioList(t *testing.T) {
	want := []string{"link-cut-idle", "link-cut-unacked", "server-frozen", "connect-blackhole", "server-killed", "server-drain", "conn-cap", "peer-close",
		"rolling-restart", "slow-instance", "black-holed", "scale-out", "registry-loss", "dns-change", "subsetting"}
	got := Names()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("scenarios %v, want %v", got, want)
	}
	for _, s := range Scenarios() {
		if s.Run == nil || s.Bound <= 0 || s.Description == "" {
			t.Errorf("%s: incomplete", s.Name)
		}
	}
	if detectBound != 2400*time.Millisecond {
		t.Errorf("detect bound %v", detectBound)
	}
}

func TestParseTCPTable(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 020012C6:1CFC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 533920 2 000000004a52adff 100 0 0 10 0
   1: 010012C6:A2B4 020012C6:1CFC 08 00002000:00000000 00:00000000 00000000     0        0 533921 1 0000000000000000 20 4 30 10 -1
`
	socks, err := parseTCPTable([]byte(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 {
		t.Fatalf("%d sockets", len(socks))
	}
	if socks[0].Local != netip.MustParseAddrPort("198.18.0.2:7420") || socks[0].State != tcpListen {
		t.Errorf("listener: %+v", socks[0])
	}
	if socks[1].Remote != netip.MustParseAddrPort("198.18.0.2:7420") || socks[1].Local.Port() != 0xA2B4 || socks[1].State != tcpCloseWait || socks[1].TxQueue != 0x2000 {
		t.Errorf("connection: %+v", socks[1])
	}
	if _, err := parseTCPTable([]byte("h\n 0: zz:1 00000000:0000 0A 0:0\n")); err == nil {
		t.Error("malformed address accepted")
	}
}

func TestKernelBounds(t *testing.T) {
	if got := retransmitGiveUp(15); got != 924600*time.Millisecond {
		t.Errorf("tcp_retries2=15: %v, want 924.6s", got)
	}
	if got := synGiveUp(6); got != 127*time.Second {
		t.Errorf("tcp_syn_retries=6: %v, want 127s", got)
	}
}

func TestCleanEnv(t *testing.T) {
	got := CleanEnv([]string{"PATH=/bin", "TCPPRO_MAX_CONNS=1", "HOME=/root", "TCPPRO_FAULTNET_REQUIRE=1", "TCPPRO_TRANSPORT_AUTO=netconn"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root TCPPRO_TRANSPORT_AUTO=netconn" {
		t.Errorf("CleanEnv: %v", got)
	}
}

func TestTailBufferReports(t *testing.T) {
	b := &tailBuffer{max: 64}
	b.Write([]byte("level=WARN msg=ok\n"))
	if b.problem() != "" {
		t.Fatalf("report in clean output: %q", b.problem())
	}
	// A marker split across writes, then more output than the buffer
	// keeps: the report is kept from its start.
	b.Write([]byte("==================\nWARNING: DATA "))
	b.Write([]byte("RACE\nRead at 0x00c000 by goroutine 7:\n"))
	b.Write(bytes.Repeat([]byte("x"), 200))
	if got := b.problem(); !strings.HasPrefix(got, "WARNING: DATA RACE\nRead at") || len(got) > 64 {
		t.Fatalf("report %q", got)
	}
	if len(b.String()) != 64 {
		t.Fatalf("tail of %d bytes", len(b.String()))
	}
}
