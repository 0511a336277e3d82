package admin_test

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcppro/tcppro/client"
)

// chromium finds a headless-capable Chromium (Debian's chromium package).
func chromium() (string, bool) {
	for _, name := range []string{"chromium", "chromium-browser", "chromium-headless-shell", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// TestStatusPageInBrowser loads the status page in a real headless
// browser while a client is connected, lets its script run (virtual time:
// the refresh happens without waiting in real time), and checks the
// rendered DOM: the client's connection is in the table, and the script
// refreshed it from /statusz and /connz under the page's
// Content-Security-Policy.
func TestStatusPageInBrowser(t *testing.T) {
	bin, ok := chromium()
	if !ok {
		skipOrFail(t, "chromium not found (Debian package: chromium)")
	}
	e := startEnv(t, envOpts{})
	e.client(client.Config{})
	conns, total := e.srv.Conns(0, 10)
	if total != 1 {
		t.Fatalf("%d connections, want 1", total)
	}
	remote := conns[0].Remote

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-crash-reporter", "--disable-breakpad",
		"--user-data-dir="+t.TempDir(),
		"--virtual-time-budget=5000",
		"--dump-dom", e.base+"/")
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	t.Logf("chromium ran for %v", time.Since(t0).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("chromium: %v\nstderr:\n%s", err, stderr.String())
	}
	dom := string(out)
	if !strings.Contains(dom, `data-live="1"`) {
		t.Fatalf("the page's script did not refresh it (no data-live); DOM:\n%s\nstderr:\n%s", dom, stderr.String())
	}
	// The row the script rendered holds the client's address.
	row := regexp.MustCompile(`<td class="l remote">([^<]*)</td>`).FindAllStringSubmatch(dom, -1)
	if len(row) != 1 || row[0][1] != remote {
		t.Fatalf("connection rows %v, want the client's %s; DOM:\n%s", row, remote, dom)
	}
	if !strings.Contains(dom, `id="ready" class="ok">READY`) {
		t.Fatalf("readiness not shown; DOM:\n%s", dom)
	}
	if !strings.Contains(dom, `<span id="error"></span>`) {
		t.Fatalf("the page reports an error; DOM:\n%s", dom)
	}
	// The script renders a cell per heading (memory held and TLS among
	// them), as the server does.
	if heads, cells := len(regexp.MustCompile(`<th[ >]`).FindAllString(dom[strings.Index(dom, "<thead>"):], -1)), firstRowCells(t, dom); heads != len(cells) || cells[len(cells)-2] != "" {
		t.Fatalf("%d headings, row %q; DOM:\n%s", heads, cells, dom)
	}
	if !strings.Contains(dom, `<td id="s-connections_open">1</td>`) {
		t.Fatalf("the open connection count is not 1; DOM:\n%s", dom)
	}
}
