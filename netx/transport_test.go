package netx

import (
	"runtime"
	"testing"
)

// TestEventLoopChoice: what each transport picks for a plain TCP
// connection and for another (TLS, a wrapped net.Conn), with and without
// TransportEnv.
func TestEventLoopChoice(t *testing.T) {
	linux := runtime.GOOS == "linux"
	for _, tc := range []struct {
		t     Transport
		env   string
		plain bool
		want  bool
	}{
		{TransportAuto, "", true, linux},
		{"", "", true, linux}, // the zero value is auto
		{TransportAuto, "", false, false},
		{TransportAuto, "netconn", true, false},
		{TransportAuto, "epoll", true, linux},
		{TransportAuto, "epoll", false, false},
		{TransportEpoll, "", true, linux},
		{TransportEpoll, "netconn", true, linux}, // explicit beats the variable
		{TransportNetConn, "", true, false},
		{TransportNetConn, "epoll", true, false},
	} {
		t.Setenv(TransportEnv, tc.env)
		if got := tc.t.EventLoop(tc.plain); got != tc.want {
			t.Errorf("Transport %q, %s=%q, plain %v: EventLoop = %v, want %v", tc.t, TransportEnv, tc.env, tc.plain, got, tc.want)
		}
	}
}
