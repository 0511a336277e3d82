package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/tcppro/tcppro/internal/upgrade"
	"github.com/tcppro/tcppro/server"
)

// upgradeFlags are serve's flags for the zero-downtime restart: on SIGHUP,
// tcppro serve starts its executable again with the same arguments and
// environment; the new process inherits the service and admin listeners,
// and once it is ready the old one drains (as on SIGTERM) and exits. See
// package internal/upgrade.
type upgradeFlags struct {
	pidFile *string
	timeout *time.Duration
}

func defineUpgradeFlags(fs *flag.FlagSet) upgradeFlags {
	return upgradeFlags{
		pidFile: fs.String("pid-file", "", "write the serving process's id to `FILE` once it is ready, and again after each upgrade (for systemd's PIDFile=: SIGHUP changes the main PID)"),
		timeout: fs.Duration("upgrade-timeout", upgrade.DefaultTimeout, "on SIGHUP a new process inherits the listeners; if it has not become ready within this bound it is killed and this process keeps serving"),
	}
}

func (f upgradeFlags) validate() error {
	if *f.timeout <= 0 {
		return fmt.Errorf("--upgrade-timeout=%v: must be positive", *f.timeout)
	}
	return nil
}

// registerWait bounds how long a process started by an upgrade waits for
// its etcd key before it reports ready: 2 s, or half of --upgrade-timeout
// when that is shorter, so that an etcd that does not answer delays the
// upgrade without failing it.
func (f upgradeFlags) registerWait() time.Duration { return min(2*time.Second, *f.timeout/2) }

// start creates the process's upgrader.
func (f upgradeFlags) start(log *slog.Logger) (*upgrade.Upgrader, error) {
	return upgrade.New(upgrade.Config{PIDFile: *f.pidFile, Timeout: *f.timeout, Logger: log})
}

// waitListening waits until srv, served on its own goroutine, counts its
// listener (its readiness says "not listening" until then), or returns
// the error Serve returned, from errc.
func waitListening(srv *server.Server, errc <-chan error) error {
	select {
	case <-srv.Listening():
		return nil
	case err := <-errc:
		return err
	}
}
