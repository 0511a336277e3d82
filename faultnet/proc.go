package faultnet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// stateTimeout bounds how long Freeze, Thaw and Kill wait for the process
// to reach the new state.
const stateTimeout = 2 * time.Second

// Freeze stops process pid with SIGSTOP and returns once the kernel shows it
// stopped (state T in /proc/PID/stat). A frozen process keeps its sockets:
// the kernel still ACKs what peers send it, but nothing answers. The pid
// must not be 0, 1, negative or this process.
func Freeze(pid int) error {
	return signalAndWait(pid, unix.SIGSTOP, "stopped", func(s byte) bool { return s == 'T' || s == 't' })
}

// Thaw resumes a frozen process with SIGCONT and returns once it is no
// longer stopped.
func Thaw(pid int) error {
	return signalAndWait(pid, unix.SIGCONT, "running", func(s byte) bool { return s != 'T' && s != 't' })
}

// Kill kills process pid with SIGKILL (frozen or not) and returns once it
// has exited (a zombie until its parent waits for it, as an exec.Cmd's
// Wait does).
func Kill(pid int) error {
	return signalAndWait(pid, unix.SIGKILL, "dead", func(s byte) bool { return s == 'Z' || s == 'X' })
}

var errGone = errors.New("process is gone")

func signalAndWait(pid int, sig unix.Signal, want string, ok func(state byte) bool) error {
	if err := checkTarget(pid); err != nil {
		return err
	}
	if err := unix.Kill(pid, sig); err != nil {
		return fmt.Errorf("faultnet: %v to pid %d: %w", sig, pid, err)
	}
	deadline := time.Now().Add(stateTimeout)
	pause := 50 * time.Microsecond
	for {
		state, _, err := procStat(pid)
		switch {
		case errors.Is(err, errGone):
			if sig == unix.SIGKILL {
				return nil
			}
			return fmt.Errorf("faultnet: pid %d: %w", pid, err)
		case err != nil:
			return err
		case ok(state):
			return nil
		case state == 'Z' || state == 'X':
			return fmt.Errorf("faultnet: pid %d exited before it was %s", pid, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("faultnet: pid %d not %s after %v (state %c)", pid, want, stateTimeout, state)
		}
		// No notification exists for another process's state change:
		// poll, briefly, with a bounded backoff.
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// checkTarget refuses pids that would signal more than one process (0 and
// negative ones signal groups), init, or this process itself.
func checkTarget(pid int) error {
	if pid <= 1 {
		return fmt.Errorf("faultnet: refusing to signal pid %d", pid)
	}
	self := os.Getpid()
	if pid == self {
		return errors.New("faultnet: refusing to signal this process")
	}
	// A thread id of this process would signal the whole process.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return fmt.Errorf("faultnet: pid %d: %w", pid, errGone)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if tgid, _ := strconv.Atoi(strings.TrimSpace(v)); tgid == self {
				return errors.New("faultnet: refusing to signal this process")
			}
			break
		}
	}
	return nil
}

// procStat returns the state letter and start time (clock ticks since boot)
// of process pid from /proc/PID/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return 0, 0, errGone
		}
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain
	// anything: fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("faultnet: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("faultnet: malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("faultnet: malformed /proc/%d/stat: %w", pid, err)
	}
	return f[0][0], start, nil
}
