package core

import (
	"testing"
	"time"

	"github.com/tcppro/tcppro/session"
	"github.com/tcppro/tcppro/wire"
)

// TestRefusalSurvivesHandshakeTimeout: a refused connection whose
// transport has not written the refusal yet when HandshakeTimeout (the
// server's RejectLinger) passes must still send its ERROR: the client is
// told BUSY, not shown a bare close.
func TestRefusalSurvivesHandshakeTimeout(t *testing.T) {
	cfg := session.Config{HandshakeTimeout: 200 * time.Millisecond, LingerTimeout: 200 * time.Millisecond}
	c := New(Server, cfg, Options{}, &recorder{}, t0)
	c.Refuse(t0, wire.CodeBusy, "busy")
	c.Tick(t0 + int64(200*time.Millisecond)) // the writer did not run in time
	out := c.Transmit(t0+int64(201*time.Millisecond), nil, 64<<10)
	if len(out) == 0 {
		t.Fatalf("the refusal's ERROR was dropped (Err %v, Done %v)", c.Err(), c.Done())
	}
}

// TestRefusedConnectionIsBounded: a refused connection whose ERROR and FIN
// are written ends LingerTimeout after its FIN, HELLO or not.
func TestRefusedConnectionIsBounded(t *testing.T) {
	cfg := session.Config{HandshakeTimeout: 200 * time.Millisecond, LingerTimeout: 200 * time.Millisecond}
	c := New(Server, cfg, Options{}, &recorder{}, t0)
	c.Refuse(t0, wire.CodeBusy, "busy")
	b := c.Transmit(t0, nil, 64<<10)
	c.Written(t0, len(b))
	if !c.WantFin() {
		t.Fatal("no FIN wanted after the refusal's ERROR")
	}
	c.FinSent(t0, true)
	next := c.Next()
	if next == 0 || next > t0+int64(200*time.Millisecond) {
		t.Fatalf("Next after the FIN: %d, want at most LingerTimeout after it", next-t0)
	}
	c.Tick(next)
	if !c.Done() {
		t.Fatal("a refused connection outlived LingerTimeout after its FIN")
	}
}
