package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/verify"
)

// The fleet rows of tcppro verify, as Go tests: their servers are `tcppro
// serve` processes with --register and SIGHUP upgrades, which this test
// binary plays (TestMain), and so are the client agents. They need the
// fault lab (root, ip, nft; TCPPRO_FAULTNET_REQUIRE=1 makes its absence a
// failure) and, for some rows, etcd or dnsmasq (TCPPRO_ETCD_REQUIRE=1 and
// TCPPRO_DNS_REQUIRE=1 likewise).

// labCommand runs this test binary as tcppro inside host h.
func labCommand(ctx context.Context, h *faultnet.Host, args ...string) *exec.Cmd {
	cmd := h.Command(ctx, os.Args[0], args...)
	cmd.Env = append(verify.CleanEnv(os.Environ()), "TCPPRO_TEST_MAIN=1",
		// A -race build would sleep 1 s at exit, which counts in a
		// draining server's exit.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// requireEnv says which variable turns a missing program into a failure.
var requireEnv = map[string]string{"etcd": "TCPPRO_ETCD_REQUIRE", "dnsmasq": "TCPPRO_DNS_REQUIRE"}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestFleetScenarios(t *testing.T) {
	for _, s := range verify.FleetScenarios() {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			faultnet.ForTest(t)
			// A bound on the whole row: a stuck agent or server fails it
			// rather than go test's 10-minute timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			r, err := verify.Run(ctx, s, verify.Options{Progress: testLog{t}, Command: labCommand})
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			_ = verify.WriteTable(&b, []verify.Result{r})
			t.Log("\n" + b.String())
			if r.Skipped != "" {
				for _, need := range s.Needs {
					if env := requireEnv[need]; os.Getenv(env) == "1" {
						t.Fatalf("%s=1 but the row was skipped: %s", env, r.Skipped)
					}
				}
				t.Skip(r.Skipped)
			}
			if r.Error != "" {
				t.Fatalf("%s could not run: %s", s.Name, r.Error)
			}
			if !r.Pass {
				t.Errorf("%s FAILED: %s", s.Name, r.Detail)
			}
		})
	}
}
