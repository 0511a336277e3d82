package client_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
	"github.com/tcppro/tcppro/netx"
	"github.com/tcppro/tcppro/server"
)

// readers counts the goroutines reading a connection of the net.Conn
// transport.
func readers() int {
	buf := make([]byte, 8<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "internal/netconn.(*Conn).Run(")
}

// TestTransportSelection: on the event loop a client's connections have no
// reader goroutine; with TransportNetConn each has one. Calls work either
// way. (The servers run on the event loop, so their connections add no
// reader.)
func TestTransportSelection(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the event loop needs Linux")
	}
	const servers = 20
	var addrs []string
	for range servers {
		_, a := startServer(t, "", server.Config{Transport: netx.TransportEpoll}, echo)
		addrs = append(addrs, a)
	}
	for _, tc := range []struct {
		transport netx.Transport
		readers   int
	}{
		{netx.TransportEpoll, 0},
		{netx.TransportAuto, 0}, // plain TCP on Linux: the event loop
		{netx.TransportNetConn, servers},
	} {
		t.Run(string(tc.transport), func(t *testing.T) {
			t.Setenv(netx.TransportEnv, "") // auto is the default here
			before := readers()
			c := newClient(t, client.Config{Addrs: addrs, Transport: tc.transport})
			for i := range 4 * servers {
				if _, err := c.Call(context.Background(), "echo", fmt.Appendf(nil, "call %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			// The calls need only some endpoints ready; the others may
			// still be dialling. Count readers once every one is up.
			var eps []client.EndpointStats
			waitFor(t, 10*time.Second, func() bool {
				eps = c.Endpoints()
				for _, e := range eps {
					if e.State != "ready" {
						return false
					}
				}
				return true
			})
			if got := readers() - before; got != tc.readers {
				t.Errorf("%d connections on %s: %d reader goroutines, want %d", len(eps), tc.transport, got, tc.readers)
			}
			c.Close()
		})
	}
}
