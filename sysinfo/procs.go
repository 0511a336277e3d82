package sysinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Unlimited is the Limit value for "unlimited".
const Unlimited int64 = -1

// Limit is a resource limit pair; either value may be Unlimited.
type Limit struct{ Soft, Hard int64 }

// Process is one process found under proc/, with the sockets it holds.
type Process struct {
	PID  int
	Comm string // proc/PID/comm: the command name, at most 15 bytes
	// Sockets are the inodes of the sockets its file descriptors refer to
	// ("socket:[INODE]"), of any protocol; match them with Socket.Inode.
	Sockets []uint64
	// OpenFiles is its number of open file descriptors; -1 when they could
	// not be listed (see Err).
	OpenFiles int
	// MaxOpenFiles is its RLIMIT_NOFILE ("Max open files" in
	// proc/PID/limits); zero when it could not be read.
	MaxOpenFiles Limit
	// Err says why some of the above is unknown (typically permission:
	// only root sees every process's descriptors). Nil when all was read.
	Err error
}

// Processes lists every process under proc/ with its sockets and open-file
// count and limit. Processes that exit during the scan are left out;
// processes whose details cannot be read (permission) are included with
// Err set. The error is non-nil only when proc/ itself cannot be listed.
// The result is sorted by PID.
func (f FS) Processes() ([]Process, error) {
	ents, err := os.ReadDir(f.Path("proc"))
	if err != nil {
		return nil, err
	}
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || !e.IsDir() {
			continue
		}
		p, ok := f.readProcess(pid)
		if ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// Process reads one process. The error satisfies errors.Is(err,
// fs.ErrNotExist) when there is no such process.
func (f FS) Process(pid int) (Process, error) {
	p, ok := f.readProcess(pid)
	if !ok {
		return Process{}, fmt.Errorf("%s: %w", f.Path("proc/"+strconv.Itoa(pid)), fs.ErrNotExist)
	}
	return p, nil
}

// gone reports errors meaning the process exited while we looked.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// readProcess returns ok=false when the process has vanished.
func (f FS) readProcess(pid int) (Process, bool) {
	dir := "proc/" + strconv.Itoa(pid)
	p := Process{PID: pid, OpenFiles: -1}
	comm, err := f.readFile(dir + "/comm")
	switch {
	case err == nil:
		p.Comm = strings.TrimSuffix(string(comm), "\n")
	case gone(err):
		return p, false
	default:
		p.Err = err
	}

	n, socks, err := readFDs(f.Path(dir + "/fd"))
	switch {
	case err == nil:
		p.OpenFiles, p.Sockets = n, socks
	case gone(err):
		// A zombie or kernel thread has no fd directory, and a process that
		// just exited looks the same: tell them apart by comm.
		if p.Comm == "" {
			return p, false
		}
		p.OpenFiles = 0
	default:
		if p.Err == nil {
			p.Err = err
		}
	}

	lim, err := f.readNoFile(dir + "/limits")
	switch {
	case err == nil:
		p.MaxOpenFiles = lim
	case gone(err) && p.Comm == "":
		return p, false
	default:
		if p.Err == nil && !gone(err) {
			p.Err = err
		}
	}
	return p, true
}

// readFDs lists a proc/PID/fd directory and returns the number of
// descriptors and the inodes of the sockets among them, each once (dup(2)ed
// descriptors name the same socket). Links are read relative to the open
// directory, which saves a path walk per descriptor on processes with
// thousands.
func readFDs(dir string) (int, []uint64, error) {
	d, err := os.Open(dir)
	if err != nil {
		return 0, nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, nil, err
	}
	dfd := int(d.Fd())
	buf := make([]byte, 128)
	var socks []uint64
	for _, name := range names {
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := socketInode(string(buf[:n])); ok {
			socks = append(socks, ino)
		}
	}
	slices.Sort(socks)
	return len(names), slices.Compact(socks), nil
}

// socketInode parses an fd link target "socket:[12345]".
func socketInode(target string) (uint64, bool) {
	rest, ok := strings.CutPrefix(target, "socket:[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest[:len(rest)-1], 10, 64)
	return ino, err == nil
}

// readNoFile parses the "Max open files" row of proc/PID/limits:
//
//	Limit                     Soft Limit           Hard Limit           Units
//	Max open files            1024                 1048576              files
func (f FS) readNoFile(rel string) (Limit, error) {
	b, err := f.readFile(rel)
	if err != nil {
		return Limit{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fld := strings.Fields(rest)
		if len(fld) < 2 {
			return Limit{}, f.malformed(rel, sc.Text(), "want soft and hard limits")
		}
		soft, err1 := parseLimit(fld[0])
		hard, err2 := parseLimit(fld[1])
		if err1 != nil || err2 != nil {
			return Limit{}, f.malformed(rel, sc.Text(), "limits are neither numbers nor \"unlimited\"")
		}
		return Limit{Soft: soft, Hard: hard}, nil
	}
	return Limit{}, f.malformed(rel, "", "no \"Max open files\" row")
}

func parseLimit(s string) (int64, error) {
	if s == "unlimited" {
		return Unlimited, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64 {
		return Unlimited, nil
	}
	return int64(v), nil
}

// SocketOwners maps each socket inode to the indices (into procs) of the
// processes holding it; a socket inherited over fork has several.
func SocketOwners(procs []Process) map[uint64][]int {
	out := map[uint64][]int{}
	for i, p := range procs {
		for _, ino := range p.Sockets {
			out[ino] = append(out[ino], i)
		}
	}
	return out
}
