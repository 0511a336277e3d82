package faultnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Host is one network namespace of a lab.
type Host struct {
	lab   *Lab
	name  string
	netns string

	mu sync.RWMutex // guards fd
	fd int          // open namespace file; -1 once the lab is closed

	links []*Link // guarded by lab.mu
}

// Name returns the host's name as given to AddHost.
func (h *Host) Name() string { return h.name }

// Netns returns the name of the host's network namespace, as `ip netns`
// knows it.
func (h *Host) Netns() string { return h.netns }

// Addr returns the host's address on its first link, or the zero Addr if it
// has none yet. Link.Addr gives the address on a given link.
func (h *Host) Addr() netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if len(h.links) == 0 {
		return netip.Addr{}
	}
	return h.links[0].Addr(h)
}

func (h *Host) closeFD() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd >= 0 {
		_ = unix.Close(h.fd)
		h.fd = -1
	}
}

// Do runs fn on a new goroutine locked to an OS thread that has entered the
// host's network namespace, and returns fn's error. A panic in fn is raised
// again in the caller.
//
// Sockets fn creates belong to the host's namespace for good, so listeners
// and connections made in fn can be used from any goroutine afterwards.
// Goroutines fn starts do not run in the namespace; neither does name
// resolution, so use literal addresses. When fn returns the thread goes back
// to its namespace (or is discarded if it cannot), so nothing else ever runs
// in the lab by accident.
func (h *Host) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var res result
		restored := true
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
			// Otherwise the goroutine ends locked, and the runtime
			// discards the thread with it.
			done <- res
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res.err = fmt.Errorf("faultnet: opening current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := h.enter(); err != nil {
			res.err = err
			return
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					res.panicked, res.value = true, p
				}
			}()
			res.err = fn()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			restored = false
		}
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

// enter moves the calling (locked) thread into the host's namespace.
func (h *Host) enter() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.fd < 0 {
		return ErrClosed
	}
	if err := unix.Setns(h.fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("faultnet: entering namespace %s: %w", h.netns, err)
	}
	return nil
}

// Listen is net.Listen inside the host's namespace.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// Dial is net.Dialer.DialContext inside the host's namespace. address must
// be a literal IP and port.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Command returns a command that runs program name inside the host's
// namespace, through `ip netns exec` (which execs name, so the command's
// pid is the program's). ctx kills it as in exec.CommandContext. On a closed
// lab, Start fails with ErrClosed.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.lab.run.ipPath, append([]string{"netns", "exec", h.netns, name}, args...)...)
	h.lab.mu.Lock()
	closed := h.lab.closed
	h.lab.mu.Unlock()
	if closed {
		cmd.Err = ErrClosed
	}
	return cmd
}

// BlackholeSYN makes the host silently drop incoming TCP SYNs to port, or
// to every port if port is 0, on all its links: a connect to it hangs until
// the dialer's own timeout instead of being refused. Established
// connections are not affected. Restore undoes it.
func (h *Host) BlackholeSYN(port uint16) error {
	rule := "tcp flags & (fin|syn|rst|ack) == syn"
	if port != 0 {
		rule += fmt.Sprintf(" tcp dport %d", port)
	}
	return h.lab.nftLocked(h, fmt.Sprintf("add rule inet %s host %s drop\n", table, rule))
}

// Restore removes the host's faults (BlackholeSYN). Faults on its links stay
// until Link.Restore.
func (h *Host) Restore() error {
	return h.lab.nftLocked(h, fmt.Sprintf("flush chain inet %s host\n", table))
}

// nftLocked runs an nft script in h's namespace, under the lab's lock.
func (l *Lab) nftLocked(h *Host, script string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkOpen(); err != nil {
		return err
	}
	return l.run.nft(h.netns, script)
}
