package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
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
	os.Exit(m.Run())
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func tinyConfig() Config {
	c := QuickConfig()
	c.Duration = 300 * time.Millisecond
	c.Warmup = 100 * time.Millisecond
	c.RRConns = []int{4}
	c.PipeConns = 2
	c.PipeDepth = 8
	c.MemConns = 40
	c.MemSettle = 50 * time.Millisecond
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
	if len(rep.Rows) != 5+5+8 {
		t.Errorf("%d rows, want 18", len(rep.Rows))
	}
	for _, row := range rep.Rows {
		if len(row.RawReps) != 1 || len(row.TcpproReps) != 1 {
			t.Errorf("%s %s: reps raw %v tcppro %v, want one each", row.Scenario, row.Metric, row.RawReps, row.TcpproReps)
		}
		if row.Target != "" && row.Result != "PASS" && row.Result != "FAIL" {
			t.Errorf("%s %s: result %q", row.Scenario, row.Metric, row.Result)
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
