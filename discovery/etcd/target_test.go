package etcd_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/discovery"
	"github.com/tcppro/tcppro/discovery/etcd"
	"github.com/tcppro/tcppro/session"
)

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		target    string
		endpoints string
		prefix    string
	}{
		{"etcd://127.0.0.1:2379/services/echo", "127.0.0.1:2379", "/services/echo/"},
		{"etcd://127.0.0.1:2379,127.0.0.2:2380/services/echo/", "127.0.0.1:2379,127.0.0.2:2380", "/services/echo/"},
		{"etcd://localhost/svc", "localhost:2379", "/svc/"},
		{"etcd://[::1]:2379//a/b", "[::1]:2379", "/a/b/"},
	} {
		r, err := discovery.New(tc.target, discovery.Options{})
		if err != nil {
			t.Errorf("%s: %v", tc.target, err)
			continue
		}
		er := r.(*etcd.Resolver)
		if got := strings.Join(er.Endpoints(), ","); got != tc.endpoints || er.Prefix() != tc.prefix {
			t.Errorf("%s: endpoints %s prefix %s, want %s %s", tc.target, got, er.Prefix(), tc.endpoints, tc.prefix)
		}
	}
	for _, bad := range []string{
		"etcd://127.0.0.1:2379", "etcd://127.0.0.1:2379/", "etcd:///svc", "etcd://127.0.0.1:0/svc",
		"etcd://127.0.0.1:99999/svc", "etcd://:2379/svc", "etcd://a,,b/svc",
	} {
		if _, err := discovery.New(bad, discovery.Options{}); !errors.Is(err, discovery.ErrBadTarget) {
			t.Errorf("%s: %v, want ErrBadTarget", bad, err)
		}
	}
	if _, err := etcd.NewResolver("dns:///x:1", discovery.Options{}); !errors.Is(err, discovery.ErrBadTarget) {
		t.Errorf("NewResolver of a dns target: %v, want ErrBadTarget", err)
	}
	if _, err := etcd.NewResolver("etcd://127.0.0.1/x", discovery.Options{Timeout: -1}); !errors.Is(err, discovery.ErrBadOptions) {
		t.Errorf("NewResolver with a negative timeout: %v, want ErrBadOptions", err)
	}
}

func TestRegisterValidation(t *testing.T) {
	const target = "etcd://127.0.0.1:2379/svc"
	for _, tc := range []struct {
		target, addr string
		opts         etcd.RegisterOptions
		field        string
	}{
		{target, "127.0.0.1", etcd.RegisterOptions{}, "Addr"},
		{target, "0.0.0.0:7420", etcd.RegisterOptions{}, "Addr"},
		{target, "[::]:7420", etcd.RegisterOptions{}, "Addr"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{TTL: 500 * time.Millisecond}, "TTL"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{TTL: -time.Second}, "TTL"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{TTL: 2 * time.Second, Timeout: 2 * time.Second}, "Timeout"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{DeregisterTimeout: -1}, "DeregisterTimeout"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{BackoffMin: time.Second, BackoffMax: time.Millisecond}, "BackoffMax"},
		{target, "127.0.0.1:7420", etcd.RegisterOptions{InstanceID: "a/b"}, "InstanceID"},
	} {
		_, err := etcd.Register(tc.target, tc.addr, tc.opts)
		var ce *session.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("Register(%q, %+v) = %v, want a ConfigError on %s", tc.addr, tc.opts, err, tc.field)
		} else if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("error %q does not name %s", err, tc.field)
		}
	}
	for _, bad := range []string{"dns:///x:1", "etcd://127.0.0.1:2379", "127.0.0.1:2379/svc"} {
		if _, err := etcd.Register(bad, "127.0.0.1:7420", etcd.RegisterOptions{}); !errors.Is(err, discovery.ErrBadTarget) {
			t.Errorf("Register(%q) = %v, want ErrBadTarget", bad, err)
		}
	}
}
