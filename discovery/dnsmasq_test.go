package discovery

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcppro/tcppro/internal/syncbuf"

	"github.com/miekg/dns"
)

// dnsmasqPath is Debian's dnsmasq (package dnsmasq-base).
const dnsmasqPath = "/usr/sbin/dnsmasq"

// requireDNSMasq skips the test when dnsmasq is not installed, unless
// TCPPRO_DNS_REQUIRE=1 (set in CI) makes that a failure.
func requireDNSMasq(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(dnsmasqPath); err != nil {
		if os.Getenv("TCPPRO_DNS_REQUIRE") == "1" {
			t.Fatalf("TCPPRO_DNS_REQUIRE=1 but dnsmasq is missing (%v): apt-get install dnsmasq-base", err)
		}
		t.Skipf("needs a real DNS server: %s is missing (apt-get install dnsmasq-base; CI sets TCPPRO_DNS_REQUIRE=1 to require it)", dnsmasqPath)
	}
}

// testDomain is the zone dnsmasq answers for: names in it that are in no
// hosts file get NXDOMAIN; names outside it get REFUSED.
const testDomain = "fleet.test"

// dnsmasq is a DNS server of the tests: dnsmasq on 127.0.0.1 and a free
// port, answering A/AAAA records from a hosts file that setHosts rewrites
// (and dnsmasq re-reads on SIGHUP), and SRV records given at start.
type dnsmasq struct {
	t     *testing.T
	dir   string
	hosts string // the hosts file
	args  []string
	port  int

	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{} // closed when the process has exited
}

// startDNSMasq starts dnsmasq with the given hosts file content and
// records with TTL ttl seconds; extra are more dnsmasq options (such as
// --srv-host=...). It is stopped at the end of the test.
func startDNSMasq(t *testing.T, hosts string, ttl int, extra ...string) *dnsmasq {
	t.Helper()
	requireDNSMasq(t)
	dir := t.TempDir()
	// dnsmasq may read the hosts file as another user when run as root.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := &dnsmasq{t: t, dir: dir, hosts: filepath.Join(dir, "hosts")}
	d.writeHosts(hosts)
	d.args = append([]string{
		"--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
		"--listen-address=127.0.0.1", "--bind-interfaces",
		"--addn-hosts=" + d.hosts, "--local=/" + testDomain + "/",
		"--local-ttl=" + strconv.Itoa(ttl),
		"--log-queries", "--log-facility=-",
	}, extra...)
	for attempt := 1; ; attempt++ {
		d.port = freePort(t)
		err := d.start()
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatalf("dnsmasq does not start: %v", err)
		}
		t.Logf("dnsmasq on port %d: %v; trying another port", d.port, err)
	}
	t.Cleanup(d.stop)
	return d
}

// freePort returns a port of 127.0.0.1 free for both UDP and TCP just now.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no port of 127.0.0.1 is free for both UDP and TCP")
	return 0
}

// addr is the host:port of the server.
func (d *dnsmasq) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port)) }

// start runs dnsmasq on d.port and waits until it answers, or exits.
func (d *dnsmasq) start() error {
	cmd := exec.Command(dnsmasqPath, append(d.args, "--port="+strconv.Itoa(d.port))...)
	log := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	d.mu.Lock()
	d.cmd, d.log, d.done = cmd, log, done
	d.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("dnsmasq exited: %s", log.String())
		default:
		}
		c := &dns.Client{Timeout: 100 * time.Millisecond}
		if _, _, err := c.Exchange(new(dns.Msg).SetQuestion("probe."+testDomain+".", dns.TypeA), d.addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			d.stop()
			return fmt.Errorf("dnsmasq does not answer within 10s: %v; log: %s", err, log.String())
		}
	}
}

// stop kills dnsmasq and waits for it to exit (it may have already).
func (d *dnsmasq) stop() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart starts dnsmasq again on the same port, after stop.
func (d *dnsmasq) restart() {
	d.t.Helper()
	if err := d.start(); err != nil {
		d.t.Fatalf("dnsmasq does not start again on port %d: %v", d.port, err)
	}
}

// writeHosts replaces the hosts file (world-readable, see startDNSMasq).
func (d *dnsmasq) writeHosts(content string) {
	d.t.Helper()
	tmp := d.hosts + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.hosts); err != nil {
		d.t.Fatal(err)
	}
}

// setHosts replaces the hosts file and makes dnsmasq read it again
// (SIGHUP), returning once it has.
func (d *dnsmasq) setHosts(content string) {
	d.t.Helper()
	d.writeHosts(content)
	d.mu.Lock()
	cmd, log := d.cmd, d.log
	d.mu.Unlock()
	reads := func() int { return strings.Count(log.String(), "read "+d.hosts+" ") }
	before := reads()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
	waitFor(d.t, 10*time.Second, "dnsmasq to re-read its hosts file", func() bool { return reads() > before })
}

// queries counts the queries of name (fully qualified, without the final
// dot) and type qtype ("A", "AAAA", "SRV") dnsmasq has received since it
// last started.
func (d *dnsmasq) queries(qtype, name string) int {
	d.mu.Lock()
	log := d.log
	d.mu.Unlock()
	return strings.Count(log.String(), "query["+qtype+"] "+name+" from ")
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		<-tick.C
	}
}

// errorsAsDNS returns err as a *DNSError, failing the test if it is not one.
func errorsAsDNS(t *testing.T, err error) *DNSError {
	t.Helper()
	var de *DNSError
	if !errors.As(err, &de) {
		t.Fatalf("Err = %v (%T), want a *DNSError", err, err)
	}
	return de
}
