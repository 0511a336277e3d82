package admin

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegistrationStatus is the instance's registration in a service registry
// (tcppro serve --register), as the plane shows it. The admin package
// knows no registry: the program that registers the instance fills this
// in (Config.Registration).
type RegistrationStatus struct {
	// Registry names where the instance is registered (the key, or the
	// target), for people.
	Registry string
	// Registered reports whether the registry last confirmed the entry.
	Registered bool
	// Attempts counts tries to create the entry; Failures the requests
	// to the registry that failed.
	Attempts uint64
	Failures uint64
	// Err is the last failure since the entry was last confirmed, or nil.
	Err error
}

var (
	descRegistered           = prometheus.NewDesc("tcppro_registered", "1 when the instance's entry in the service registry is confirmed, else 0 (present only when the instance registers itself).", nil, nil)
	descRegistrationAttempts = prometheus.NewDesc("tcppro_registration_attempts_total", "Tries to create the instance's entry in the service registry.", nil, nil)
	descRegistrationFailures = prometheus.NewDesc("tcppro_registration_failures_total", "Requests to the service registry that failed (create, keepalive, check), and entries found gone.", nil, nil)
)

// SetRegistration makes the metrics export the registration f reports
// (tcppro_registered, tcppro_registration_attempts_total,
// tcppro_registration_failures_total), read at scrape time. admin.New
// calls it with Config.Registration.
func (m *Metrics) SetRegistration(f func() RegistrationStatus) {
	if f == nil {
		m.registration.Store(nil)
		return
	}
	m.registration.Store(&f)
}

func (m *Metrics) collectRegistration(ch chan<- prometheus.Metric) {
	f := m.registration.Load()
	if f == nil {
		return
	}
	st := (*f)()
	ch <- prometheus.MustNewConstMetric(descRegistered, prometheus.GaugeValue, b2f(st.Registered))
	ch <- prometheus.MustNewConstMetric(descRegistrationAttempts, prometheus.CounterValue, float64(st.Attempts))
	ch <- prometheus.MustNewConstMetric(descRegistrationFailures, prometheus.CounterValue, float64(st.Failures))
}

// registrationJSON is the registration in /statusz.
type registrationJSON struct {
	Registry   string `json:"registry"`
	Registered bool   `json:"registered"`
	Attempts   uint64 `json:"attempts"`
	Failures   uint64 `json:"failures"`
	Error      string `json:"error,omitempty"`
}

// registration returns the registration's status, or nil without one.
func (a *Server) registration() *RegistrationStatus {
	if a.cfg.Registration == nil {
		return nil
	}
	st := a.cfg.Registration()
	return &st
}

func toRegistrationJSON(st *RegistrationStatus) *registrationJSON {
	if st == nil {
		return nil
	}
	j := &registrationJSON{Registry: st.Registry, Registered: st.Registered, Attempts: st.Attempts, Failures: st.Failures}
	if st.Err != nil {
		j.Error = st.Err.Error()
	}
	return j
}

// registrationLine is /readyz's line about the registration.
func registrationLine(st *RegistrationStatus) string {
	switch {
	case st.Registered:
		return "registered: " + st.Registry
	case st.Err != nil:
		return "not registered: " + st.Registry + ": " + st.Err.Error()
	}
	return "not registered: " + st.Registry
}
