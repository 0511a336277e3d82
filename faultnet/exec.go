package faultnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cmdTimeout bounds every ip and nft command the lab runs.
const cmdTimeout = 10 * time.Second

// runner runs the ip and nft programs.
type runner struct {
	ipPath  string // path of ip (iproute2)
	nftPath string // path of nft (nftables)
	log     *slog.Logger
}

// run runs a program with a timeout and returns its stdout; the error
// includes stderr.
func (r runner) run(stdin io.Reader, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	r.log.Debug("faultnet: command", "cmd", filepath.Base(path), "args", args, "took", time.Since(start), "err", err)
	if err != nil {
		return "", fmt.Errorf("faultnet: %s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (r runner) ip(stdin io.Reader, args ...string) error {
	_, err := r.run(stdin, r.ipPath, args...)
	return err
}

// nft runs an nft script inside namespace ns. The namespace is named
// explicitly (ip netns exec), so a mistake fails instead of reaching the
// root namespace's ruleset.
func (r runner) nft(ns, script string) error {
	if !strings.HasPrefix(ns, namePrefix) {
		return fmt.Errorf("faultnet: internal error: refusing nft outside a lab namespace (%q)", ns)
	}
	_, err := r.run(strings.NewReader(script), r.ipPath, "netns", "exec", ns, r.nftPath, "-f", "-")
	return err
}

// deleteNetns deletes a named namespace; one already gone is not an error.
func (r runner) deleteNetns(ns string) error {
	err := r.ip(nil, "netns", "del", ns)
	if err != nil {
		if _, serr := os.Lstat(filepath.Join(netnsDir, ns)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// removeNetns kills every process inside namespace ns, then deletes it.
func (r runner) removeNetns(ns string) error {
	if !strings.HasPrefix(ns, namePrefix) {
		return fmt.Errorf("faultnet: internal error: refusing to remove %q", ns)
	}
	// ip netns pids fails for a namespace whose mount is broken; deleting it
	// is all there is to do then.
	if out, err := r.run(nil, r.ipPath, "netns", "pids", ns); err == nil {
		self := os.Getpid()
		for f := range strings.FieldsSeq(out) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 || pid == self {
				continue
			}
			// The process may exit by itself meanwhile: ESRCH is fine.
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	return r.deleteNetns(ns)
}

// openNetns opens a named namespace for setns.
func openNetns(ns string) (int, error) {
	fd, err := unix.Open(filepath.Join(netnsDir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("faultnet: opening namespace %s: %w", ns, err)
	}
	return fd, nil
}
