package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The harness re-execs its own binary as server and holder children; in a
// test that binary is the test binary, so TestMain dispatches the roles.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	// Tiny runs: the goroutine counts settle at once.
	settlePoll = 25 * time.Millisecond
	os.Exit(m.Run())
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tinyConfig() Config {
	c := QuickConfig()
	c.Duration = 250 * time.Millisecond
	c.Warmup = 50 * time.Millisecond
	c.RRConns = []int{4}
	c.PipeConns = 2
	c.PipeDepth = 8
	c.MemConns = 40
	c.MemSettle = 50 * time.Millisecond
	c.PongConns = []int{1, 3}
	c.PongSleep = 100 * time.Millisecond
	c.PongWindow = 300 * time.Millisecond
	c.BurstConns = 4
	c.TLSConns = 4
	c.HBConns = 40
	c.HBSettle = 100 * time.Millisecond
	c.HBWindow = 300 * time.Millisecond
	c.HolderConns = 25 // the 40 held conns spread over two holders
	return c
}

// TestQuickRun runs every scenario once with tiny numbers, both sides, and
// checks that the report is complete and that no child is left behind. It
// checks no performance target: tiny runs on shared machines are noise.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, tinyConfig(), logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	t.Log("\n" + table.String())
	if n := liveChildren(); n != 0 {
		t.Errorf("%d child processes left running", n)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %q", rep.Errors)
	}
	// rr-4, pipe (with its latency rows), mem, hb, pong-1 and pong-3,
	// burst, tls-rr.
	if want := 5 + 8 + 8 + 4 + 2*10 + 6 + 5; len(rep.Rows) != want {
		t.Errorf("%d rows, want %d", len(rep.Rows), want)
	}
	scenarios := map[string]bool{}
	for _, row := range rep.Rows {
		scenarios[row.Scenario] = true
		want := allSides
		switch {
		case strings.HasPrefix(row.Scenario, "pong-"):
			want = []string{kindTcppro} // no equivalent on the other sides
		case strings.HasPrefix(row.Scenario, "tls-"):
			want = []string{kindRaw, kindTcppro, kindGrpc} // gnet has no TLS; tcppro-netconn = tcppro over TLS
		}
		if strings.HasPrefix(row.Metric, hostPressureMetric) && hostCPUPressure() < 0 {
			continue // no PSI on this host: the row is empty
		}
		for _, k := range allSides {
			n := 0
			if slices.Contains(want, k) {
				n = 1
			}
			if len(row.Reps[k]) != n {
				t.Errorf("%s %s: %s reps %v, want %d", row.Scenario, row.Metric, k, row.Reps[k], n)
			}
		}
		if row.Target != "" && row.Result != "PASS" && row.Result != "FAIL" {
			t.Errorf("%s %s: result %q", row.Scenario, row.Metric, row.Result)
		}
		// tcppro against the other transport wherever both ran; in hb-N
		// no ratio against the sides without heartbeats.
		_, netconn := row.Ratios[ratioKey(kindTcpproNetConn)]
		if slices.Contains(want, kindTcpproNetConn) && !netconn && row.Values[kindTcpproNetConn] != 0 {
			t.Errorf("%s %s: no tcppro/tcppro-netconn ratio: %v", row.Scenario, row.Metric, row.Ratios)
		}
		if strings.HasPrefix(row.Scenario, "hb-") {
			for _, k := range []string{kindRaw, kindGnet} {
				if _, ok := row.Ratios[ratioKey(k)]; ok {
					t.Errorf("%s %s: ratio against %s, which has no heartbeats", row.Scenario, row.Metric, k)
				}
			}
		}
		if row.Scenario == "pipe-2x8" && row.Metric == "call latency p99 ms" {
			for _, k := range allSides {
				if v := row.Values[k]; v <= 0 {
					t.Errorf("pipe-2x8: %s p99 %v", k, v)
				}
			}
		}
	}
	if !strings.Contains(table.String(), "tcppro/tcppro-netconn") {
		t.Error("table has no tcppro/tcppro-netconn column")
	}
	for _, name := range []string{"rr-4", "pipe-2x8", "mem-40", "hb-40", "pong-1", "pong-3", "burst-4", "tls-rr-4"} {
		if !scenarios[name] {
			t.Errorf("no rows for scenario %s", name)
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v", err)
	}
	if _, ok := back["rows"]; !ok {
		t.Error("JSON report has no rows")
	}
	for _, k := range allSides {
		if !strings.Contains(js.String(), `"`+k+`": [`) {
			t.Errorf("JSON report has no per-rep values of %s", k)
		}
	}
	dir := t.TempDir()
	files, err := rep.WriteSVGs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(scenarios) {
		t.Errorf("%d SVG files for %d scenarios", len(files), len(scenarios))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := xml.Unmarshal(b, new(struct{})); err != nil || !bytes.Contains(b, []byte("<rect")) {
			t.Errorf("%s: not an SVG with bars: %v", f, err)
		}
	}
}

// TestInterrupt cancels a run in the middle of a measurement: Run must return
// promptly with every child stopped and reaped.
func TestInterrupt(t *testing.T) {
	cfg := tinyConfig()
	cfg.Duration = time.Minute
	cfg.Only = []string{"rr"}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(700*time.Millisecond, cancel)
	start := time.Now()
	rep, err := Run(ctx, cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
	if n := liveChildren(); n != 0 {
		t.Errorf("%d child processes left running", n)
	}
	if rep.Verdict != "ERROR" {
		t.Errorf("verdict %q after interrupt, want ERROR", rep.Verdict)
	}
}

func TestFillMsg(t *testing.T) {
	var a, b [msgSize]byte
	fillMsg(a[:], 3, 7)
	fillMsg(b[:], 3, 8)
	if a == b {
		t.Fatal("messages for different sequence numbers are equal")
	}
	if bytes.IndexByte(a[:], '\n') != msgSize-1 {
		t.Fatalf("message %q: want exactly one newline, at the end", a[:])
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	if _, err := procCPU(pid); err != nil {
		t.Error(err)
	}
	if rss, err := procRSS(pid); err != nil || rss <= 0 {
		t.Errorf("rss %d, %v", rss, err)
	}
	if n, err := procFDs(pid); err != nil || n < 3 {
		t.Errorf("fds %d, %v", n, err)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestLatHist(t *testing.T) {
	var h latHist
	for i := int64(1); i <= 10000; i++ {
		h.add(i * 1000) // 1µs .. 10ms
	}
	n, p50, p99, pmax := mergeLatHists([]*latHist{&h, nil})
	if n != 10000 || pmax != 10*time.Millisecond {
		t.Fatalf("n %d max %v", n, pmax)
	}
	for _, c := range []struct{ got, want time.Duration }{{p50, 5 * time.Millisecond}, {p99, 9900 * time.Microsecond}} {
		if d := float64(c.got-c.want) / float64(c.want); d < -0.04 || d > 0.04 {
			t.Errorf("quantile %v, want %v within 4%%", c.got, c.want)
		}
	}
	for _, ns := range []int64{0, 1, 31, 32, 33, 63, 64, 1000, 123456789, 1 << 39, 1 << 45} {
		b := latBucket(ns)
		if b < 0 || b >= latBuckets {
			t.Fatalf("latBucket(%d) = %d", ns, b)
		}
		if v := latValue(b); ns < 1<<39 && (float64(v) < float64(ns)*0.97 || float64(v) > float64(ns)*1.03+1) {
			t.Errorf("latValue(latBucket(%d)) = %d", ns, v)
		}
	}
}

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 100}, {0.99, 198}, {1, 200}, {0, 1}} {
		if got := quantile(d, c.q); got != c.want {
			t.Errorf("quantile(1..200, %v) = %v, want %v", c.q, got, c.want)
		}
	}
}

// TestBurstGapsRepeat checks that both sides draw the same gaps: the
// generator depends on the seed and the connection only.
func TestBurstGapsRepeat(t *testing.T) {
	cfg := DefaultConfig()
	a, b, other := newGapGen(&cfg, 7), newGapGen(&cfg, 7), newGapGen(&cfg, 8)
	same := true
	for range 20 {
		x, y, z := a.rng.Int64N(1000), b.rng.Int64N(1000), other.rng.Int64N(1000)
		if x != y {
			t.Fatalf("same seed and connection, different draws %d and %d", x, y)
		}
		same = same && x == z
	}
	if same {
		t.Error("connections 7 and 8 draw the same gaps")
	}
}

func TestValidateFamilies(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Only = []string{"pong", "burst", "tls"}
	if err := cfg.validate(); err != nil {
		t.Fatalf("valid families refused: %v", err)
	}
	cfg.Only = []string{"nope"}
	if err := cfg.validate(); err == nil {
		t.Fatal("unknown family accepted")
	}
	cfg.Only = nil
	cfg.Sides = []string{"gnet", "grpc"}
	if err := cfg.validate(); err != nil {
		t.Fatalf("valid sides refused: %v", err)
	}
	for _, sc := range cfg.scenarios() {
		want := []string{kindGrpc, kindGnet}
		switch {
		case sc.family == "pong":
			t.Errorf("%s: scenario kept without tcppro", sc.name)
		case sc.tls:
			want = []string{kindGrpc}
		}
		if !slices.Equal(sc.sides, want) {
			t.Errorf("%s: sides %v, want %v", sc.name, sc.sides, want)
		}
	}
	cfg.Sides = []string{"nope"}
	if err := cfg.validate(); err == nil {
		t.Fatal("unknown side accepted")
	}
}
