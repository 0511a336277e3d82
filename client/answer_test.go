package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/server"
	"github.com/tcppro/tcppro/session"
)

// This test runs for about 23 s, mostly idle: its file comes first so
// that it starts first among the parallel tests, and the others run
// alongside it.

// TestAnswerReadWhenItArrives guards issue case 4: after the connection
// has been idle for longer than the heartbeat interval (PINGs and PONGs
// exchanged meanwhile), two concurrent calls are answered at once: each
// answer is read as soon as it arrives, not at the next heartbeat.
func TestAnswerReadWhenItArrives(t *testing.T) {
	t.Parallel()
	cfg := session.Config{HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second}
	_, addr := startServer(t, "", server.Config{Session: cfg}, echo)
	c := newClient(t, client.Config{Addrs: []string{addr}, Session: cfg})
	if _, err := c.Call(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	const bursts = 20
	var worst time.Duration
	for i := 0; i < bursts; i++ {
		// The idle gap is the scenario, not synchronisation: longer than
		// the interval, and a little longer each time so that the calls
		// meet the heartbeat at different phases.
		time.Sleep(cfg.HeartbeatInterval + time.Duration(50+10*i)*time.Millisecond)
		var wg sync.WaitGroup
		lat := make([]time.Duration, 2)
		for k := range lat {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if _, err := c.Call(context.Background(), "echo", []byte("x")); err != nil {
					t.Errorf("burst %d: %v", i, err)
				}
				lat[k] = time.Since(start)
			}()
		}
		wg.Wait()
		worst = max(worst, lat[0], lat[1])
	}
	t.Logf("worst call latency over %d bursts after idle gaps: %v", bursts, worst)
	if worst >= 100*time.Millisecond {
		t.Fatalf("a call after an idle gap took %v on loopback, want well under 100ms", worst)
	}
	if st := c.Stats(); st.Dials != 1 || st.DeadPeers != 0 {
		t.Fatalf("stats %+v: the connection did not stay up", st)
	}
}
