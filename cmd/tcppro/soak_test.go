package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/faultnet"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/verify"
)

// TestSoakShort is `tcppro verify --soak` made short for CI: 2 000
// connections over four client hosts for 120 s, with the faults that fit
// (cuts, freezes and kills: at least one of each), on the transport
// TCPPRO_TRANSPORT_AUTO selects (auto: CI runs the suite on both), with a
// heartbeat timeout of 5 s (the command's default is 3 s). The
// server is `tcppro serve` and the agents are client agents, both played
// by this test binary (TestMain). It needs the fault lab (root, ip, nft;
// TCPPRO_FAULTNET_REQUIRE=1 makes its absence a failure).
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes 120 s")
	}
	faultnet.ForTest(t)
	// A fixed schedule whose first three faults (one of each kind: the
	// kinds are drawn in blocks of three) fit in the run and drop
	// connections: a kill (0.8 s), a cut of 7.4 s and a freeze of 6.8 s,
	// longer than the heartbeat timeout; 19.9 s with the gaps, plus their
	// recoveries.
	const seed = 228
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rows, err := verify.RunSoak(ctx, verify.SoakOptions{
		Duration:  120 * time.Second,
		Conns:     2000,
		Rate:      100,
		Seed:      seed,
		Transport: netx.TransportAuto,
		// Its processes are -race builds sharing the machine with the
		// rest of the suite: a process not scheduled for a few seconds
		// there is the machine's doing, not a dead peer.
		HeartbeatTimeout: 5 * time.Second,
		Progress:         testLog{t},
		Command:          labCommand,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = verify.WriteTable(&b, rows)
	t.Log("\n" + b.String())
	for _, r := range rows {
		switch {
		case r.Error != "":
			t.Errorf("%s could not be judged: %s", r.Scenario, r.Error)
		case !r.Pass:
			t.Errorf("%s FAILED: %s: %s", r.Scenario, r.Measured, r.Detail)
		}
	}
	for _, r := range rows {
		if r.Scenario != "soak-faults" {
			continue
		}
		var n, cuts, freezes, kills int
		if _, err := fmt.Sscanf(r.Measured, "%d faults (%d cuts, %d freezes, %d kills)", &n, &cuts, &freezes, &kills); err != nil {
			t.Fatalf("soak-faults measured %q: %v", r.Measured, err)
		}
		if cuts == 0 || freezes == 0 || kills == 0 {
			t.Errorf("not every kind of fault ran: %s", r.Measured)
		}
		// The cut and the freeze outlast the heartbeat timeout: the
		// server finds the host's connections dead.
		most := 0
		for _, m := range deadPeersRE.FindAllStringSubmatch(r.Detail, -1) {
			n, _ := strconv.Atoi(m[1])
			most = max(most, n)
		}
		if most < 400 {
			t.Errorf("no fault made the server find most of a host's 500 connections dead (at most %d):\n%s", most, r.Detail)
		}
	}
}

// deadPeersRE finds the server's dead peers in a fault's line.
var deadPeersRE = regexp.MustCompile(`the server: (\d+) dead peers`)
