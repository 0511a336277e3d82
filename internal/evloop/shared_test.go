//go:build linux

package evloop

import (
	"errors"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/conntest"
	"github.com/tcppro/tcppro/internal/core"
	"github.com/tcppro/tcppro/session"
)

// TestSharedLoops: every hold gets the same loops; they run while one hold
// remains, stop with the last, and a later hold starts new ones.
func TestSharedLoops(t *testing.T) {
	var a, b SharedRef
	la, err := a.Get()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Get()
	if err != nil {
		t.Fatal(err)
	}
	if la != lb {
		t.Fatal("two holds got different loops")
	}
	if again, _ := a.Get(); again != la {
		t.Fatal("a second Get of the same hold got other loops")
	}

	a.Close()
	a.Close() // idempotent: must not let go of b's hold
	if _, err := a.Get(); !errors.Is(err, ErrLoopsClosed) {
		t.Fatalf("Get after Close: %v, want ErrLoopsClosed", err)
	}
	// b's hold keeps the loops running: a connection on them works.
	cli, srv := conntest.TCPPair(t, 0)
	s := startEv(t, lb, srv, core.Server, session.Config{}, nil)
	c := startEv(t, lb, cli, core.Client, session.Config{}, nil)
	if got, err := c.Echo(t, []byte("ping"), 10*time.Second); err != nil || string(got) != "ping" {
		t.Fatalf("call on the shared loops with one hold left: %q, %v", got, err)
	}

	b.Close() // the last hold: the loops close, and their connections
	conntest.WaitClosed(t, s.Ended, 5*time.Second, "server connection closed with the shared loops")
	conntest.WaitClosed(t, c.Ended, 5*time.Second, "client connection closed with the shared loops")

	var d SharedRef
	ld, err := d.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ld == la {
		t.Fatal("a hold taken after the last one went got the closed loops")
	}
}
