// Package upgrade replaces a running process by a new copy of its
// executable without closing its listening sockets: the zero-downtime
// restart of `tcppro serve`. It is a thin layer over
// github.com/cloudflare/tableflip.
//
// The first process creates its listeners itself, through the function
// given to Listen (tcppro's netx: SO_REUSEADDR, the port policy). On
// Upgrade (tcppro serve: on SIGHUP), a new process is started from the
// same executable path, with the same arguments, environment and working
// directory; it inherits duplicates of the listening sockets, so the
// sockets stay open throughout and no connect is refused. Listen in the
// new process returns the inherited listener of the same address instead
// of creating one. When the new process calls Ready, the old one's
// Upgrade returns nil and its Exit channel closes: it then drains and
// exits, while the new one accepts on the same sockets.
//
// A new process that exits, or does not call Ready within Config.Timeout,
// is killed; Upgrade then returns an error matching ErrFailed and the old
// process goes on serving as if nothing had happened. One upgrade runs at
// a time (ErrInProgress), and a new process cannot be upgraded before the
// one it replaced has exited (ErrParentRunning).
//
// Nothing here needs a supervisor or a terminal: a process that was not
// started by an upgrade simply has nothing to inherit. The PID file
// (Config.PIDFile) follows the process that serves, for systemd's
// PIDFile=. tableflip supports every Unix; elsewhere New returns an
// Upgrader that listens directly and refuses to upgrade (ErrUnsupported).
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
)

// DefaultTimeout is the default bound on a new process becoming ready.
const DefaultTimeout = 30 * time.Second

// Config configures an Upgrader. The zero value of every field means its
// default.
type Config struct {
	// PIDFile, when set, is where Ready writes the process id, atomically
	// (a new file renamed over the old one), so that it names the process
	// that serves across upgrades: systemd's PIDFile= then follows the
	// main PID. A relative path is taken from the first process's working
	// directory. Default "": none.
	PIDFile string

	// Timeout bounds the time from starting a new process to its Ready.
	// Past it the new process is killed and the upgrade fails. Default
	// DefaultTimeout (30s).
	Timeout time.Duration

	// Logger receives the upgrade's logs. Default slog.Default().
	Logger *slog.Logger
}

var (
	// ErrInProgress is returned by Upgrade while another upgrade runs.
	ErrInProgress = errors.New("upgrade: an upgrade is already in progress")
	// ErrParentRunning is returned by Upgrade in a new process whose
	// predecessor has not exited yet (it is still draining).
	ErrParentRunning = errors.New("upgrade: the process this one replaced has not exited yet")
	// ErrNotReady is returned by Upgrade before Ready.
	ErrNotReady = errors.New("upgrade: this process is not ready yet")
	// ErrStopped is returned by Upgrade after Stop or after a successful
	// upgrade.
	ErrStopped = errors.New("upgrade: this process is stopping or has been replaced")
	// ErrFailed is matched (errors.Is) by the error of an upgrade whose new
	// process could not start, exited or did not become ready in time.
	ErrFailed = errors.New("upgrade: the new process did not become ready")
	// ErrUnsupported is returned by Upgrade where tableflip does not run
	// (Windows).
	ErrUnsupported = errors.New("upgrade: not supported on this platform")
)

// Upgrader creates or inherits listeners and runs upgrades. Its methods
// are safe for concurrent use. Only one Upgrader can exist in a process.
type Upgrader struct {
	cfg Config
	log *slog.Logger
	tf  *tableflip.Upgrader // nil where unsupported

	ready      atomic.Bool
	upgrading  atomic.Bool
	stopped    atomic.Bool
	parentGone chan struct{} // closed when the process this one replaced has exited
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New returns the process's Upgrader. In a process started by an upgrade
// it takes over the listeners passed by the old process. Stop releases it.
func New(cfg Config) (*Upgrader, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("upgrade: Timeout %v: must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	u := &Upgrader{cfg: cfg, log: cfg.Logger, parentGone: make(chan struct{})}
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: cfg.Timeout, PIDFile: cfg.PIDFile})
	if errors.Is(err, tableflip.ErrNotSupported) {
		close(u.parentGone)
		u.cancel = func() {}
		return u, nil
	}
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	u.tf = tf
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	if !tf.HasParent() {
		close(u.parentGone)
		return u, nil
	}
	u.log.Info("upgrade: started by an upgrade; taking over the listeners", "pid", os.Getpid(), "parent_pid", os.Getppid())
	u.wg.Go(func() {
		err := tf.WaitForParent(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			u.log.Warn("upgrade: the replaced process ended badly", "err", err)
		} else {
			u.log.Info("upgrade: the replaced process has exited", "pid", os.Getpid())
		}
		close(u.parentGone)
	})
	return u, nil
}

// Inherited reports whether this process was started by an upgrade.
func (u *Upgrader) Inherited() bool { return u.tf != nil && u.tf.HasParent() }

// Listen returns the listener on addr passed by the process this one
// replaced or, when there is none (a first start, or an address the old
// process did not have), the one listen creates. The listener is passed on
// to the next process on Upgrade. listen's error is returned as it is, so
// callers can test it with errors.Is/As.
func (u *Upgrader) Listen(addr string, listen func() (net.Listener, error)) (net.Listener, error) {
	if u.tf == nil {
		return listen()
	}
	var lerr error
	ln, err := u.tf.ListenWithCallback("tcp", addr, func(string, string) (net.Listener, error) {
		ln, err := listen()
		lerr = err
		return ln, err
	})
	if lerr != nil {
		return nil, lerr
	}
	if err != nil {
		return nil, fmt.Errorf("upgrade: listener %s: %w", addr, err)
	}
	return ln, nil
}

// Ready tells the process this one replaces, if any, that this one serves:
// it writes the PID file and makes the old process's Upgrade return nil.
// Listeners inherited and not taken by Listen are closed.
func (u *Upgrader) Ready() error {
	if u.tf == nil {
		u.ready.Store(true)
		if u.cfg.PIDFile != "" {
			return os.WriteFile(u.cfg.PIDFile, fmt.Appendf(nil, "%d", os.Getpid()), 0o644)
		}
		return nil
	}
	if err := u.tf.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	u.ready.Store(true)
	return nil
}

// Upgrade starts a new process and waits until it is ready (nil: this
// process should now drain and exit; Exit is closed) or has failed (an
// error matching ErrFailed; the new process is killed and this one goes on
// serving). It refuses with ErrInProgress, ErrParentRunning, ErrNotReady,
// ErrStopped or ErrUnsupported without starting anything.
func (u *Upgrader) Upgrade() error {
	switch {
	case u.tf == nil:
		return ErrUnsupported
	case u.stopped.Load():
		return ErrStopped
	case !u.ready.Load():
		return ErrNotReady
	}
	select {
	case <-u.parentGone:
	default:
		return ErrParentRunning
	}
	if !u.upgrading.CompareAndSwap(false, true) {
		return ErrInProgress
	}
	defer u.upgrading.Store(false)
	select {
	case <-u.tf.Exit():
		return ErrStopped
	default:
	}
	if err := u.tf.Upgrade(); err != nil {
		if u.stopped.Load() {
			return fmt.Errorf("%w (%v)", ErrStopped, err)
		}
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	return nil
}

// Exit is closed when a new process has taken over after a successful
// Upgrade (and after Stop): this process should then drain and exit. It
// is never closed where upgrades are unsupported.
func (u *Upgrader) Exit() <-chan struct{} {
	if u.tf == nil {
		return nil
	}
	return u.tf.Exit()
}

// UpgradeOn runs Upgrade on each of the signals sigs, logging the outcome;
// a signal that arrives while an upgrade runs is refused and logged. The
// returned function stops listening for the signals and waits for a
// running upgrade (Stop interrupts one).
func (u *Upgrader) UpgradeOn(sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case sig := <-ch:
				if u.upgrading.Load() {
					u.log.Warn("upgrade refused", "signal", sig.String(), "err", ErrInProgress)
					continue
				}
				wg.Go(func() { u.upgradeLogged(sig) })
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			wg.Wait()
		})
	}
}

func (u *Upgrader) upgradeLogged(sig os.Signal) {
	u.log.Info("upgrade: starting a new process", "pid", os.Getpid(), "signal", sig.String(), "executable", os.Args[0], "timeout", u.cfg.Timeout)
	start := time.Now()
	err := u.Upgrade()
	switch {
	case err == nil:
		u.log.Info("upgrade: the new process is ready; this one drains and exits", "pid", os.Getpid(), "took", time.Since(start).Round(time.Millisecond))
	case errors.Is(err, ErrFailed):
		u.log.Error("upgrade failed; this process keeps serving", "pid", os.Getpid(), "err", err)
	default:
		u.log.Warn("upgrade refused", "signal", sig.String(), "err", err)
	}
}

// Stop ends upgrades for good: an upgrade in progress is interrupted (its
// new process killed), and the duplicates of the listeners kept for the
// next process are closed, so that closing the listeners closes the
// sockets. Call it when the process shuts down other than by an upgrade.
func (u *Upgrader) Stop() {
	u.stopped.Store(true)
	if u.tf != nil {
		u.tf.Stop()
	}
	u.cancel()
	u.wg.Wait()
}
