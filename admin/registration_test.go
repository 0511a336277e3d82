package admin_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tcppro/tcppro/admin"
)

// TestRegistration: with Config.Registration, /readyz stays 200 while the
// instance is not registered (a registry outage must not take the fleet
// out of service) and says so; /statusz and /metrics show it too.
func TestRegistration(t *testing.T) {
	var mu sync.Mutex
	st := admin.RegistrationStatus{Registry: "etcd://127.0.0.1:2379/svc/127.0.0.1:7420/x", Attempts: 3, Failures: 2, Err: errors.New("etcd grant: context deadline exceeded")}
	e := startEnv(t, envOpts{admin: func(c *admin.Config) {
		c.Registration = func() admin.RegistrationStatus {
			mu.Lock()
			defer mu.Unlock()
			return st
		}
	}})
	r := e.get("/readyz")
	e.expect(r, 200, "text/plain")
	if r.body != "ready\nnot registered: etcd://127.0.0.1:2379/svc/127.0.0.1:7420/x: etcd grant: context deadline exceeded\n" {
		t.Errorf("/readyz body %q", r.body)
	}
	sz := decode[map[string]any](t, e.get("/statusz"))
	reg, _ := sz["registration"].(map[string]any)
	if reg == nil || reg["registered"] != false || reg["failures"] != 2.0 || !strings.Contains(reg["error"].(string), "deadline") {
		t.Errorf("/statusz registration %v", sz["registration"])
	}
	m := gather(t, e.m)
	for _, want := range []string{"tcppro_registered 0", "tcppro_registration_attempts_total 3", "tcppro_registration_failures_total 2"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	mu.Lock()
	st.Registered, st.Err, st.Attempts = true, nil, 4
	mu.Unlock()
	if r := e.get("/readyz"); r.body != "ready\nregistered: etcd://127.0.0.1:2379/svc/127.0.0.1:7420/x\n" {
		t.Errorf("/readyz body %q", r.body)
	}
	if m := gather(t, e.m); !strings.Contains(m, "tcppro_registered 1\n") {
		t.Errorf("/metrics lacks tcppro_registered 1")
	}
	e.srv.SetOffline(true)
	r = e.get("/readyz")
	e.expect(r, 503, "text/plain")
	if r.body != "not ready: offline\nregistered: etcd://127.0.0.1:2379/svc/127.0.0.1:7420/x\n" {
		t.Errorf("/readyz body %q", r.body)
	}
}

// TestNoRegistration: without Config.Registration nothing changes.
func TestNoRegistration(t *testing.T) {
	e := startEnv(t, envOpts{})
	if r := e.get("/readyz"); r.body != "ready\n" {
		t.Errorf("/readyz body %q", r.body)
	}
	if m := gather(t, e.m); strings.Contains(m, "tcppro_registration") || strings.Contains(m, "tcppro_registered") {
		t.Error("registration metrics without a registration")
	}
	if sz := decode[map[string]any](t, e.get("/statusz")); sz["registration"] != nil {
		t.Errorf("/statusz registration %v", sz["registration"])
	}
}
