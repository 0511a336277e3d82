package doctor

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcppro/tcppro/sysinfo"
)

// tree builds a fixture root in a temporary directory: testdata/base, then
// each overlay directory on top (its files replace the base's), then the
// overrides (path → content, or absent to remove the file).
func tree(t *testing.T, overrides map[string]string, overlays ...string) sysinfo.FS {
	t.Helper()
	root := t.TempDir()
	for _, dir := range append([]string{"base"}, overlays...) {
		src := filepath.Join("testdata", dir)
		err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, path)
			dst := filepath.Join(root, rel)
			switch {
			case d.IsDir():
				return os.MkdirAll(dst, 0o755)
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(path)
				if err != nil {
					return err
				}
				os.Remove(dst)
				return os.Symlink(target, dst)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			os.Remove(dst)
			return os.WriteFile(dst, b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for rel, content := range overrides {
		dst := filepath.Join(root, rel)
		if content == absent {
			if err := os.Remove(dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sysinfo.FS{Root: root}
}

// absent as an override removes the file.
const absent = "\x00absent"

func sysctl(name string) string { return "proc/sys/" + strings.ReplaceAll(name, ".", "/") }

func limits(soft, hard string) string {
	return "Limit                     Soft Limit           Hard Limit           Units\n" +
		"Max open files            " + soft + "                 " + hard + "              files\n"
}

type checkCase struct {
	name      string
	overlays  []string
	overrides map[string]string
	opts      Options
	id        string
	status    Status
	found     []string // substrings of Found
	fix       []string // substrings of Fix
}

func runCases(t *testing.T, cases []checkCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.FS = tree(t, c.overrides, c.overlays...)
			r := Run(opts)
			got, ok := r.Find(c.id)
			if !ok {
				t.Fatalf("no check %q in %+v", c.id, r.Checks)
			}
			if got.Status != c.status {
				t.Errorf("status = %s, want %s\nfound: %s", got.Status, c.status, got.Found)
			}
			for _, s := range c.found {
				if !strings.Contains(got.Found, s) {
					t.Errorf("found %q lacks %q", got.Found, s)
				}
			}
			for _, s := range c.fix {
				if !strings.Contains(got.Fix, s) {
					t.Errorf("fix %q lacks %q", got.Fix, s)
				}
			}
			if got.Why == "" {
				t.Error("empty why")
			}
			if (got.Status == OK) != (got.Fix == "") {
				t.Errorf("status %s with fix %q", got.Status, got.Fix)
			}
		})
	}
}

func TestBaseIsAllOK(t *testing.T) {
	r := Run(Options{FS: tree(t, nil)})
	for _, c := range r.Checks {
		if c.Status != OK {
			t.Errorf("%s: %s: %s", c.ID, c.Status, c.Found)
		}
	}
	if r.ExitCode() != 0 || r.Summary.OK != len(r.Checks) || r.Summary.Status != OK {
		t.Errorf("summary %+v, exit %d", r.Summary, r.ExitCode())
	}
}

func TestPorts(t *testing.T) {
	runCases(t, []checkCase{
		{name: "no listener in range", id: "ephemeral-listeners", status: OK, found: []string{"32768-60999", "2 listeners"}},
		{name: "listener in range", overlays: []string{"ephemeral"}, id: "ephemeral-listeners", status: Warn,
			found: []string{"port 40000 by rogue (pid 200)"},
			fix:   []string{"sysctl -w net.ipv4.ip_local_reserved_ports=40000 ", "below 32768"}},
		{name: "listener in range but reserved", overlays: []string{"ephemeral"},
			overrides: map[string]string{sysctl(sysinfo.SysctlReservedPorts): "39000-40000,50000\n"},
			id:        "ephemeral-listeners", status: OK},
		{name: "reserving keeps existing reservations", overlays: []string{"ephemeral"},
			overrides: map[string]string{sysctl(sysinfo.SysctlReservedPorts): "8000-8010,40001\n"},
			id:        "ephemeral-listeners", status: Warn, fix: []string{"ip_local_reserved_ports=8000-8010,40000-40001 "}},
		{name: "planned port free", opts: Options{Ports: []int{9090}}, id: "planned-port-9090", status: OK, found: []string{"outside", "free"}},
		{name: "planned port in range", opts: Options{Ports: []int{45000}}, id: "planned-port-45000", status: Fail,
			found: []string{"inside the ephemeral range 32768-60999 and not reserved"}, fix: []string{"below 32768", "ip_local_reserved_ports=45000 "}},
		{name: "planned port reserved", opts: Options{Ports: []int{45000}},
			overrides: map[string]string{sysctl(sysinfo.SysctlReservedPorts): "45000\n"},
			id:        "planned-port-45000", status: OK, found: []string{"reserved"}},
		{name: "planned port in use", opts: Options{Ports: []int{8080}}, id: "planned-port-8080", status: Warn,
			found: []string{"already in use by tcppro (pid 100)"}, fix: []string{"stop tcppro (pid 100)"}},
		{name: "planned port invalid", opts: Options{Ports: []int{70000}}, id: "planned-port-70000", status: Fail},
	})
}

func TestSysctlChecks(t *testing.T) {
	ts, reuse := sysctl(sysinfo.SysctlTimestamps), sysctl(sysinfo.SysctlTWReuse)
	syn, lin := sysctl(sysinfo.SysctlSynRetries), sysctl(sysinfo.SysctlSynLinearTimeouts)
	runCases(t, []checkCase{
		{name: "timestamps on", id: "tcp-timestamps", status: OK, found: []string{"tcp_timestamps=1"}},
		{name: "timestamps off", overrides: map[string]string{ts: "0\n"}, id: "tcp-timestamps", status: Warn,
			fix: []string{"sysctl -w net.ipv4.tcp_timestamps=1"}},
		{name: "timestamps off with tw_reuse=1", overrides: map[string]string{ts: "0\n", reuse: "1\n"}, id: "tcp-timestamps", status: Fail,
			found: []string{"silently disabled"}},

		{name: "syn_retries 3", id: "syn-retries", status: OK, found: []string{"gives up after 19 s"}},
		{name: "syn_retries 6 with linear timeouts", overrides: map[string]string{syn: "6\n"}, id: "syn-retries", status: Warn,
			found: []string{"tcp_syn_retries=6, tcp_syn_linear_timeouts=4", "131 s"}, fix: []string{"tcp_syn_retries=3", "19 s"}},
		{name: "syn_retries 6 before Linux 6.5", overrides: map[string]string{syn: "6\n", lin: absent}, id: "syn-retries", status: Warn,
			found: []string{"tcp_syn_retries=6:", "127 s"}, fix: []string{"15 s"}},
		{name: "syn_retries 8", overrides: map[string]string{syn: "8\n", lin: "0\n"}, id: "syn-retries", status: Fail, found: []string{"367 s"}},

		{name: "synack 5", id: "synack-retries", status: OK, found: []string{"63 s"}},
		{name: "synack 7", overrides: map[string]string{sysctl(sysinfo.SysctlSynackRetries): "7\n"}, id: "synack-retries", status: Warn, found: []string{"247 s"}},
		{name: "synack 9", overrides: map[string]string{sysctl(sysinfo.SysctlSynackRetries): "9\n"}, id: "synack-retries", status: Fail, found: []string{"487 s"}},

		{name: "retries2 8", id: "retries2", status: OK, found: []string{"102.2 s"}},
		{name: "retries2 15", overrides: map[string]string{sysctl(sysinfo.SysctlRetries2): "15\n"}, id: "retries2", status: Warn,
			found: []string{"924.6 s"}, fix: []string{"tcp_retries2=8", "102.2 s"}},
		{name: "retries2 20", overrides: map[string]string{sysctl(sysinfo.SysctlRetries2): "20\n"}, id: "retries2", status: Fail, found: []string{"1524.6 s"}},
		{name: "retries2 with tcp_rto_max_ms", overrides: map[string]string{sysctl(sysinfo.SysctlRetries2): "15\n", sysctl("net.ipv4.tcp_rto_max_ms"): "60000\n"},
			id: "retries2", status: Warn, found: []string{"522.2 s"}},

		{name: "keepalive 120 s", id: "keepalive", status: OK, found: []string{"60 + 10×6 = 120 s"}},
		{name: "keepalive defaults", overrides: map[string]string{
			sysctl(sysinfo.SysctlKeepaliveTime): "7200\n", sysctl(sysinfo.SysctlKeepaliveIntvl): "75\n", sysctl(sysinfo.SysctlKeepaliveProbes): "9\n"},
			id: "keepalive", status: Warn, found: []string{"7875 s"}, fix: []string{"tcp_keepalive_time=60"}},
		{name: "keepalive beyond defaults", overrides: map[string]string{sysctl(sysinfo.SysctlKeepaliveTime): "10800\n"},
			id: "keepalive", status: Fail, found: []string{"10860 s"}},
	})
}

func TestQueueChecks(t *testing.T) {
	runCases(t, []checkCase{
		{name: "no overflows", id: "listen-overflows", status: OK, found: []string{"ListenOverflows=0", "26.1 h ago"}},
		{name: "overflows", overlays: []string{"overflows"}, id: "listen-overflows", status: Warn, found: []string{"ListenOverflows=37"}},

		{name: "somaxconn fine", id: "somaxconn", status: OK, found: []string{"somaxconn=4096", "2 listeners"}},
		{name: "somaxconn low", overrides: map[string]string{sysctl(sysinfo.SysctlSomaxconn): "512\n"}, id: "somaxconn", status: Warn,
			fix: []string{"net.core.somaxconn=4096"}},
		{name: "somaxconn below a running listener", overrides: map[string]string{"sock_diag/tcp_listen": "5001 8192\n5003 4096\n"},
			id: "somaxconn", status: Warn, found: []string{"0.0.0.0:8080 backlog 8192 by tcppro (pid 100)"}, fix: []string{"somaxconn=8192"}},
		{name: "somaxconn below planned backlog", opts: Options{Backlog: 16384}, id: "somaxconn", status: Fail,
			found: []string{"planned backlog 16384"}, fix: []string{"somaxconn=16384"}},

		{name: "accept queues empty", id: "accept-queue", status: OK},
		{name: "accept queue 80%", overlays: []string{"acceptq"}, id: "accept-queue", status: Warn, found: []string{"0.0.0.0:8080 4/5 queued by tcppro (pid 100)"}},
		{name: "accept queue full", overlays: []string{"acceptq"}, overrides: map[string]string{"sock_diag/tcp_listen": "5001 3\n5003 4096\n"},
			id: "accept-queue", status: Fail, found: []string{"4/3"}, fix: []string{"restart process tcppro (pid 100)"}},
	})
}

func TestConnectionChecks(t *testing.T) {
	runCases(t, []checkCase{
		{name: "no close-wait", id: "close-wait", status: OK},
		{name: "close-wait few", overlays: []string{"closewait"}, id: "close-wait", status: Warn,
			found: []string{"3 sockets in CLOSE_WAIT", "leaky (pid 300) holds 2", "1 with no owning process (not yet accepted)"},
			fix:   []string{"restart process leaky (pid 300)"}},
		{name: "close-wait many", overlays: []string{"closewait-many"}, id: "close-wait", status: Fail,
			found: []string{"leaky (pid 300) holds 10"}, fix: []string{"restart process leaky (pid 300)"}},

		{name: "time-wait low", id: "time-wait", status: OK, found: []string{"1 socket in TIME_WAIT"}},
		{name: "time-wait 30%", overlays: []string{"timewait"}, id: "time-wait", status: Warn,
			found: []string{"10.0.0.5:5432 holds 3 of 10 usable ports (30%)"}},
		{name: "time-wait 80%", overlays: []string{"timewait", "timewait-many"}, id: "time-wait", status: Fail,
			found: []string{"holds 8 of 10"}, fix: []string{"tcp_tw_reuse=1"}},
		{name: "time-wait 80% where tw_reuse applies", overlays: []string{"timewait", "timewait-loopback"}, id: "time-wait", status: Warn,
			found: []string{"127.0.0.1:5432 holds 8 of 10", "tcp_tw_reuse lets"}},
		{name: "time-wait reserved ports shrink the range", overlays: []string{"timewait"},
			overrides: map[string]string{sysctl(sysinfo.SysctlReservedPorts): "40005-40009\n"},
			id:        "time-wait", status: Warn, found: []string{"3 of 5 usable ports (60%)"}},

		{name: "open files fine", id: "open-files", status: OK, found: []string{"2 processes checked"}},
		{name: "open files 90%", overlays: []string{"openfiles"}, id: "open-files", status: Warn,
			found: []string{"hog (pid 400) uses 9 of 10 (90%)"}, fix: []string{"prlimit --pid 400 --nofile=40:40"}},
		{name: "open files 100%", overlays: []string{"openfiles"}, overrides: map[string]string{"proc/400/limits": limits("9", "100")},
			id: "open-files", status: Fail, found: []string{"9 of 9 (100%)"}, fix: []string{"--nofile=100:100"}},
		{name: "open files unlimited hard", overlays: []string{"openfiles"}, overrides: map[string]string{"proc/400/limits": limits("10", "unlimited")},
			id: "open-files", status: Warn, fix: []string{"--nofile=40:unlimited"}},
		{name: "open files unlimited", overlays: []string{"openfiles"}, overrides: map[string]string{"proc/400/limits": limits("unlimited", "unlimited")},
			id: "open-files", status: OK},
	})
}

// TestMissing runs every check against a root with nothing in it: each
// must say what it could not read, none may panic.
func TestMissing(t *testing.T) {
	r := Run(Options{FS: sysinfo.FS{Root: t.TempDir()}, Ports: []int{9090}})
	if len(r.Checks) != 13 {
		t.Errorf("%d checks", len(r.Checks))
	}
	for _, c := range r.Checks {
		if c.Status != Warn {
			t.Errorf("%s: status %s, want warn", c.ID, c.Status)
		}
		if !strings.Contains(c.Found, "cannot check") || !strings.Contains(c.Found, "no such file") {
			t.Errorf("%s: found %q", c.ID, c.Found)
		}
		if c.Fix == "" || c.Why == "" {
			t.Errorf("%s: empty why or fix", c.ID)
		}
	}
	if r.ExitCode() != 1 {
		t.Errorf("exit %d", r.ExitCode())
	}
}

// TestMalformed runs every check against garbage files: each must name the
// file it could not parse.
func TestMalformed(t *testing.T) {
	f := tree(t, nil, "malformed")
	r := Run(Options{FS: f, Ports: []int{9090}})
	want := map[string]string{
		"ephemeral-listeners": "proc/net/tcp",
		"planned-port-9090":   "ip_local_port_range",
		"tcp-timestamps":      "tcp_timestamps",
		"syn-retries":         "tcp_syn_retries",
		"synack-retries":      "tcp_synack_retries",
		"retries2":            "tcp_retries2",
		"keepalive":           "tcp_keepalive_time",
		"listen-overflows":    "proc/net/netstat",
		"somaxconn":           "somaxconn",
		"accept-queue":        "proc/net/tcp",
		"close-wait":          "proc/net/tcp",
		"time-wait":           "proc/net/tcp",
	}
	for _, c := range r.Checks {
		w, ok := want[c.ID]
		if !ok {
			continue
		}
		if c.Status != Warn || !strings.Contains(c.Found, w) || !strings.Contains(c.Found, "malformed") {
			t.Errorf("%s: %s %q, want a warn naming %s", c.ID, c.Status, c.Found, w)
		}
	}
	// A process with a garbage limits file is skipped, not fatal.
	if c, _ := r.Find("open-files"); c.Status != OK {
		t.Errorf("open-files: %+v", c)
	}
}

func TestJSON(t *testing.T) {
	r := Run(Options{FS: tree(t, map[string]string{sysctl(sysinfo.SysctlRetries2): "15\n"}), Ports: []int{45000}})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Checks  []map[string]string `json:"checks"`
		Summary struct {
			Total, OK, Warn, Fail int
			Status                string
		} `json:"summary"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Checks) != 13 || got.Summary.Total != 13 || got.Summary.Warn != 1 || got.Summary.Fail != 1 || got.Summary.Status != "fail" {
		t.Errorf("summary %+v", got.Summary)
	}
	for _, c := range got.Checks {
		for _, k := range []string{"id", "status", "found", "why", "fix"} {
			if _, ok := c[k]; !ok {
				t.Errorf("check %v lacks %q", c, k)
			}
		}
	}
	if r.ExitCode() != 2 {
		t.Errorf("exit %d", r.ExitCode())
	}
}

func TestWriteText(t *testing.T) {
	r := newReport([]Check{
		{ID: "a", Status: OK, Found: "fine", Why: "because"},
		{ID: "longer-id", Status: Warn, Found: "meh\nsplit", Why: "reasons", Fix: "do this"},
	})
	var buf bytes.Buffer
	if err := r.WriteText(&buf, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"STATUS  CHECK      FOUND\n" +
		"ok      a          fine\n" +
		"warn    longer-id  meh split\n" +
		"                   why: reasons\n" +
		"                   fix: do this\n" +
		"\n" +
		"2 checks: 1 ok, 1 warn, 0 fail\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	r.WriteText(&buf, TextOptions{Colour: true, Verbose: true})
	if !strings.Contains(buf.String(), "\x1b[33mwarn  \x1b[0m  longer-id") || !strings.Contains(buf.String(), "why: because") {
		t.Errorf("colour/verbose output:\n%q", buf.String())
	}
}
