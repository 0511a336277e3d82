package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The isolation test measures the admin plane from another process, as a
// prober (kubelet, Prometheus, curl) would: a prober in the test's own
// process would compete with the spinning handlers for the same
// scheduler, and measure itself as much as the plane.
const (
	probeEnv      = "TCPPRO_ADMIN_PROBE"       // the base URL; set: this binary is the prober
	probeStepsEnv = "TCPPRO_ADMIN_PROBE_STEPS" // "METHOD PATH" steps, separated by ";"
)

// probeResult is one request the prober made.
type probeResult struct {
	Method, Path string
	Code         int
	ContentType  string
	Body         string
	Elapsed      time.Duration
	Err          string
}

// probeMain runs the steps in order, each timed from sending the request
// to having read the whole answer, and prints the results as JSON.
func probeMain() int {
	base := os.Getenv(probeEnv)
	hc := &http.Client{Timeout: 10 * time.Second}
	var out []probeResult
	for _, step := range strings.Split(os.Getenv(probeStepsEnv), ";") {
		method, path, _ := strings.Cut(step, " ")
		r := probeResult{Method: method, Path: path}
		t0 := time.Now()
		req, err := http.NewRequest(method, base+path, nil)
		if err == nil {
			var res *http.Response
			if res, err = hc.Do(req); err == nil {
				var b []byte
				b, err = io.ReadAll(res.Body)
				res.Body.Close()
				r.Code, r.ContentType, r.Body = res.StatusCode, res.Header.Get("Content-Type"), string(b)
			}
		}
		r.Elapsed = time.Since(t0)
		if err != nil {
			r.Err = err.Error()
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// probe runs steps against base from a separate process.
func probe(t *testing.T, base string, steps ...string) []probeResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), probeEnv+"="+base, probeStepsEnv+"="+strings.Join(steps, ";"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("prober: %v\n%s", err, stderr.String())
	}
	var res []probeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("prober output %q: %v", out, err)
	}
	return res
}
